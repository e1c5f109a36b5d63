"""``python -m agents.evaluate``: greedy and sampled success of a checkpoint (:mod:`agents.evaluation.evaluate`)."""

import sys

from agents.evaluation.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
