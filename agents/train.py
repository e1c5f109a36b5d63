"""``python -m agents.train``: recurrent PPO training (:mod:`agents.ppo.trainer`)."""

from agents import imports_without_gc

with imports_without_gc(freeze=__name__ == "__main__"):
    from agents.ppo.trainer import main

if __name__ == "__main__":
    main()
