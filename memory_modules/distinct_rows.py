"""The distinct rows of a core's inputs, found on the CPU, so that the input projection
runs once per distinct row.

A symbolic task's observation takes few values, so the encoder's outputs that a GRU's
input projection multiplies repeat: an NBack minibatch's 1,024 rows hold at most 16
distinct ones (8 symbols, and whether the step asks for an answer). The projection's
forward and its weight gradient are then products over those rows alone, with the
rows' gradients summed per distinct row first; the gradient of the inputs themselves
is per row, unchanged. (An encoder whose output is 32 or 16 wide makes the same
products small in another way, and takes more env steps on NBack: docs/benchmarks.md.)

Found by a key per row (its dot product with a fixed random vector), ``torch.unique``
on the keys, and a check that the rows gathered back equal the input exactly, so a key
two different rows share costs only the saving. The answer is read on the host, so
only CPU tensors are looked at (a GPU would wait for it; there the products are cheap).
"""

from __future__ import annotations

import functools

import torch

MOST = 0.125  # at most this fraction of the rows distinct, else no gain worth the search
LEAST_ROWS = 64  # fewer rows than this: not looked at


@functools.cache
def _probe(width: int, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(width)
    return torch.randn(width, generator=g, dtype=torch.float64).to(dtype)


def distinct_rows(rows: torch.Tensor, most: float = MOST) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(distinct [U, D], inverse [N])`` with ``distinct[inverse]`` equal to ``rows``
    [N, D], where U <= ``most`` * N; None where there are more, or ``rows`` is not a
    float matrix on the CPU."""
    n = rows.shape[0]
    if (rows.device.type != "cpu" or rows.dim() != 2 or n < LEAST_ROWS
            or rows.dtype not in (torch.float32, torch.float64)):
        return None
    keys = rows @ _probe(rows.shape[1], rows.dtype)
    unique, inverse = torch.unique(keys, return_inverse=True)
    u = unique.numel()
    if u > most * n:
        return None
    first = torch.empty(u, dtype=torch.long).scatter_(0, inverse, torch.arange(n))
    distinct = rows.index_select(0, first)
    if not torch.equal(distinct.index_select(0, inverse), rows):  # two rows, one key
        return None
    return distinct, inverse


def sum_by_index(values: torch.Tensor, index: torch.Tensor, count: int) -> torch.Tensor:
    """``[count, K']``: each row of ``values`` [N, K'] added to the rows ``index`` names,
    one per row ([N], as ``distinct_rows``'s inverse) or several distinct ones ([N, K], a
    multi-hot). A product with the [count, N] one-hot: faster on a CPU than
    ``index_add_`` or ``embedding_bag``'s backward, which sorts."""
    hot = values.new_zeros(count, values.shape[0])
    hot.scatter_(0, index.reshape(values.shape[0], -1).t(), 1.0)
    return hot @ values
