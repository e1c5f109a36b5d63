"""``python -m agents.collect``: a Minari dataset of episodes (:mod:`agents.dt.collect`)."""

import sys

from agents.dt.collect import main

if __name__ == "__main__":
    sys.exit(main())
