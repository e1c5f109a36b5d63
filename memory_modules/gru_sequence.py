"""One GRU layer over a sequence with episode resets, with its backward written out.

    out = gru_sequence(x, h0, keep, w_ih, w_hh, b_ih, b_hh)   # x [T, B, D] -> out [T, B, H]

``keep[t, b]`` is 0 where env b's episode starts at step t (the state is wiped
before the step reads it) and 1 elsewhere; ``keep=None``: no episode starts
inside the sequence (one multiply a step fewer). The layer's final state is
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
recorded by autograd; here the forward is 5 ops a step (6 with resets) into
preallocated buffers and the backward 5: the recurrent matmul adds into a buffer
that already holds the input projection and the biases, and the backward's four
gate gradients come from two broadcast multiplies into one buffer whose slices
are, in permuted gate orders, the gradients of both projections. Everything that
does not carry the recurrence (the input projection, the gate derivatives, every
weight gradient) is one batched op over all steps. The loop over steps is the
recurrence itself, not a loop over envs.

On the CPU the two loops over steps run in C++ (``gru_loops.cpp``, built once by
:mod:`memory_modules.gru_native`): a step is the recurrent matmul and one fused
pass over the batch. The Python loops below are their reference and the fallback
(no compiler, other devices and dtypes, ``RECALL_GRU_KERNEL=python``).

On the CPU, inputs whose rows repeat (a symbolic task's encoder outputs) are projected
once per distinct row, and the projection's weight gradient is taken over those rows
(:mod:`memory_modules.distinct_rows`).

Under ``torch.autocast`` the recurrence stays in the weights' dtype and only the input
projection and the three large gradient products take autocast's lower precision
(:mod:`memory_modules.precision`).
"""

from __future__ import annotations

import torch

from memory_modules import gru_native, precision
from memory_modules.distinct_rows import distinct_rows, sum_by_index


class _GRUSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h0, keep, w_ih, w_hh, b_ih, b_hh):  # noqa: D102 (see the module doc)
        lowp = precision.autocast_dtype(x)
        if lowp is None:
            return _GRUSequence._forward(ctx, x, h0, keep, w_ih, w_hh, b_ih, b_hh, None)
        with torch.autocast(x.device.type, enabled=False):  # inputs to the weights' dtype
            dtype = w_ih.dtype
            return _GRUSequence._forward(ctx, x.to(dtype), h0.to(dtype),
                                         None if keep is None else keep.to(dtype),
                                         w_ih, w_hh, b_ih, b_hh, lowp)

    @staticmethod
    def _forward(ctx, x, h0, keep, w_ih, w_hh, b_ih, b_hh, lowp):
        T, B, D = x.shape
        H = w_hh.shape[1]
        ctx.lowp = lowp
        rows = x.reshape(T * B, D)
        found = distinct_rows(rows)
        if found is None:
            inverse = None
            gi = precision.addmm(b_ih, rows, w_ih.t(), lowp).view(T, B, 3 * H)
        else:  # the projection once per distinct input row, then gathered
            rows, inverse = found
            gi = precision.addmm(b_ih, rows, w_ih.t(), lowp).index_select(0, inverse).view(T, B, 3 * H)
        pre, rz, n, out, hp = _recur(gi, h0, keep, w_hh, b_hh, _native(x, keep))
        ctx.save_for_backward(rows, inverse, h0, keep, w_ih, w_hh, hp, pre, rz, n, out)
        if keep is not None:
            ctx.mark_non_differentiable(keep)
        return out

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        rows, inverse, h0, keep, w_ih, w_hh, hp, pre, rz, n, out = ctx.saved_tensors
        T, B, H = out.shape
        D = rows.shape[1]
        if hp is None:  # no resets: the state each step reads is the one before it
            hp = torch.cat([h0.unsqueeze(0), out[:-1]])
        # The step's gradients live in one buffer, laid out (pn, z, r, hn):
        #   pn = d of the candidate's pre-activation = g * (1 - z) * (1 - n^2)
        #   z  = d of z's pre-activation            = g * (hp - n) * z * (1 - z)
        #   r  = d of r's pre-activation            = pn * gh_n * r * (1 - r)
        #   hn = d of W_hn hp + b_hn                = pn * r
        # so (z, r, hn) is the gradient of W_hh hp + b_hh and (pn, z, r) that of
        # W_ih x + b_ih, each one contiguous slice, in gate orders (z, r, n) and (n, z, r):
        # the weights are permuted to match, once per call.
        d = grad_out.new_empty(T, B, 4 * H)
        w_hh_p = _swap_blocks(w_hh, 0, 1)  # rows (z, r, n)
        native = _native(grad_out, keep)
        if native is not None:
            d_h0 = native.backward_loop(grad_out.contiguous(), rz, n, pre, hp,
                                        None if keep is None else keep.contiguous(), w_hh_p, d)
        else:
            d_h0 = _backward_loop(grad_out, rz, n, pre, hp, keep, w_hh_p, d)
        d_gi = d[..., : 3 * H].reshape(T * B, 3 * H)  # gate order (n, z, r)
        d_gh = d[..., H:].reshape(T * B, 3 * H)  # gate order (z, r, n)
        need = ctx.needs_input_grad
        # Each permutation swaps two gate blocks, so it is its own inverse: the same call
        # puts the weights in the gradients' order and the gradients back in torch's.
        lowp = ctx.lowp
        d_x = precision.mm(d_gi, _swap_blocks(w_ih, 0, 2), lowp).view(T, B, D) if need[0] else None
        d_w_ih = None
        if need[3]:  # over the distinct input rows, their gradients summed, where found
            d_rows = d_gi if inverse is None else sum_by_index(d_gi, inverse, rows.shape[0])
            d_w_ih = _swap_blocks(precision.mm(d_rows.t(), rows, lowp), 0, 2)
        d_w_hh = _swap_blocks(precision.mm(d_gh.t(), hp.reshape(T * B, H), lowp), 0, 1) if need[4] else None
        d_b_ih = _swap_blocks(d_gi.sum(0), 0, 2) if need[5] else None
        d_b_hh = _swap_blocks(d_gh.sum(0), 0, 1) if need[6] else None
        return d_x, d_h0, None, d_w_ih, d_w_hh, d_b_ih, d_b_hh


def gru_step(x: torch.Tensor, h: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
             b_ih: torch.Tensor, b_hh: torch.Tensor) -> torch.Tensor | None:
    """One step without autograd, ``x`` [B, D] and ``h`` [B, H] to the next state [B, H],
    through the forward's C++ loop: an acting step with the formulas of the scan that later
    trains on it, in three torch calls and the loop where torch's fused GRU cell makes
    about a dozen. None where that loop does not run (autograd or autocast
    on, another device or dtype, no build): the caller takes torch's cell."""
    if torch.is_grad_enabled() or precision.autocast_dtype(x) is not None:
        return None
    native = _native(x, None)
    if native is None or not (h.dtype == w_hh.dtype == x.dtype):
        return None
    gi = torch.addmm(b_ih, x, w_ih.t()).unsqueeze(0)
    return _recur(gi, h, None, w_hh, b_hh, native)[3][0]


def _recur(gi, h0, keep, w_hh, b_hh, native):
    """The recurrence over the input projection ``gi`` [T, B, 3H] (with ``b_ih``) from
    ``h0`` [B, H]: the C++ loops where ``native`` is given, else the Python ones. Returns
    the buffers the backward reads, ``(pre, rz, n, out, hp)``."""
    T, B, _ = gi.shape
    H = w_hh.shape[1]
    # pre[t] = (gi_r + b_hr, gi_z + b_hz, b_hn) before the step adds W_hh hp_t in place:
    # its first 2H are then the gates' pre-activations and its last H is W_hn hp + b_hn.
    pre = torch.cat([gi[..., : 2 * H] + b_hh[: 2 * H], b_hh[2 * H :].expand(T, B, H)], dim=-1)
    rz = gi.new_empty(T, B, 2 * H)
    n = gi.new_empty(T, B, H)
    out = gi.new_empty(T, B, H)
    # The state each step reads: after its reset with resets, else the previous output.
    hp = None if keep is None else gi.new_empty(T, B, H)
    if native is not None:
        native.forward_loop(pre, gi, h0.contiguous(), w_hh,
                            None if keep is None else keep.contiguous(), hp, rz, n, out)
    else:
        _forward_loop(pre, gi, h0, w_hh, keep, hp, rz, n, out)
    return pre, rz, n, out, hp


def _native(t: torch.Tensor, keep: torch.Tensor | None):
    """The C++ loops (memory_modules/gru_native.py) for a CPU float or double ``t`` (and a
    ``keep`` of its dtype), else None."""
    if (t.device.type != "cpu" or t.dtype not in (torch.float32, torch.float64)
            or (keep is not None and keep.dtype != t.dtype)):
        return None
    return gru_native.loops()


def _forward_loop(pre, gi, h0, w_hh, keep, hp, rz, n, out) -> None:
    """The forward's steps in Python (the C++ loops' reference): fills rz, n, out (and hp)."""
    T, B, H = out.shape
    w_hh_t = w_hh.t()
    per_step = [None] * T if keep is None else list(zip(keep.unbind(0), hp.unbind(0), strict=True))
    steps = zip(per_step, pre.unbind(0), pre[..., : 2 * H].unbind(0),
                pre[..., 2 * H :].unbind(0), gi[..., 2 * H :].unbind(0), rz.unbind(0),
                rz[..., :H].unbind(0), rz[..., H:].unbind(0), n.unbind(0), out.unbind(0),
                strict=True)
    h = h0
    for reset, pre_t, pre_rz, gh_n, gi_n, rz_t, r_t, z_t, n_t, out_t in steps:
        if reset is not None:
            h = torch.mul(h, reset[0], out=reset[1])
        pre_t.addmm_(h, w_hh_t)
        torch.sigmoid(pre_rz, out=rz_t)
        torch.addcmul(gi_n, r_t, gh_n, out=n_t).tanh_()
        h = torch.lerp(n_t, h, z_t, out=out_t)


def _backward_loop(grad_out, rz, n, pre, hp, keep, w_hh_p, d) -> torch.Tensor:
    """The backward's steps in Python (the C++ loops' reference): fills d, returns d h0."""
    T, B, H = n.shape
    r, z = rz[..., :H], rz[..., H:]
    gh_n = pre[..., 2 * H :]
    # d's four gate gradients come from two broadcast multiplies a step
    az = torch.cat([(1 - z) * (1 - n * n), (hp - n) * z * (1 - z)], dim=-1).view(T, B, 2, H)
    rr = torch.cat([gh_n * r * (1 - r), r], dim=-1).view(T, B, 2, H)
    d_pz = d[..., : 2 * H].view(T, B, 2, H)
    d_rh = d[..., 2 * H :].view(T, B, 2, H)
    steps = list(zip(grad_out.unbind(0), az.unbind(0), rr.unbind(0), z.unbind(0),
                     d_pz.unbind(0), d_rh.unbind(0), d[..., H:].unbind(0),
                     (keep.unbind(0) if keep is not None else [None] * T), strict=True))
    carry = None  # gradient reaching hp_t from step t
    keep_next = None
    for go_t, az_t, rr_t, z_t, d_pz_t, d_rh_t, d_gh_t, keep_t in reversed(steps):
        if carry is None:
            g = go_t
        elif keep_next is None:
            g = go_t + carry
        else:
            g = torch.addcmul(go_t, carry, keep_next)
        torch.mul(g.unsqueeze(1), az_t, out=d_pz_t)
        torch.mul(d_pz_t[:, :1], rr_t, out=d_rh_t)
        carry = torch.mul(g, z_t).addmm_(d_gh_t, w_hh_p)
        keep_next = keep_t
    return carry if keep_next is None else carry * keep_next


def _swap_blocks(t: torch.Tensor, i: int, j: int) -> torch.Tensor:
    """``t`` [3H, ...] (three gate blocks along dim 0) with blocks i and j swapped."""
    blocks = list(t.chunk(3))
    blocks[i], blocks[j] = blocks[j], blocks[i]
    return torch.cat(blocks)


def gru_sequence(x: torch.Tensor, h0: torch.Tensor, keep: torch.Tensor | None, w_ih: torch.Tensor,
                 w_hh: torch.Tensor, b_ih: torch.Tensor, b_hh: torch.Tensor) -> torch.Tensor:
    """One GRU layer over ``x`` [T, B, D] from ``h0`` [B, H], the state wiped where ``keep``
    [T, B, 1] is 0 (None: no resets); every step's output [T, B, H] (see the module doc)."""
    return _GRUSequence.apply(x, h0, keep, w_ih, w_hh, b_ih, b_hh)
