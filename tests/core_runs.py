"""Ways of feeding one sequence to a core, shared by the core tests."""

from __future__ import annotations

import torch


def run_steps(core, x, state, starts):
    """Feed ``x`` one step at a time (the acting path)."""
    return run_pieces(core, x, state, starts, list(range(1, x.shape[0])))


def run_pieces(core, x, state, starts, cuts):
    """Feed ``x`` in consecutive pieces split at the step indices ``cuts``."""
    ys = []
    bounds = [0, *cuts, x.shape[0]]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        y, state = core(x[a:b], state, starts[a:b])
        ys.append(y)
    return torch.cat(ys), state
