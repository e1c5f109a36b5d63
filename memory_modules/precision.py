"""Mixed precision inside the hand-written recurrences (``gru_sequence``, ``lstm_sequence``).

Under ``torch.autocast`` (``algo.precision=bfloat16``) a custom autograd function would
see its ops cast one by one, and its per-step loops write into preallocated buffers of
one dtype. So the sequence functions turn autocast off, run the recurrence in the
weights' dtype, and compute only the products that do not carry the recurrence (the
input projection over all steps and the three large gradient products) in the lower
precision autocast asked for: those are the ones that run 2x faster in bfloat16 on a
CPU with AVX512-BF16, while the per-step products (16-32 rows) gain little and would
round the state at every step. The fused torch layers of the padded and packed paths
(``memory_modules/rnn.py``) run in the weights' dtype too.
"""

from __future__ import annotations

import torch


def autocast_dtype(t: torch.Tensor) -> torch.dtype | None:
    """The lower precision autocast asks for on ``t``'s device; None where it is off."""
    kind = t.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None


def mm(a: torch.Tensor, b: torch.Tensor, lowp: torch.dtype | None) -> torch.Tensor:
    """``a @ b`` in ``a``'s dtype; with ``lowp``, the product itself computed in ``lowp``."""
    if lowp is None:
        return a @ b
    return (a.to(lowp) @ b.to(lowp)).to(a.dtype)


def addmm(bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor, lowp: torch.dtype | None) -> torch.Tensor:
    """``bias + a @ b`` in ``a``'s dtype: torch's fused addmm without ``lowp``, else the
    product in ``lowp`` and the bias added in ``a``'s dtype."""
    if lowp is None:
        return torch.addmm(bias, a, b)
    return mm(a, b, lowp).add_(bias)
