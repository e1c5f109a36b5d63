"""HCAM: hierarchical chunk attention memory (Lampinen et al. 2021, "Towards mental time travel").

Each layer files its input away in chunks of ``chunk_size`` consecutive steps.
A completed chunk goes into a ring buffer of ``max_chunks`` chunks, with a
summary key: the mean of the chunk. A query reads the memory in two stages:

1. it scores the summary keys of all visible chunks and keeps the ``top_k``
   best, with a softmax over those k scores only;
2. it runs ordinary multi-head attention inside each chosen chunk and sums
   the k results weighted by the stage-1 weights.

Beside this read, the query attends causally to the current, partly filled
chunk (the steps since the last chunk was completed, itself included). Both
results are added to the residual stream (pre-layer-norm), followed by a
position-wise MLP. Steps carry a sinusoidal embedding of their position inside
their chunk; chunks have no position, which is what lets the memory reach
arbitrarily far back.

Chunks start at the episode start and are completed every ``chunk_size``
steps. An episode start empties the whole memory; when no chunk is visible the
read is exactly zero (all weights are masked to 0, the read has no bias), and
with fewer than ``top_k`` visible chunks the missing picks get weight 0.

A sequence forward is computed in parallel: the candidates of each query are
the chunks cached in the state plus the chunks completed earlier in the same
sequence, with masks for causality, episode starts and ring-buffer overwrites.
The acting step gathers only the ``top_k`` chosen chunks, so its cost grows
with ``max_chunks`` only through the cheap stage-1 scores and, unless the caller
hands its state over (``reuse_state=True``: the new chunk is written into the
ring buffer itself), the copy of the ring buffer into the new state.

Gradient: chunk contents and keys in the state come from earlier forward
calls and are stored detached; summary keys are always detached (they only
steer the selection); chunks completed inside the current sequence pass
gradient through their contents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from memory_modules.attention import (
    PositionwiseMLP,
    last_reset_index,
    masked_top_k_weights,
    sinusoid_table,
    split_heads,
)
from memory_modules.base import MemoryCore, State


def _rows(source: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``source[b, index[b, j]]`` for source [B, N, *rest] and index [B, J] -> [B, J, *rest].

    A row-wise ``index_select`` (whole rows copied at once), much cheaper than
    an element-wise ``gather`` when the rows are chunks of C*H numbers.
    """
    B, N = source.shape[:2]
    offset = torch.arange(B, device=index.device)[:, None] * N
    flat = source.reshape(B * N, *source.shape[2:])
    return flat.index_select(0, (index + offset).reshape(-1)).view(*index.shape, *source.shape[2:])


def _put_rows(
    target: torch.Tensor, index: torch.Tensor, values: torch.Tensor, in_place: bool = False
) -> torch.Tensor:
    """``target[b, index[b, j]] = values[b, j]``; the index of a row must be distinct.

    Out of place (a new tensor) unless ``in_place`` and ``target`` is contiguous,
    when ``target`` itself is written and returned.
    """
    B, N = target.shape[:2]
    offset = torch.arange(B, device=index.device)[:, None] * N
    rest = target.shape[2:]
    rows, values = (index + offset).reshape(-1), values.reshape(-1, *rest)
    if in_place and target.is_contiguous():
        target.view(B * N, *rest).index_copy_(0, rows, values)
        return target
    return target.reshape(B * N, *rest).index_copy(0, rows, values).view(target.shape)


@dataclass
class _Plan:
    """Where every step falls in the chunk grid; shared by all layers of one forward call.

    The "extended" sequence is ``[C-1 slots; T steps]``: the partial chunk from
    the state sits right-aligned in the first C-1 slots, so step s of the
    sequence is at ext index s + C - 1 and a chunk completed at step c spans
    ext[c : c + C]. Local attention runs in blocks of Q = min(T, C) queries;
    block n reads the ext window [n Q, n Q + Q + C - 1).
    """

    lead_index: torch.Tensor  # [B, C-1] which partial-chunk slot fills each leading ext slot
    lead_ok: torch.Tensor  # [B, C-1] whether that slot holds a real step
    ext_position: torch.Tensor  # [B, C-1+T] position inside its chunk of every ext entry
    local_visible: torch.Tensor  # [B, nb, Q, Q+C-1] block-local attention mask
    chunk_end: torch.Tensor  # [B, K] step at which in-sequence chunk k completed (clamped)
    candidates_visible: torch.Tensor  # [B, T, M+K] cached slots then in-sequence chunks
    partial_index: torch.Tensor  # [B, C] ext index of each slot of the new partial chunk
    partial_ok: torch.Tensor  # [B, C]
    write_slot: torch.Tensor  # [B, K] ring slot in-sequence chunk k goes to
    write_ok: torch.Tensor  # [B, K] chunk k exists and is not overwritten within the sequence
    last_writer: torch.Tensor  # [B, M] latest in-sequence chunk written to each slot (clamped)
    written: torch.Tensor  # [B, M] whether any in-sequence chunk was written to the slot
    new_valid: torch.Tensor  # [B, M]
    new_len: torch.Tensor  # [B]
    new_ptr: torch.Tensor  # [B]


class HCAMLayer(nn.Module):
    read_recording = False  # set by the core's record_reads (videos only)

    def __init__(self, size: int, num_heads: int, chunk_size: int, top_k: int):
        super().__init__()
        self.num_heads = num_heads
        self.chunk_size = chunk_size
        self.top_k = top_k
        self.norm = nn.LayerNorm(size)
        # attention over the current, partly filled chunk
        self.local_query = nn.Linear(size, size)
        self.local_key_value = nn.Linear(size, 2 * size)
        self.local_out = nn.Linear(size, size)
        # hierarchical read: chunk selection, then attention inside the chosen chunks
        self.select = nn.Linear(size, size, bias=False)
        self.mem_query = nn.Linear(size, size)
        # No key bias (it shifts all of a query's logits alike, so the softmax cancels it),
        # no value or output bias: an empty read stays exactly 0.
        self.mem_key_value = nn.Linear(size, 2 * size, bias=False)
        self.mem_out = nn.Linear(size, size, bias=False)
        self.norm_mlp = nn.LayerNorm(size)
        self.mlp = PositionwiseMLP(size)

    def forward(
        self,
        h: torch.Tensor,
        chunks: torch.Tensor,
        keys: torch.Tensor,
        partial: torch.Tensor,
        plan: _Plan,
        chunk_pos: torch.Tensor,
        in_place: bool = False,
        need_state: bool = True,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """h [B, T, H]; chunks [B, M, C, H]; keys [B, M, H]; partial [B, C, H];
        chunk_pos [C, H] sinusoids. Returns the output and this layer's new state,
        written into ``chunks`` and ``keys`` themselves when ``in_place``, or ``{}``
        without ``need_state``."""
        B, T, H = h.shape
        M, C = chunks.shape[1], chunks.shape[2]
        K = plan.chunk_end.shape[1]

        lead = _rows(partial, plan.lead_index)
        lead = torch.where(plan.lead_ok[..., None], lead, torch.zeros_like(lead))
        ext = torch.cat([lead, h], dim=1)  # [B, C-1+T, H]
        ext_n = self.norm(ext)
        xn = ext_n[:, C - 1 :]
        local = self._local(ext_n + chunk_pos[plan.ext_position], plan.local_visible)

        # Chunks completed inside this sequence, and their summary keys: the chunk
        # mean, layer-normalised (no parameters) once here rather than at every read.
        span = plan.chunk_end[:, :, None] + torch.arange(C, device=h.device)
        new_chunks = _rows(ext, span.reshape(B, K * C)).view(B, K, C, H)
        new_keys = nn.functional.layer_norm(new_chunks.detach().mean(2), (H,))

        # Stage 1: score every visible chunk, keep the top k.
        query = self.select(xn) * (1.0 / math.sqrt(H))
        scores = torch.cat([query @ keys.transpose(1, 2), query @ new_keys.transpose(1, 2)], dim=2)
        top_k = min(self.top_k, M + K)
        weights, picked = masked_top_k_weights(scores, plan.candidates_visible, top_k)

        # Stage 2: attention inside the chosen chunks.
        read = self.mem_out(self._read(xn, weights, picked, chunks, new_chunks, chunk_pos))

        h = h + local + read
        h = h + self.mlp(self.norm_mlp(h))
        if not need_state:
            return h, {}

        # New state of this layer: the partial chunk and the ring buffer, detached.
        new_partial = _rows(ext.detach(), plan.partial_index)
        new_partial = torch.where(plan.partial_ok[..., None], new_partial, torch.zeros_like(new_partial))
        new_chunks = new_chunks.detach()
        if K <= M:
            # The K slots written to are distinct: copy the buffer, overwrite K rows.
            slot, ok = plan.write_slot, plan.write_ok
            vals_c = torch.where(ok[:, :, None, None], new_chunks, _rows(chunks, slot))
            vals_k = torch.where(ok[:, :, None], new_keys, _rows(keys, slot))
            out_chunks = _put_rows(chunks, slot, vals_c, in_place)
            out_keys = _put_rows(keys, slot, vals_k, in_place)
        else:
            # More chunks than slots: every slot takes its latest writer.
            w, written = plan.last_writer, plan.written
            out_chunks = torch.where(written[:, :, None, None], _rows(new_chunks, w), chunks)
            out_keys = torch.where(written[:, :, None], _rows(new_keys, w), keys)
        return h, {"chunks": out_chunks, "keys": out_keys, "partial": new_partial}

    def _local(self, ext_in: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """Causal attention of each step over its current chunk (the last <= C ext entries).

        ``ext_in`` [B, C-1+T, H] is the normalised ext sequence plus positions.
        Queries go in blocks of Q; block n sees its window of Q + C - 1 ext
        entries, so all blocks are one batched matmul, not a loop over time.
        """
        B, L, H = ext_in.shape
        T = L - (self.chunk_size - 1)
        nh, dh = self.num_heads, H // self.num_heads
        nb, Q, span = visible.shape[1:]
        pad = nb * Q - T
        q = self.local_query(ext_in[:, -T:])
        q = nn.functional.pad(q, (0, 0, 0, pad)).view(B, nb, Q, nh, dh).transpose(2, 3)
        kv = nn.functional.pad(self.local_key_value(ext_in), (0, 0, 0, pad))
        kv = kv.unfold(1, span, Q).view(B, nb, 2, nh, dh, span)  # [B, nb, 2, nh, dh, span]
        logits = q @ kv[:, :, 0] * (1.0 / math.sqrt(dh))  # [B, nb, nh, Q, span]
        logits = logits.masked_fill(~visible[:, :, None], float("-inf"))
        out = logits.softmax(-1) @ kv[:, :, 1].transpose(-1, -2)  # [B, nb, nh, Q, dh]
        out = out.transpose(2, 3).reshape(B, nb * Q, H)[:, :T]
        return self.local_out(out)

    def _read(self, xn, weights, picked, chunks, new_chunks, chunk_pos):
        """Multi-head attention of each query inside its k chosen chunks, weighted by ``weights``.

        Only the chosen chunks are gathered, never all M*C stored steps. Instead
        of projecting the k*C gathered steps to keys and values, the query is
        moved into the content space (q W_k) and the attention-weighted sum of
        contents is projected once (W_v z): 2 H^2 per query instead of 2 k C H^2.
        The chunk-position embedding enters through its own small products
        rather than being added to the big gathered tensor.
        """
        B, T, H = xn.shape
        M, C = chunks.shape[1], chunks.shape[2]
        nh, dh = self.num_heads, H // self.num_heads
        top_k = picked.shape[-1]
        flat = picked.reshape(B, T * top_k)
        if M + new_chunks.shape[1] <= T * top_k:
            # Long sequences: normalise every candidate once, then gather.
            source = self.norm(torch.cat([chunks, new_chunks], dim=1))
            chosen = _rows(source, flat)
        else:
            # Acting: gather the few chosen chunks from the big buffer, then normalise.
            from_cache = _rows(chunks, flat.clamp(max=M - 1))
            from_seq = _rows(new_chunks, (flat - M).clamp(min=0))
            chosen = self.norm(torch.where((flat < M)[:, :, None, None], from_cache, from_seq))
        chosen = chosen.view(B * T, top_k * C, H)
        w_k, w_v = (w.view(nh, dh, H) for w in self.mem_key_value.weight.chunk(2, dim=0))
        mq = split_heads(self.mem_query(xn), nh)  # [B, T, nh, dh]
        q_content = torch.einsum("bthd,hde->bthe", mq, w_k).reshape(B * T, nh, H)
        att = (q_content @ chosen.transpose(1, 2)).view(B * T, nh, top_k, C)
        att = att + (q_content @ chunk_pos.t())[:, :, None, :]
        att = (att * (1.0 / math.sqrt(dh))).softmax(-1)
        att = att * weights.reshape(B * T, 1, top_k, 1)
        if self.read_recording:  # the last query's chosen chunks and weights (videos only)
            self.last_pick = (picked[:, -1], att.view(B, T, nh, top_k, C)[:, -1].mean(1))
        summed = att.view(B * T, nh, top_k * C) @ chosen + att.sum(2) @ chunk_pos
        return torch.einsum("bthe,hde->bthd", summed.view(B, T, nh, H), w_v).reshape(B, T, H)


class HCAMCore(MemoryCore):
    """Stack of HCAM layers (hierarchical chunk read + local attention + MLP).

    State per layer l: ``chunks{l}`` [B, max_chunks, chunk_size, hidden] (the
    ring buffer of completed chunks of layer l's input), ``keys{l}``
    [B, max_chunks, hidden] (their means, layer-normalised) and ``partial{l}``
    [B, chunk_size, hidden] (the current chunk, zero past ``partial_len``).
    Shared: ``chunk_valid`` [B, max_chunks] (slot holds a chunk of the current
    episode), ``partial_len`` [B] and ``write_ptr`` [B] (next ring slot).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int = 128,
        num_layers: int = 2,
        num_heads: int = 4,
        chunk_size: int = 16,
        top_k: int = 4,
        max_chunks: int = 64,
    ):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        for key, value in dict(chunk_size=chunk_size, top_k=top_k, max_chunks=max_chunks).items():
            if value < 1:
                raise ValueError(f"{key} must be >= 1, got {value}")
        self.input_size = input_size
        self.output_size = hidden_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.chunk_size = chunk_size
        self.max_chunks = max_chunks
        self.embed = nn.Linear(input_size, hidden_size)
        self.layers = nn.ModuleList(
            HCAMLayer(hidden_size, num_heads, chunk_size, top_k) for _ in range(num_layers)
        )
        self.norm_out = nn.LayerNorm(hidden_size)
        self.register_buffer(
            "chunk_pos", sinusoid_table(torch.arange(chunk_size), hidden_size), persistent=False
        )

    @property
    def context_length(self) -> int:
        # What every step can reach: max_chunks completed chunks and itself (the partly
        # filled chunk adds up to chunk_size - 1 more at some steps), and each layer
        # reaches as far again back through the previous layer's chunks.
        return self.num_layers * self.max_chunks * self.chunk_size + 1

    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        B, M, C, H = batch_size, self.max_chunks, self.chunk_size, self.hidden_size
        dtype = self.embed.weight.dtype
        state: State = {}
        for i in range(self.num_layers):
            state[f"chunks{i}"] = torch.zeros(B, M, C, H, device=device, dtype=dtype)
            state[f"keys{i}"] = torch.zeros(B, M, H, device=device, dtype=dtype)
            state[f"partial{i}"] = torch.zeros(B, C, H, device=device, dtype=dtype)
        state["chunk_valid"] = torch.zeros(B, M, dtype=torch.bool, device=device)
        state["partial_len"] = torch.zeros(B, dtype=torch.long, device=device)
        state["write_ptr"] = torch.zeros(B, dtype=torch.long, device=device)
        return state

    def _plan(self, state: State, starts: torch.Tensor) -> _Plan:
        B, T = starts.shape
        C, M = self.chunk_size, self.max_chunks
        K = (T + C - 1) // C  # most chunks T steps can complete
        dev = starts.device
        len0, ptr0, valid0 = state["partial_len"], state["write_ptr"], state["chunk_valid"]

        steps = torch.arange(T, device=dev)
        reset_at = last_reset_index(starts)  # [B, T]
        fresh = reset_at < 0
        # Steps of the current episode filed before t since the chunk grid's origin.
        filed = torch.where(fresh, len0[:, None] + steps, steps - reset_at)
        position = filed % C
        completes = position == C - 1
        done_incl = completes.long().cumsum(1)  # chunks completed at steps <= t
        done_before = done_incl - completes.long()
        total = done_incl[:, -1]
        chunk_ids = torch.arange(K, device=dev)
        chunk_end = torch.searchsorted(done_incl, (chunk_ids + 1).expand(B, K).contiguous())
        chunk_end = chunk_end.clamp(max=T - 1)

        lead_j = torch.arange(C - 1, device=dev) - (C - 1) + len0[:, None]  # [B, C-1]
        lead_ok = lead_j >= 0
        lead_index = lead_j.clamp(0, C - 1)
        ext_position = torch.cat([lead_index, position], dim=1)
        # Block-local attention: query i of block n is step t = nQ + i; window entry j is
        # ext[nQ + j], step nQ + j - (C-1). It is in t's chunk iff it is not after t and
        # not before t - position[t]. Padding queries see everything (sliced off later).
        Q = min(T, C)
        nb = (T + Q - 1) // Q
        row = torch.arange(Q, device=dev)[:, None]
        col = torch.arange(Q + C - 1, device=dev)[None, :]
        pos_blocks = nn.functional.pad(position, (0, nb * Q - T)).view(B, nb, Q, 1)
        padding = (torch.arange(nb * Q, device=dev) >= T).view(1, nb, Q, 1)
        local_visible = ((col >= row + C - 1 - pos_blocks) & (col <= row + C - 1)) | padding

        # Cached slot j is overwritten by in-sequence chunk (j - ptr0) mod M, M + that, ...
        first_writer = (torch.arange(M, device=dev)[None, :] - ptr0[:, None]) % M  # [B, M]
        cache_visible = (
            valid0[:, None, :]
            & fresh[:, :, None]
            & (first_writer[:, None, :] >= done_before[:, :, None])
        )
        seq_visible = (
            (chunk_ids[None, None, :] < done_before[:, :, None])
            & (chunk_ids[None, None, :] >= done_before[:, :, None] - M)
            & (chunk_end[:, None, :] >= reset_at[:, :, None])
        )
        candidates_visible = torch.cat([cache_visible, seq_visible], dim=2)

        new_len = (position[:, -1] + 1) % C
        slots = torch.arange(C, device=dev)
        partial_index = (T + C - 1 - new_len[:, None] + slots[None, :]).clamp(max=T + C - 2)
        partial_ok = slots[None, :] < new_len[:, None]

        write_slot = (ptr0[:, None] + chunk_ids[None, :]) % M
        write_ok = (chunk_ids[None, :] < total[:, None]) & (chunk_ids[None, :] + M >= total[:, None])
        written = first_writer < total[:, None]
        last_writer = first_writer + M * ((total[:, None] - 1 - first_writer).clamp(min=0) // M)
        last_writer = last_writer.clamp(max=K - 1)
        new_valid = torch.where(
            written,
            chunk_end.gather(1, last_writer) >= reset_at[:, -1:],
            valid0 & fresh[:, -1:],
        )
        return _Plan(
            lead_index=lead_index,
            lead_ok=lead_ok,
            ext_position=ext_position,
            local_visible=local_visible,
            chunk_end=chunk_end,
            candidates_visible=candidates_visible,
            partial_index=partial_index,
            partial_ok=partial_ok,
            write_slot=write_slot,
            write_ok=write_ok,
            last_writer=last_writer,
            written=written,
            new_valid=new_valid,
            new_len=new_len,
            new_ptr=(ptr0 + total) % M,
        )

    def forward(self, x, state, episode_starts, reuse_state=False, need_state=True):
        self.check_inputs(x, episode_starts)
        plan = self._plan(state, episode_starts.t())
        h = self.embed(x).transpose(0, 1)  # [B, T, H]
        new_state: State = {}
        for i, layer in enumerate(self.layers):
            h, layer_state = layer(
                h, state[f"chunks{i}"], state[f"keys{i}"], state[f"partial{i}"], plan, self.chunk_pos,
                in_place=reuse_state, need_state=need_state,
            )
            for key, value in layer_state.items():
                new_state[f"{key}{i}"] = value
        if need_state:
            new_state["chunk_valid"] = plan.new_valid
            new_state["partial_len"] = plan.new_len
            new_state["write_ptr"] = plan.new_ptr
        else:  # the caller drops it: hand back the state as given
            new_state = state
        if self.read_recording:
            self._keep_chunk_read(state, plan, x.shape[0])
        return self.norm_out(h).transpose(0, 1), new_state

    def _keep_chunk_read(self, state: State, plan: _Plan, T: int) -> None:
        """Each layer's chunk read at an acting step (T == 1), as weights over the steps back.

        The step sits at position p of its chunk (p steps since the last completed chunk);
        the chunk completed g chunks before the newest one is in ring slot (ptr - 1 - g)
        mod M, and its entry c lies p + g C + C - c steps back. (A T > 1 call also reads
        chunks it completes itself; videos act one step at a time, so only T == 1 is kept.)
        """
        if T != 1:
            self._last_read = None
            return
        C, M = self.chunk_size, self.max_chunks
        p = plan.ext_position[:, -1]  # [B]
        B = p.shape[0]
        ptr, valid = state["write_ptr"], state["chunk_valid"]
        entry = torch.arange(C, device=p.device)
        span = M * C + C
        rows = []
        for layer in self.layers:
            picked, att = layer.last_pick  # [B, k], [B, k, C]
            slot = picked.clamp(max=M - 1)
            g = (ptr[:, None] - 1 - slot) % M
            back = p[:, None, None] + g[..., None] * C + C - entry  # [B, k, C]
            att = torch.where((picked < M)[..., None], att, torch.zeros_like(att))
            row = att.new_zeros(B, span).scatter_add(1, back.reshape(B, -1), att.reshape(B, -1))
            rows.append(row)
        # Held at this step: the partial chunk (0 .. p back) and every valid cached chunk.
        g_all = (ptr[:, None] - 1 - torch.arange(M, device=p.device)) % M  # [B, M]
        held_back = p[:, None, None] + g_all[..., None] * C + C - entry  # [B, M, C]
        held_ok = (valid & plan.candidates_visible[:, -1, :M])[..., None].expand(-1, -1, C)
        stored = torch.zeros(B, span, dtype=torch.bool, device=p.device)
        stored = stored.scatter(1, held_back.reshape(B, -1), held_ok.reshape(B, -1))
        stored |= torch.arange(span, device=p.device) <= p[:, None]
        self.keep_read("steps", torch.stack(rows, 1), [f"layer {i}" for i in range(len(rows))],
                       stored=stored)
