"""One LSTM layer over a sequence with episode resets, with its backward written out.

    out, c_last = lstm_sequence(x, h0, c0, keep, w_ih, w_hh, b_ih, b_hh)

The LSTM's counterpart of :mod:`memory_modules.gru_sequence` (read that first): ``x``
[T, B, D], ``h0`` and ``c0`` [B, H], ``keep`` [T, B, 1] 0 where an episode starts;
``out`` [T, B, H] holds every step's h (the final h is ``out[-1]``), ``c_last`` [B, H]
the final cell. The weights are an ``nn.LSTM`` layer's, in its gate order (i, f, g, o)::

    hp_t, cp_t = keep_t * h_{t-1}, keep_t * c_{t-1}
    i, f, o = sigmoid(...), g = tanh(...)   of W_ih x_t + b_ih + W_hh hp_t + b_hh
    c_t = f * cp_t + i * g,   h_t = o * tanh(c_t)

Forward: 10 ops a step into preallocated buffers; backward: 9. The input projection
(with both biases folded in), the gate derivatives and every weight gradient are one
batched op over all steps. Under ``torch.autocast``, as the GRU's
(:mod:`memory_modules.precision`).
"""

from __future__ import annotations

import torch

from memory_modules import precision


class _LSTMSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h0, c0, keep, w_ih, w_hh, b_ih, b_hh):  # noqa: D102 (see the module doc)
        lowp = precision.autocast_dtype(x)  # the recurrence in the weights' dtype (precision.py)
        if lowp is None:
            return _LSTMSequence._forward(ctx, x, h0, c0, keep, w_ih, w_hh, b_ih, b_hh, None)
        with torch.autocast(x.device.type, enabled=False):
            dtype = w_ih.dtype
            return _LSTMSequence._forward(ctx, x.to(dtype), h0.to(dtype), c0.to(dtype),
                                          keep.to(dtype), w_ih, w_hh, b_ih, b_hh, lowp)

    @staticmethod
    def _forward(ctx, x, h0, c0, keep, w_ih, w_hh, b_ih, b_hh, lowp):
        T, B, D = x.shape
        H = w_hh.shape[1]
        ctx.lowp = lowp
        # x W_ih + b_ih + b_hh for every step: each step then adds hp W_hh in one addmm
        gib = precision.addmm(b_ih + b_hh, x.reshape(T * B, D), w_ih.t(), lowp).view(T, B, 4 * H)
        hp = x.new_empty(T, B, H)  # the state each step reads (after its reset)
        cp = x.new_empty(T, B, H)
        gates = x.new_empty(T, B, 4 * H)  # i, f, g, o after their activations
        tc = x.new_empty(T, B, H)  # tanh(c_t)
        out = x.new_empty(T, B, H)
        cells = x.new_empty(T, B, H)  # c_t
        w_hh_t = w_hh.t()
        steps = zip(keep.unbind(0), gib.unbind(0), hp.unbind(0), cp.unbind(0), gates.unbind(0),
                    gates[..., : 2 * H].unbind(0), gates[..., : H].unbind(0),
                    gates[..., H : 2 * H].unbind(0), gates[..., 2 * H : 3 * H].unbind(0),
                    gates[..., 3 * H :].unbind(0), tc.unbind(0), out.unbind(0), cells.unbind(0),
                    strict=True)
        h, c = h0, c0
        for keep_t, gib_t, hp_t, cp_t, g_t, if_t, i_t, f_t, gg_t, o_t, tc_t, out_t, c_t in steps:
            torch.mul(h, keep_t, out=hp_t)
            torch.mul(c, keep_t, out=cp_t)
            torch.addmm(gib_t, hp_t, w_hh_t, out=g_t)
            if_t.sigmoid_()
            gg_t.tanh_()
            o_t.sigmoid_()
            c = torch.mul(f_t, cp_t, out=c_t).addcmul_(i_t, gg_t)
            torch.tanh(c, out=tc_t)
            h = torch.mul(o_t, tc_t, out=out_t)
        ctx.save_for_backward(x, keep, w_ih, w_hh, hp, cp, gates, tc)
        ctx.mark_non_differentiable(keep)
        return out, cells[-1]

    @staticmethod
    def backward(ctx, grad_out, grad_c_last):  # noqa: D102
        x, keep, w_ih, w_hh, hp, cp, gates, tc = ctx.saved_tensors
        T, B, D = x.shape
        H = w_hh.shape[1]
        i, f, g, o = gates.split(H, dim=-1)
        # What the gradients reaching h_t (gh) and c_t (gc) become, batched over all steps:
        # d pre_o = gh * so; dc = gc + gh * k; d pre_i = dc * si; d pre_g = dc * sg;
        # d pre_f = dc * sf; the cell's gradient into c_{t-1} = dc * f * keep.
        so = o * (1 - o) * tc
        k = o * (1 - tc * tc)
        si = g * i * (1 - i)
        sg = i * (1 - g * g)
        sf = cp * f * (1 - f)
        fk = f * keep
        d_pre = grad_out.new_empty(T, B, 4 * H)
        steps = zip(grad_out.unbind(0), keep.unbind(0), so.unbind(0), k.unbind(0), si.unbind(0),
                    sg.unbind(0), sf.unbind(0), fk.unbind(0), d_pre.unbind(0),
                    d_pre[..., :H].unbind(0), d_pre[..., H : 2 * H].unbind(0),
                    d_pre[..., 2 * H : 3 * H].unbind(0), d_pre[..., 3 * H :].unbind(0), strict=True)
        carry_h = None
        carry_c = grad_c_last if grad_c_last is not None else torch.zeros_like(grad_out[0])
        for go_t, keep_t, so_t, k_t, si_t, sg_t, sf_t, fk_t, d_t, di_t, df_t, dg_t, do_t in reversed(
                list(steps)):
            gh = go_t if carry_h is None else go_t + carry_h
            torch.mul(gh, so_t, out=do_t)
            dc = torch.addcmul(carry_c, gh, k_t)
            torch.mul(dc, si_t, out=di_t)
            torch.mul(dc, sg_t, out=dg_t)
            torch.mul(dc, sf_t, out=df_t)
            carry_c = dc.mul_(fk_t)
            carry_h = torch.mm(d_t, w_hh).mul_(keep_t)
        d_flat = d_pre.view(T * B, 4 * H)
        need = ctx.needs_input_grad
        lowp = ctx.lowp
        d_x = precision.mm(d_flat, w_ih, lowp).view(T, B, D) if need[0] else None
        d_w_ih = precision.mm(d_flat.t(), x.reshape(T * B, D), lowp) if need[4] else None
        d_w_hh = precision.mm(d_flat.t(), hp.view(T * B, H), lowp) if need[5] else None
        d_b = d_flat.sum(0) if need[6] or need[7] else None
        return d_x, carry_h, carry_c, None, d_w_ih, d_w_hh, d_b, d_b


def lstm_sequence(x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, keep: torch.Tensor,
                  w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor,
                  b_hh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM layer over ``x`` [T, B, D] from ``h0``, ``c0`` [B, H], the state wiped where
    ``keep`` [T, B, 1] is 0; every step's h [T, B, H] and the last cell [B, H]."""
    return _LSTMSequence.apply(x, h0, c0, keep, w_ih, w_hh, b_ih, b_hh)
