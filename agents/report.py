"""``python -m agents.report``: statistics and figures over a sweep (:mod:`agents.common.report`)."""

import sys

from agents import imports_without_gc

with imports_without_gc(freeze=__name__ == "__main__"):
    from agents.common.report import main

if __name__ == "__main__":
    sys.exit(main())
