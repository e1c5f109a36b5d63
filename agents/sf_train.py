"""``python -m agents.sf_train``: sample-factory APPO with a recall-rl core (:mod:`agents.integrations.sf_train`)."""

import sys

from agents import imports_without_gc

with imports_without_gc(freeze=__name__ == "__main__"):
    from agents.integrations.sf_train import main

if __name__ == "__main__":
    sys.exit(main())
