"""Recurrent PPO: the trainer (``python -m agents.train``) and its parts.

``trainer`` (the run: rollouts on the device, updates, checkpoints, TensorBoard),
``learner`` (``PPOConfig`` and the clipped-surrogate update over whole sequences),
``rollout`` ([T, B] storage, GAE), ``return_norm`` (the value head's targets on a unit
scale), ``policy`` (encoder -> memory core -> heads),
``curriculum``, ``next_obs`` (an auxiliary loss), ``lr_schedule``, ``distributed``
(torchrun data parallelism).
"""
