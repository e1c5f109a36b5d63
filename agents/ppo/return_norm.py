"""The value head's targets on a unit scale (``algo.normalize_returns``).

A task's per-step reward can be tiny: POPGym's Autoencode and RepeatPrevious pay
+-1/N a step, so the returns a value head must fit are a few hundredths and its
loss, next to the normalised policy gradient, hardly moves the shared core. With
this on, the head predicts ``(return - mean) / std`` under running statistics of
every return it was trained on (sample-factory's ``normalize_returns``); the
rollout turns its values back to the task's scale for GAE, then the targets and
the stored values are put on the scale of the statistics that include this
rollout. Advantages are computed on the task's scale, as without it. The value
loss and explained variance that TensorBoard shows are then in the normalised units.
"""

from __future__ import annotations

import torch
from torch import nn

from agents.common.encoders import RunningNorm
from agents.ppo.rollout import Rollout


class ReturnNorm(nn.Module):
    """Running mean and variance of the returns (a buffer each: checkpoints carry them)."""

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.stats = RunningNorm(1, eps=eps)

    def _scale(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.stats.mean, (self.stats.var + self.stats.eps).sqrt()

    def denormalize(self, value: torch.Tensor) -> torch.Tensor:
        mean, std = self._scale()
        return value * std + mean

    def normalize(self, value: torch.Tensor) -> torch.Tensor:
        mean, std = self._scale()
        return (value - mean) / std

    @torch.no_grad()
    def returns(self, rollout: Rollout, last_value: torch.Tensor, gamma: float, gae_lambda: float) -> None:
        """GAE on the task's scale from normalised values; then fold the rollout's returns
        into the statistics and leave ``returns`` and ``values`` normalised by them."""
        rollout.values.copy_(self.denormalize(rollout.values))
        rollout.compute_gae(self.denormalize(last_value), gamma, gae_lambda)
        self.stats.update(rollout.returns.reshape(-1, 1))
        rollout.returns.copy_(self.normalize(rollout.returns))
        rollout.values.copy_(self.normalize(rollout.values))
