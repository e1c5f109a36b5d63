"""Other frameworks on recall-rl's envs and cores.

``sample_factory`` (env and model registration: a memory core as sample-factory's
RNN), ``sf_train`` / ``sf_enjoy`` (``python -m agents.sf_train`` / ``agents.sf_enjoy``),
``sb3`` (the batched simulators as a Stable-Baselines3 ``VecEnv``).
"""
