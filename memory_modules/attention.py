"""Small pieces shared by the attention cores (GTrXL, HCAM).

Everything here is shape-static and sync-free, so the cores can call it inside
``forward`` on any device.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoid_table(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding ``[..., dim]`` of (integer or real) ``positions``.

    Half the channels are sines, half cosines, over geometrically spaced
    wavelengths from 2*pi to 1e4*2*pi (Vaswani et al. 2017). An odd ``dim``
    gets one zero channel at the end.
    """
    half = dim // 2
    freq = torch.exp(
        -math.log(1e4) * torch.arange(half, device=positions.device, dtype=torch.float32) / max(half, 1)
    )
    angle = positions.to(torch.float32)[..., None] * freq
    table = torch.cat([angle.sin(), angle.cos()], dim=-1)
    if dim % 2:
        table = nn.functional.pad(table, (0, 1))
    return table


def last_reset_index(starts: torch.Tensor) -> torch.Tensor:
    """For batch-first ``starts`` [B, T] (bool): index of the latest start at or before t, -1 if none."""
    steps = torch.arange(starts.shape[1], device=starts.device).expand_as(starts)
    return torch.cummax(torch.where(starts, steps, torch.full_like(steps, -1)), dim=1).values


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[..., H] -> [..., num_heads, H // num_heads]."""
    return x.unflatten(-1, (num_heads, x.shape[-1] // num_heads))


def masked_top_k_weights(
    scores: torch.Tensor, visible: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick the ``k`` best visible entries of ``scores`` [..., N] and softmax over them only.

    Returns ``(weights, indices)``, both [..., k]. Invisible picks (fewer than
    ``k`` visible entries) get weight exactly 0, and a row with nothing
    visible gets all-zero weights instead of a softmax over garbage.
    """
    masked = scores.masked_fill(~visible, float("-inf"))
    top, idx = masked.topk(k, dim=-1)  # sorted: top[..., 0] is the row maximum
    ok = visible.gather(-1, idx)
    shift = torch.where(ok[..., :1], top[..., :1], torch.zeros_like(top[..., :1]))
    expo = torch.where(ok, torch.exp(top - shift), torch.zeros_like(top))
    weights = expo / expo.sum(-1, keepdim=True).clamp_min(torch.finfo(expo.dtype).tiny)
    return weights, idx


class PositionwiseMLP(nn.Module):
    """Two-layer feed-forward block applied to every step independently."""

    def __init__(self, size: int, expansion: int = 4):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(size, expansion * size), nn.ReLU(), nn.Linear(expansion * size, size)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
