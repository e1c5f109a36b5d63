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


def _repeating(dtype=torch.float64, seed=1, distinct=6, T_=16, B_=8):
    """Inputs [T_, B_, D] drawn from ``distinct`` rows (a symbolic task's encoder output)."""
    torch.manual_seed(seed)
    table = torch.randn(distinct, D, dtype=dtype)
    x = table[torch.randint(0, distinct, (T_, B_))].requires_grad_()
    return x


def test_repeating_inputs_are_projected_once_per_distinct_row(monkeypatch):
    """With few distinct input rows the projection runs on those rows and its weight
    gradient sums theirs first (memory_modules.distinct_rows): outputs and every gradient
    equal the path that multiplies every row; resets included."""
    import memory_modules.distinct_rows as dr
    import memory_modules.gru_sequence as gs

    gru = nn.GRU(D, H).to(torch.float64)
    weights = [gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0]
    x = _repeating()
    h0 = torch.randn(8, H, dtype=torch.float64, requires_grad=True)
    keep = (torch.rand(16, 8, 1) > 0.2).to(torch.float64)
    w = torch.randn(16, 8, H, dtype=torch.float64)
    found = dr.distinct_rows(x.detach().reshape(-1, D))
    assert found is not None and found[0].shape[0] == 6
    torch.testing.assert_close(found[0][found[1]], x.detach().reshape(-1, D), rtol=0, atol=0)

    def run():
        for p in (x, h0, *weights):
            p.grad = None
        out = gs.gru_sequence(x, h0, keep, *weights)
        (out * w).sum().backward()
        return out.detach(), [p.grad.clone() for p in (x, h0, *weights)]

    taken = []
    real = gs.distinct_rows
    monkeypatch.setattr(gs, "distinct_rows", lambda rows: taken.append(real(rows)) or taken[-1])
    y_once, g_once = run()
    assert taken and taken[-1] is not None  # the distinct rows were used
    monkeypatch.setattr(gs, "distinct_rows", lambda rows: None)
    y_all, g_all = run()
    torch.testing.assert_close(y_once, y_all)
    for name, a, b in zip(["x", "h0", "w_ih", "w_hh", "b_ih", "b_hh"], g_once, g_all, strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_distinct_rows_declines_many_rows_shared_keys_and_other_devices(monkeypatch):
    import memory_modules.distinct_rows as dr

    rows = torch.randn(128, D)
    assert dr.distinct_rows(rows) is None  # 128 distinct of 128: nothing to gain
    few = rows[torch.arange(128) % 8]
    distinct, inverse = dr.distinct_rows(few)
    assert distinct.shape == (8, D) and torch.equal(distinct[inverse], few)
    assert dr.distinct_rows(few[:32]) is None  # too few rows to look at
    assert dr.distinct_rows(few.to(torch.int64)) is None
    # every row on one key (a probe of zeros): the check finds rows that differ and declines
    monkeypatch.setattr(dr, "_probe", lambda width, dtype: torch.zeros(width, dtype=dtype))
    assert dr.distinct_rows(few) is None
    sums = dr.sum_by_index(torch.ones(128, 3), inverse, 8)
    torch.testing.assert_close(sums, torch.full((8, 3), 16.0))
