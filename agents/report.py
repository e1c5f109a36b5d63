"""``python -m agents.report``: statistics and figures over a sweep (:mod:`agents.common.report`)."""

import sys

from agents.common.report import main

if __name__ == "__main__":
    sys.exit(main())
