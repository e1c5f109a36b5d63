"""``python -m agents.train_dt``: decision-transformer training on a dataset (:mod:`agents.dt.trainer`)."""

from agents import imports_without_gc

with imports_without_gc(freeze=__name__ == "__main__"):
    from agents.dt.trainer import main

if __name__ == "__main__":
    main()
