"""``python -m agents.train_dt``: decision-transformer training on a dataset (:mod:`agents.dt.trainer`)."""

from agents.dt.trainer import main

if __name__ == "__main__":
    main()
