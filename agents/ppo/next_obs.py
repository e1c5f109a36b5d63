"""Next-observation prediction: a self-supervised loss on the memory core's output.

A linear head reads the core's output at step t and predicts every symbol of the
observation at step t + 1 (a categorical per position of a ``MultiDiscrete`` or
``Discrete`` observation). Its cross-entropy, weighted by ``algo.next_obs_coef``,
joins the PPO loss. Predicting what comes next in a sequence (a dance's next hop)
needs a representation of the sequence so far, which the reward alone trains only
slowly when it is sparse; the HCAM agent trains its memory with self-supervised
losses beside the RL ones for the same reason (Lampinen et al. 2021).

Steps whose successor starts a new episode have no target and are left out. The
loss reads a random ``fraction`` of the steps (``algo.next_obs_fraction``): on a
large observation (Ballet: 122 symbols of up to 67 values) predicting every step
would cost more than the rest of the update.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class NextObsHead(nn.Module):
    """Logits ``[N, K, V]`` for the K symbols of the next observation (V = the largest range)."""

    def __init__(self, observation_space: gym.Space, in_size: int):
        super().__init__()
        if isinstance(observation_space, gym.spaces.MultiDiscrete) and observation_space.nvec.ndim == 1:
            nvec = np.asarray(observation_space.nvec, dtype=np.int64)
            start = np.asarray(getattr(observation_space, "start", np.zeros_like(nvec)), dtype=np.int64)
        elif isinstance(observation_space, gym.spaces.Discrete):
            nvec = np.array([observation_space.n], dtype=np.int64)
            start = np.array([observation_space.start], dtype=np.int64)
        else:
            raise ValueError(
                f"next-observation prediction (algo.next_obs_coef > 0) reads Discrete or flat "
                f"MultiDiscrete observations; this env's is {observation_space}"
            )
        self.num_symbols, self.num_values = len(nvec), int(nvec.max())
        self.linear = nn.Linear(in_size, self.num_symbols * self.num_values)
        values = torch.arange(self.num_values)
        self.register_buffer("invalid", values >= torch.as_tensor(nvec).unsqueeze(-1), persistent=False)
        self.register_buffer("start", torch.as_tensor(start), persistent=False)
        self.fraction = 1.0  # of the steps the loss reads (the trainer sets it)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        logits = self.linear(y).view(*y.shape[:-1], self.num_symbols, self.num_values)
        return logits.masked_fill(self.invalid, float("-inf"))

    def loss(self, y: torch.Tensor, obs: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy (per symbol) of predicting ``obs[t + 1]`` from ``y[t]``.

        ``y`` ``[T, B, H]``, ``obs`` ``[T, B, K]`` (or ``[T, B]`` for Discrete), ``starts`` ``[T, B]``.
        """
        target = (obs[1:].reshape(*starts[1:].shape, -1).long() - self.start).clamp(min=0)
        y, target = y[:-1].reshape(-1, y.shape[-1]), target.reshape(-1, target.shape[-1])
        keep = (~starts[1:]).reshape(-1)
        n = y.shape[0]
        if self.fraction < 1.0:  # a fixed number of random steps: no host sync
            idx = torch.randint(n, (max(1, int(n * self.fraction)),), device=y.device)
            y, target, keep = y[idx], target[idx], keep[idx]
        logp = F.log_softmax(self(y).float(), dim=-1)  # float32 under autocast too (algo.precision)
        nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1).mean(-1)
        keep = keep.to(nll.dtype)
        return (nll * keep).sum() / keep.sum().clamp(min=1.0)
