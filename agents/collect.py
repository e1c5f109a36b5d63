"""``python -m agents.collect``: a Minari dataset of episodes (:mod:`agents.dt.collect`)."""

import sys

from agents import imports_without_gc

with imports_without_gc(freeze=__name__ == "__main__"):
    from agents.dt.collect import main

if __name__ == "__main__":
    sys.exit(main())
