"""memory_modules.lstm_sequence: the LSTM layer with resets and a hand-written backward."""

from __future__ import annotations

import torch
from torch import nn

from memory_modules.lstm_sequence import lstm_sequence

T, B, D, H = 9, 4, 5, 6


def _setup(seed=0):
    torch.manual_seed(seed)
    lstm = nn.LSTM(D, H).double()
    x = torch.randn(T, B, D, dtype=torch.double, requires_grad=True)
    h0 = torch.randn(B, H, dtype=torch.double, requires_grad=True)
    c0 = torch.randn(B, H, dtype=torch.double, requires_grad=True)
    keep = torch.ones(T, B, 1, dtype=torch.double)
    keep[[0, 3, 4, 8], [1, 0, 0, 2]] = 0  # a start at step 0, two in a row, one at the end
    weights = [lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0]
    return lstm, x, h0, c0, keep, weights


def test_matches_torch_lstm_step_by_step():
    """Outputs, the last cell and every gradient (through both) equal torch's LSTM stepped
    one step at a time, with h and c zeroed where keep is 0."""
    lstm, x, h0, c0, keep, weights = _setup()
    w_out, w_c = torch.randn(T, B, H, dtype=x.dtype), torch.randn(B, H, dtype=x.dtype)
    leaves = (x, h0, c0, *weights)

    def grads(ours: bool):
        for p in leaves:
            p.grad = None
        if ours:
            out, c = lstm_sequence(x, h0, c0, keep, *weights)
        else:
            h, c, outs = h0, c0, []
            for t in range(T):
                o, (h, c) = lstm(x[t : t + 1], ((h * keep[t]).unsqueeze(0), (c * keep[t]).unsqueeze(0)))
                h, c = h[0], c[0]
                outs.append(o[0])
            out = torch.stack(outs)
        ((out * w_out).sum() + (c * w_c).sum()).backward()
        return out.detach(), c.detach(), [p.grad.clone() for p in leaves]

    (y_ours, c_ours, g_ours), (y_ref, c_ref, g_ref) = grads(True), grads(False)
    torch.testing.assert_close(y_ours, y_ref)
    torch.testing.assert_close(c_ours, c_ref)
    names = ["x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh"]
    for name, a, b in zip(names, g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b, msg=name)
    for i in (1, 2):  # env 1 resets at step 0: its stored h and c get no gradient
        assert torch.all(g_ours[i][1] == 0) and torch.any(g_ours[i][0] != 0)


def test_gradcheck():
    _, x, h0, c0, keep, weights = _setup()
    assert torch.autograd.gradcheck(lambda *a: lstm_sequence(a[0], a[1], a[2], keep, *a[3:]),
                                    (x, h0, c0, *weights))
