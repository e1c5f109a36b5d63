"""``python -m agents.train``: recurrent PPO training (:mod:`agents.ppo.trainer`)."""

from agents.ppo.trainer import main

if __name__ == "__main__":
    main()
