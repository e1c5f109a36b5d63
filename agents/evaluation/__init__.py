"""What a user sees of a trained agent: evaluation figures and videos.

``evaluate`` (greedy and sampled success of a PPO or DT checkpoint;
``python -m agents.evaluate``), ``episode_tally``, ``record`` (``python -m
agents.record``), ``video`` (frames, MP4s), ``memory_strip`` (where the core read), ``snapshots``
(each update's weights, evaluated at the next evaluation during training).
"""
