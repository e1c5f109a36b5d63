"""memory_modules.gru_sequence: the GRU layer with resets and a hand-written backward."""

from __future__ import annotations

import torch
from torch import nn

from memory_modules.gru_sequence import gru_sequence

T, B, D, H = 9, 4, 5, 6


def _setup(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    gru = nn.GRU(D, H).to(dtype)
    x = torch.randn(T, B, D, dtype=dtype, requires_grad=True)
    h0 = torch.randn(B, H, dtype=dtype, requires_grad=True)
    keep = torch.ones(T, B, 1, dtype=dtype)
    keep[[0, 3, 4, 8], [1, 0, 0, 2]] = 0  # a start at step 0, two in a row, one at the end
    weights = [gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0]
    return gru, x, h0, keep, weights


def test_matches_torch_gru_step_by_step():
    """Forward and every gradient equal torch's GRU stepped one step at a time, with the
    state zeroed where keep is 0."""
    gru, x, h0, keep, weights = _setup()
    w = torch.randn(T, B, H, dtype=x.dtype)

    def grads(ours: bool):
        for p in (x, h0, *weights):
            p.grad = None
        if ours:
            out = gru_sequence(x, h0, keep, *weights)
        else:
            h, outs = h0, []
            for t in range(T):
                o, h = gru(x[t : t + 1], (h * keep[t]).unsqueeze(0))
                h = h[0]
                outs.append(o[0])
            out = torch.stack(outs)
        (out * w).sum().backward()
        return out.detach(), [p.grad.clone() for p in (x, h0, *weights)]

    (y_ours, g_ours), (y_ref, g_ref) = grads(True), grads(False)
    torch.testing.assert_close(y_ours, y_ref)
    for name, a, b in zip(["x", "h0", "w_ih", "w_hh", "b_ih", "b_hh"], g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b, msg=name)
    assert torch.all(g_ours[1][1] == 0)  # env 1 resets at step 0: its h0 gets no gradient
    assert torch.any(g_ours[1][0] != 0)


def test_gradcheck():
    _, x, h0, keep, weights = _setup()
    assert torch.autograd.gradcheck(lambda *a: gru_sequence(a[0], a[1], keep, *a[2:]),
                                    (x, h0, *weights))


def test_no_grad_inputs_and_float32():
    """Under no_grad nothing is saved; in float32 it agrees with the float64 result."""
    _, x, h0, keep, weights = _setup()
    with torch.no_grad():
        ref = gru_sequence(x, h0, keep, *weights)
        out = gru_sequence(x.float(), h0.float(), keep.float(), *(w.float() for w in weights))
    assert out.dtype == torch.float32 and not out.requires_grad
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)


def test_keep_none_is_no_resets():
    """keep=None (no episode starts inside) gives the outputs and every gradient of an
    all-ones keep, and passes gradcheck."""
    _, x, h0, _, weights = _setup()
    ones = torch.ones(T, B, 1, dtype=x.dtype)
    w = torch.randn(T, B, H, dtype=x.dtype)

    def grads(keep):
        for p in (x, h0, *weights):
            p.grad = None
        out = gru_sequence(x, h0, keep, *weights)
        (out * w).sum().backward()
        return out.detach(), [p.grad.clone() for p in (x, h0, *weights)]

    (y_none, g_none), (y_ones, g_ones) = grads(None), grads(ones)
    torch.testing.assert_close(y_none, y_ones)
    for a, b in zip(g_none, g_ones, strict=True):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(lambda *a: gru_sequence(a[0], a[1], None, *a[2:]),
                                    (x, h0, *weights))
