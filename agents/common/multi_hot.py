"""Multi-hot inputs (``policy.symbols=onehot``): the one-hot, and the one-hot normalised
and through an MLP without building it.

A view of symbols, one-hot per (cell, symbol) and normalised by ``RunningNorm``
(agents/common/encoders.py), is a wide input with few ones: MiniGrid's 7 x 7 view sets
147 of 980 features. ``multi_hot_mlp`` computes the first layer from the set features
alone; the result and its gradients are those of the one-hot built, normalised and
multiplied (tests/test_running_norm.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from memory_modules.distinct_rows import sum_by_index

if TYPE_CHECKING:
    from agents.common.encoders import RunningNorm


def one_hot(index: torch.Tensor, width: int) -> torch.Tensor:
    """``[..., K]`` column indices (disjoint ranges) -> ``[..., width]`` float multi-hot."""
    out = torch.zeros(*index.shape[:-1], width, device=index.device)
    return out.scatter_(-1, index, 1.0)


class _RowSums(torch.autograd.Function):
    """``one_hot(index, width) @ table`` for ``[N, K]`` indices distinct in each row: the
    forward gathers and sums K rows per output row (``embedding_bag``); the backward, the
    table's gradient, is the one-hot's transpose times the output's gradient
    (``sum_by_index``: on a CPU that product beats ``embedding_bag``'s own backward, which
    sorts the indices: 1.6 ms against 6.0 ms for MiniGrid's [512, 147] indices into 980
    rows, 1 thread)."""

    @staticmethod
    def forward(ctx, index: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index)
        ctx.rows = table.shape[0]
        return F.embedding_bag(index, table, mode="sum")

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (index,) = ctx.saved_tensors
        return None, sum_by_index(grad, index, ctx.rows)


def multi_hot_mlp(index: torch.Tensor, norm: RunningNorm, mlp: nn.Sequential) -> torch.Tensor:
    """``mlp(norm(one_hot(index, width)))`` for ``[N, K]`` indices, distinct in each row.

    The normalised input takes two values per feature, ``zero`` or ``one``
    (``RunningNorm.levels``, clip included), so the first layer's output is
    ``W @ zero + b`` plus, for each of the K set features j, ``W[:, j] * (one - zero)[j]``,
    and the batch's statistics are counts. The same function and gradients, up to the
    order of the sums.
    """
    if len(mlp) == 0:  # no layer to fold the one-hot into
        return norm(one_hot(index, norm.mean.shape[0]))
    if norm.training and torch.is_grad_enabled():
        norm.update_multi_hot(index)
    first = mlp[0]
    zero, one = norm.levels()
    table = (first.weight.t() * (one - zero)[:, None]).contiguous()  # [width, out]: one column a feature
    out = _RowSums.apply(index, table) + F.linear(zero, first.weight, first.bias)
    return mlp[1:](out)
