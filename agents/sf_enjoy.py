"""``python -m agents.sf_enjoy``: evaluate or record a sample-factory run (:mod:`agents.integrations.sf_enjoy`)."""

import sys

from agents import imports_without_gc

with imports_without_gc(freeze=__name__ == "__main__"):
    from agents.integrations.sf_enjoy import main

if __name__ == "__main__":
    sys.exit(main())
