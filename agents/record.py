"""``python -m agents.record``: an MP4 of a checkpoint's episodes (:mod:`agents.evaluation.record`)."""

import sys

from agents import imports_without_gc

with imports_without_gc(freeze=__name__ == "__main__"):
    from agents.evaluation.record import main

if __name__ == "__main__":
    sys.exit(main())
