"""``python -m agents.evaluate``: greedy and sampled success of a checkpoint (:mod:`agents.evaluation.evaluate`)."""

import sys

from agents import imports_without_gc

with imports_without_gc(freeze=__name__ == "__main__"):
    from agents.evaluation.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
