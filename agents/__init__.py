"""Everything that trains, evaluates and shows an agent, by concern (docs/layout.md).

``ppo/`` (recurrent PPO: trainer, learner, rollout, policy), ``dt/`` (the decision
transformer with working memory and its datasets), ``integrations/`` (sample-factory
and Stable-Baselines3), ``evaluation/`` (evaluation figures, videos), ``common/`` (run
tools both trainers reach: config, checkpoints, CLI, signals, reports). The commands
keep their names: ``python -m agents.train`` / ``train_dt`` / ``evaluate`` / ``record``
/ ``collect`` / ``report`` / ``sf_train`` / ``sf_enjoy`` are the small modules here.
"""

# gymnasium loads ``envs`` as a plugin while it imports; importing it first keeps
# ``import agents.<anything>`` working whatever the caller imported before.
import gymnasium  # noqa: F401
