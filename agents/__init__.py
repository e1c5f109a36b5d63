"""Recurrent PPO on device-resident batched rollouts: policy, rollout, PPO, scripts.

Modules: ``encoders`` (observation encoders by space), ``policy`` (encoder ->
memory core -> heads), ``rollout`` ([T, B] storage, GAE), ``ppo`` (the update),
``train`` / ``evaluate`` / ``record`` (the scripts), ``checkpoint``, ``video``.
"""

# gymnasium loads ``envs`` as a plugin while it imports; importing it first keeps
# ``import agents.<anything>`` working whatever the caller imported before.
import gymnasium  # noqa: F401
