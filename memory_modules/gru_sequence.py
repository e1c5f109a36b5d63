"""One GRU layer over a sequence with episode resets, with its backward written out.

    out = gru_sequence(x, h0, keep, w_ih, w_hh, b_ih, b_hh)   # x [T, B, D] -> out [T, B, H]

``keep[t, b]`` is 0 where env b's episode starts at step t (the state is wiped
before the step reads it) and 1 elsewhere; the layer's final state is
``out[-1]``. The weights are an ``nn.GRU`` layer's, in its gate order (r, z, n)::

    hp_t = keep_t * h_{t-1}
    r, z = sigmoid(W_i{r,z} x_t + b_i{r,z} + W_h{r,z} hp_t + b_h{r,z})
    n    = tanh(W_in x_t + b_in + r * (W_hn hp_t + b_hn))
    h_t  = (1 - z) * n + z * hp_t

Why: a reset is a multiply here, so a sequence with episodes starting inside it
is one pass of T steps. Torch's GRU cannot reset mid-sequence, so the padded
path of ``memory_modules.rnn`` cuts such sequences into segments and runs them
in length buckets, one fused call each: up to about 2T steps of per-step ops in
all, plus a host sync to plan the buckets. Each step there is several small ops
recorded by autograd; here the forward is 7 ops a step into preallocated
buffers and the backward 8, and everything that does not carry the recurrence
(the input projection, the gate derivatives, every weight gradient) is one
batched op over all steps. The loop over steps is the recurrence itself, not a
loop over envs.
"""

from __future__ import annotations

import torch


class _GRUSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h0, keep, w_ih, w_hh, b_ih, b_hh):  # noqa: D102 (see the module doc)
        T, B, D = x.shape
        H = w_hh.shape[1]
        gi = torch.addmm(b_ih, x.reshape(T * B, D), w_ih.t()).view(T, B, 3 * H)
        hp = x.new_empty(T, B, H)  # the state each step reads (after its reset)
        gh = x.new_empty(T, B, 3 * H)  # W_hh hp + b_hh
        rz = x.new_empty(T, B, 2 * H)  # the reset and update gates
        n = x.new_empty(T, B, H)  # the candidate state
        out = x.new_empty(T, B, H)
        w_hh_t = w_hh.t()
        # Every per-step view made up front (one unbind each): indexing in the loop costs
        # as much as the small ops themselves.
        steps = zip(keep.unbind(0), gi[..., : 2 * H].unbind(0), gi[..., 2 * H :].unbind(0),
                    hp.unbind(0), gh.unbind(0), gh[..., : 2 * H].unbind(0),
                    gh[..., 2 * H :].unbind(0), rz.unbind(0), rz[..., :H].unbind(0),
                    rz[..., H:].unbind(0), n.unbind(0), out.unbind(0), strict=True)
        h = h0
        for keep_t, gi_rz, gi_n, hp_t, gh_t, gh_rz, gh_n, rz_t, r_t, z_t, n_t, out_t in steps:
            torch.mul(h, keep_t, out=hp_t)
            torch.addmm(b_hh, hp_t, w_hh_t, out=gh_t)
            torch.add(gi_rz, gh_rz, out=rz_t).sigmoid_()
            torch.addcmul(gi_n, r_t, gh_n, out=n_t).tanh_()
            h = torch.lerp(n_t, hp_t, z_t, out=out_t)
        ctx.save_for_backward(x, keep, w_ih, w_hh, hp, gh, rz, n)
        ctx.mark_non_differentiable(keep)
        return out

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        x, keep, w_ih, w_hh, hp, gh, rz, n = ctx.saved_tensors
        T, B, D = x.shape
        H = w_hh.shape[1]
        r, z = rz[..., :H], rz[..., H:]
        # What each step's state gradient g becomes, batched over all steps:
        # d pre_n = g * a, d pre_z = g * dz, d pre_r = d pre_n * dr.
        a = (1 - z) * (1 - n * n)
        dz = (hp - n) * z * (1 - z)
        dr = gh[..., 2 * H :] * r * (1 - r)
        d_gh = grad_out.new_empty(T, B, 3 * H)  # gradient of W_hh hp + b_hh
        d_pn = grad_out.new_empty(T, B, H)  # gradient of the candidate's pre-activation
        steps = zip(grad_out.unbind(0), keep.unbind(0), a.unbind(0), dz.unbind(0), dr.unbind(0),
                    r.unbind(0), z.unbind(0), d_gh.unbind(0), d_gh[..., :H].unbind(0),
                    d_gh[..., H : 2 * H].unbind(0), d_gh[..., 2 * H :].unbind(0),
                    d_pn.unbind(0), strict=True)
        carry = None  # gradient reaching h_{t-1} from step t
        for go_t, keep_t, a_t, dz_t, dr_t, r_t, z_t, d_gh_t, d_r_t, d_z_t, d_ghn_t, d_pn_t in reversed(
                list(steps)):
            g = go_t if carry is None else go_t + carry
            torch.mul(g, a_t, out=d_pn_t)
            torch.mul(g, dz_t, out=d_z_t)
            torch.mul(d_pn_t, dr_t, out=d_r_t)
            torch.mul(d_pn_t, r_t, out=d_ghn_t)
            carry = torch.addmm(g * z_t, d_gh_t, w_hh).mul_(keep_t)
        d_gi = torch.cat([d_gh[..., : 2 * H], d_pn], dim=-1).view(T * B, 3 * H)
        d_gh_flat = d_gh.view(T * B, 3 * H)
        need = ctx.needs_input_grad
        d_x = (d_gi @ w_ih).view(T, B, D) if need[0] else None
        d_w_ih = d_gi.t() @ x.reshape(T * B, D) if need[3] else None
        d_w_hh = d_gh_flat.t() @ hp.view(T * B, H) if need[4] else None
        d_b_ih = d_gi.sum(0) if need[5] else None
        d_b_hh = d_gh_flat.sum(0) if need[6] else None
        return d_x, carry, None, d_w_ih, d_w_hh, d_b_ih, d_b_hh


def gru_sequence(x: torch.Tensor, h0: torch.Tensor, keep: torch.Tensor, w_ih: torch.Tensor,
                 w_hh: torch.Tensor, b_ih: torch.Tensor, b_hh: torch.Tensor) -> torch.Tensor:
    """One GRU layer over ``x`` [T, B, D] from ``h0`` [B, H], the state wiped where ``keep``
    [T, B, 1] is 0; every step's output [T, B, H] (see the module doc)."""
    return _GRUSequence.apply(x, h0, keep, w_ih, w_hh, b_ih, b_hh)
