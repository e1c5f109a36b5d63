"""LSTM and GRU cores on torch's fused recurrent kernels (cuDNN on GPU, oneDNN on CPU).

The state is batch-first: ``{"h": [B, L, H], "c": [B, L, H]}`` for the LSTM and
``{"h": [B, L, H]}`` for the GRU, ``L`` being the number of layers. Each layer is
its own single-layer ``nn.LSTM``/``nn.GRU``, so every layer's output sequence is
at hand (the padded path below needs it).

Acting (``T == 1``) masks the state of envs whose episode starts and takes one
fused step. Training (``T > 1``): without episode starts after step 0 it is one
fused pass per layer (off CUDA the GRU scans instead; the third item). Otherwise every env's sequence is cut at its episode starts
into segments; an env's first segment starts from the stored state, every later
one from zeros, and the segments of all envs run together, in one of two layouts
with no Python loop over time; or each layer scans all T steps (the third item):

* ``"packed"`` (default on CUDA): one ``PackedSequence``; cuDNN runs it natively
  and returns each segment's final state.
* ``"padded"``: segments grouped by length into buckets
  (lengths in (2^(k-1), 2^k], so at most log2(T) + 1 of them), each bucket one
  zero-padded batch of left-aligned segments and one plain fused call per layer.
  Torch's CPU kernel for packed sequences slices its input once per step, and the
  backward of each slice writes a gradient as large as the whole input, so its
  backward is O(steps x rows): at T=128 with 256 envs and starts at rate 1/32 it
  took 3-18 s (depending on the machine's load) against 0.75 s here and 0.42 s
  with no starts at all. Padding steps come after a segment's end, so they never
  touch its outputs; the final state of a segment shorter than its batch is read
  from the layer's output sequence (``h``) and, for the LSTM's cell, from the
  closed form of its linear recurrence ``c_t = f_t * c_{t-1} + i_t * g_t`` with
  the gates recomputed from the layer's inputs and outputs (see ``_final_cell``).
* ``"scan"``: no segments at all. :mod:`memory_modules.gru_sequence` and
  :mod:`memory_modules.lstm_sequence` run each layer over all T steps once, a
  reset being a multiply, with their backward written out. Off CUDA, ``"auto"``
  takes the scan for the GRU when the padded buckets would loop over more steps
  than T (ragged episodes: on MiniGrid's training minibatches a GRU PPO update
  took 0.67 s instead of 1.34 s) and keeps the padded batches otherwise
  (episodes that tile the sequence make one short bucket, which is faster). With
  no episode start inside the sequences at all it scans too, without the reset
  multiply, instead of one fused call: whole PPO updates 6-22% faster (RepeatFirst
  268 ms against 342). The LSTM stays padded, or fused (see ``LSTMCore._cpu_path``).

Outputs are gathered back to ``[T, B]`` and the final state is read from each
env's last segment. Segment ids and positions are vectorised index arithmetic on
the input's device; the one host sync is the copy of the segment lengths to the
CPU, from which the padded layout also plans its buckets on the host.

The bias of the gate that retains the state starts at +2 (see ``RETAIN_BIAS``),
the usual forget-gate bias trick, so memory lasts across long delays from the start;
the core option ``retain_bias`` sets another shift (0: torch's own init; negative:
biased to overwrite, for tasks whose memory is a step or two back).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from memory_modules.base import MemoryCore, State, reset_state
from memory_modules.gru_sequence import gru_sequence, gru_step
from memory_modules.lstm_sequence import lstm_sequence

# Added to the retain gate's bias at init (see _FusedRNNCore._init_retain_bias). With
# torch's default init (bias ~ 0) an LSTM/GRU did not learn the delay-32 recall test in
# 1500 updates; a shift of 1 was still too little, 2 learned it in 200-450 updates.
RETAIN_BIAS = 2.0

SEQUENCE_PATHS = ("auto", "packed", "padded", "scan")

Hidden = tuple[torch.Tensor, ...]  # one [1, N, H] tensor per state key, for one layer


class _FusedRNNCore(MemoryCore):
    """Shared logic of the LSTM and GRU cores; subclasses name the module and state keys."""

    context_length = math.inf

    _rnn_cls: type[nn.RNNBase]
    _state_keys: tuple[str, ...]
    # Under "auto" off CUDA: scan a sequence with no episode start inside it rather than
    # make one fused call (the GRU: its scan is then the faster; see GRUCore).
    _cpu_uncut_scan = False

    def __init__(self, input_size: int, hidden_size: int = 128, num_layers: int = 1,
                 retain_bias: float = RETAIN_BIAS):
        super().__init__()
        if hidden_size < 1 or num_layers < 1:
            raise ValueError(
                f"hidden_size and num_layers must be positive, got {hidden_size}, {num_layers}"
            )
        if not math.isfinite(retain_bias):
            raise ValueError(f"retain_bias={retain_bias!r} is not accepted; accepted: a finite number")
        self.retain_bias = float(retain_bias)
        self.input_size = input_size
        self.output_size = hidden_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        # Time-major single-layer RNNs, as the core's inputs are [T, B, D].
        self.layers = nn.ModuleList(
            self._rnn_cls(input_size if i == 0 else hidden_size, hidden_size)
            for i in range(num_layers)
        )
        # Layout of the sequence path when episodes start inside the sequence; "auto" is
        # "packed" on CUDA and "padded" elsewhere (see the module docstring).
        self.sequence_path = "auto"
        self._init_retain_bias()

    def _init_retain_bias(self) -> None:
        """Shift the bias of the gate that keeps the old state (LSTM forget gate, GRU update
        gate) by ``retain_bias`` (``RETAIN_BIAS`` unless set): at init the cell then keeps
        ~88% of its state per step instead of ~50%, so gradients reach across long delays.
        A task that replaces its memory every step wants less: 0 is torch's own init, and
        the RepeatPrevious, NBack and MiniGrid recipes take -2 (biased to overwrite).
        Both gates are the second block of torch's gate layout (LSTM: i, f, g, o; GRU: r, z, n)."""
        H = self.hidden_size
        with torch.no_grad():
            for layer in self.layers:
                layer.bias_ih_l0[H : 2 * H] += self.retain_bias

    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        dtype = self.layers[0].weight_ih_l0.dtype
        shape = (batch_size, self.num_layers, self.hidden_size)
        return {k: torch.zeros(shape, device=device, dtype=dtype) for k in self._state_keys}

    # -- one layer -----------------------------------------------------------------------------

    def _layer_hidden(self, state: State, i: int) -> Hidden:
        """Layer i's part of a batch-first state, as the [1, N, H] tensors torch takes."""
        return tuple(state[k][:, i].unsqueeze(0).contiguous() for k in self._state_keys)

    def _run_layer(self, i: int, inp, hidden: Hidden):
        layer = self.layers[i]
        kind = layer.weight_hh_l0.device.type
        if torch.is_autocast_enabled(kind):
            # torch's fused layer in the weights' dtype: the recurrence stays in full
            # precision under autocast, as in the scans (memory_modules/precision.py)
            dtype = layer.weight_hh_l0.dtype
            with torch.autocast(kind, enabled=False):
                return self._run_layer(i, inp.to(dtype), tuple(h.to(dtype) for h in hidden))
        out, new = layer(inp, hidden if len(hidden) > 1 else hidden[0])
        return out, (new if isinstance(new, tuple) else (new,))

    def _stack(self, finals: list[Hidden]) -> State:
        """Per-layer final states ([N, H] each) -> batch-first state [N, L, H]."""
        return {
            k: torch.stack([f[j] for f in finals], dim=1)
            for j, k in enumerate(self._state_keys)
        }

    def _run_plain(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """All layers over x [T, B, D] from ``state``, no resets inside: one fused call each."""
        finals = []
        for i in range(self.num_layers):
            x, new = self._run_layer(i, x, self._layer_hidden(state, i))
            finals.append(tuple(h[0] for h in new))
        return x, self._stack(finals)

    # -- forward -------------------------------------------------------------------------------

    def forward(
        self,
        x: torch.Tensor,
        state: State,
        episode_starts: torch.Tensor,
        reuse_state: bool = False,
        need_state: bool = True,
    ) -> tuple[torch.Tensor, State]:
        self.check_inputs(x, episode_starts)
        T, B, _ = x.shape
        if T == 0:  # an empty sequence reads nothing and leaves the state as it is
            return x.new_zeros(0, B, self.output_size), state
        starts = episode_starts.to(device=x.device, dtype=torch.bool)
        # A start at step 0 resets the stored state; every path begins from this state.
        state = reset_state(state, starts[0])
        if T == 1:
            y, new = self._run_plain(x, state)
            if self.read_recording:
                self._keep_change(state, new)
            return y, new
        if self.read_recording:  # only an acting step has the state before it at hand
            self._last_read = None
        return self._forward_sequence(x, state, starts)

    def _keep_change(self, before: State, after: State) -> None:
        """RMS change of each layer's state (h, and c for the LSTM) at this step (videos)."""
        sq = sum((after[k] - before[k]).pow(2).mean(-1) for k in self._state_keys)  # [B, L]
        change = (sq / len(self._state_keys)).sqrt()
        self.keep_read("change", change[..., None], [f"layer {i}" for i in range(self.num_layers)])

    def _forward_sequence(
        self, x: torch.Tensor, state: State, starts: torch.Tensor
    ) -> tuple[torch.Tensor, State]:
        T, B, D = x.shape
        device = x.device
        path = self.sequence_path
        if path not in SEQUENCE_PATHS:
            raise ValueError(f"sequence_path must be one of {SEQUENCE_PATHS}, got {path!r}")
        if path == "scan" or (path == "auto" and self._cpu_uncut_scan and device.type != "cuda"
                              and not bool(starts[1:].any())):
            # The GRU off CUDA scans a sequence with no start inside it, before any segment
            # planning (``_cpu_uncut_scan``); asking costs no sync there.
            return self._run_scan(x, state, starts)
        # A new segment begins at every start after step 0 (step 0 is handled above).
        cuts = torch.cat([torch.zeros(1, B, dtype=torch.bool, device=device), starts[1:]])
        seg_in_env = cuts.long().cumsum(0)  # [T, B]: segment number within env b
        n_seg = seg_in_env[-1] + 1  # [B]: segments of env b
        first = n_seg.cumsum(0) - n_seg  # [B]: global id of env b's first segment
        last = first + n_seg - 1  # [B]: global id of env b's last segment
        seg = first + seg_in_env  # [T, B]: global segment id of step (t, b)
        t_idx = torch.arange(T, device=device).unsqueeze(1).expand(T, B)
        seg_t0 = torch.where(cuts, t_idx, torch.zeros_like(t_idx)).cummax(0).values
        pos = t_idx - seg_t0  # [T, B]: step's position inside its segment

        # Segment lengths in a fixed-size buffer (at most T * B segments), and the segment
        # count of every env, so nothing syncs until here. Both layouts need the lengths on
        # the host (packing takes CPU lengths; the padded batches need their sizes): this
        # one copy is the one host sync of the sequence path.
        counts = torch.zeros(T * B + B, dtype=torch.long, device=device)
        counts.scatter_add_(0, seg.reshape(-1), torch.ones_like(seg.reshape(-1)))
        counts[T * B :] = n_seg
        counts = counts.cpu()
        lengths, n_seg_host = counts[: T * B], counts[T * B :]
        n_total = int(n_seg_host.sum())

        if n_total == B:
            # No episode starts inside the sequence: one plain fused pass per layer.
            return self._run_plain(x, state)

        lengths = lengths[:n_total]  # segments are 0..n_total-1, none empty
        if path == "auto":
            path = "packed" if device.type == "cuda" else self._cpu_path(lengths, T)
        if path == "scan":
            return self._run_scan(x, state, starts)
        # Initial states [S, L, H]: zeros, except each env's first segment takes its state.
        h0 = {
            k: v.new_zeros(n_total, *v.shape[1:]).index_put((first,), v)
            for k, v in state.items()
        }
        if path == "packed":
            padded = x.new_zeros(int(lengths.max()), n_total, D).index_put((pos, seg), x)
            y, finals = self._segments_packed(padded, lengths, h0, last)
            return y[pos, seg], self._stack(finals)
        return self._segments_padded(x, seg, pos, lengths, n_seg_host, h0)

    def _cpu_path(self, lengths: torch.Tensor, T: int) -> str:
        """The scan runs T steps whatever the resets; the padded batches run the longest
        segment of each length bucket, one after another: take whichever loops over fewer
        steps. Segments of one length (episodes that tile the sequence) make one short
        bucket and stay padded; ragged episodes (MiniGrid, HiddenObjects) make up to
        log2(T) + 1 buckets, as many as 2T steps, and go to the scan (docs/benchmarks.md,
        memory core cost)."""
        steps = torch.zeros(T.bit_length() + 1, dtype=lengths.dtype)
        steps.scatter_reduce_(0, _bucket_of(lengths), lengths, reduce="amax")
        return "scan" if int(steps.sum()) > T else "padded"

    def _run_scan(self, x: torch.Tensor, state: State, starts: torch.Tensor):
        """Every layer as one scan over all T steps, resets and all (no segments). Off CUDA,
        where asking costs no sync, a sequence with no start after step 0 (that one is
        already in ``state``) scans without the reset multiply (``keep=None``)."""
        if x.device.type != "cuda" and not bool(starts[1:].any()):
            keep = None
        else:
            keep = (~starts).unsqueeze(-1).to(x.dtype)  # [T, B, 1]: 0 wipes the state
        finals = []
        for i, layer in enumerate(self.layers):
            x, final = self._scan_layer(layer, x, tuple(state[k][:, i] for k in self._state_keys),
                                        keep)
            finals.append(final)
        return x, self._stack(finals)

    def _scan_layer(self, layer: nn.RNNBase, x, hidden: Hidden, keep) -> tuple[torch.Tensor, Hidden]:
        """Layer ``layer`` over x [T, B, D] from ``hidden`` ([B, H] per state key), ``keep``
        [T, B, 1] (None: no resets): its outputs [T, B, H] and final state ([B, H] per key)."""
        raise NotImplementedError

    def _segments_packed(self, padded, lengths_host, h0: State, last):
        """All segments as one PackedSequence per layer; returns padded outputs [L_max, S, H]
        and each env's final state per layer ([B, H] tensors)."""
        inp = pack_padded_sequence(padded, lengths_host, enforce_sorted=False)
        finals = []
        for i in range(self.num_layers):
            inp, new = self._run_layer(i, inp, self._layer_hidden(h0, i))
            finals.append(tuple(h[0, last] for h in new))  # torch returns hx in input order
        out, _ = nn.utils.rnn.pad_packed_sequence(inp, total_length=padded.shape[0])
        return out, finals

    def _segments_padded(self, x, seg, pos, lengths, n_seg, h0: State):
        """All segments in zero-padded batches, one plain fused call per layer and batch.

        Segments are grouped by length into buckets (lengths in (2^(k-1), 2^k]), so padding
        at most doubles the work, with at most log2(T) + 1 batches; within a batch every
        segment is left-aligned. The batches lie one after another in one flat buffer:
        step (t, b) of segment s sits at ``offset[s] + pos * width[s] + row[s]``, so the
        inputs go in and the outputs come out with one index each. The bucket plan is
        made on the host from the lengths already there (a loop over buckets, not over
        segments or steps)."""
        T, B, _ = x.shape
        device = x.device
        S = lengths.shape[0]
        # -- host plan ----------------------------------------------------------------------
        key = _bucket_of(lengths)
        order = torch.argsort(key, stable=True)  # segment ids grouped by bucket
        sizes = torch.bincount(key)
        last_host = n_seg.cumsum(0) - 1  # [B] global id of each env's last segment
        is_last = torch.zeros(S, dtype=torch.bool)
        is_last[last_host] = True
        env_of = torch.zeros(S, dtype=torch.long)
        env_of[last_host] = torch.arange(B)
        offset = torch.zeros(S, dtype=torch.long)
        width = torch.zeros(S, dtype=torch.long)
        row = torch.zeros(S, dtype=torch.long)
        buckets = []  # (flat offset, steps, rows, segment ids, last-segment ids)
        done, flat = 0, 0
        for n in sizes[sizes > 0].tolist():
            ids = order[done : done + n]
            done += n
            steps = int(lengths[ids].max())
            offset[ids], width[ids], row[ids] = flat, n, torch.arange(n)
            buckets.append((flat, steps, n, ids, ids[is_last[ids]]))
            flat += steps * n
        # -- device work ----------------------------------------------------------------------
        offset, width, row = (v.to(device) for v in (offset, width, row))
        where = offset[seg] + pos * width[seg] + row[seg]  # [T, B] flat index of each step
        inp_flat = x.new_zeros(flat, x.shape[-1]).index_put((where,), x)
        outs, finals, envs = [], [], []
        for start, steps, n, ids, last_ids in buckets:
            inp = inp_flat[start : start + steps * n].view(steps, n, -1)
            rows = row[last_ids.to(device)]  # rows of this batch that end an env's sequence
            end = lengths[last_ids].to(device) - 1  # their last step
            h0_b = {k: v[ids.to(device)] for k, v in h0.items()}
            bucket_finals = []
            for i in range(self.num_layers):
                hidden = self._layer_hidden(h0_b, i)
                out, _ = self._run_layer(i, inp, hidden)  # state after the padding: unused
                layer_final = (out[end, rows],)
                if len(self._state_keys) > 1:
                    c = self._final_cell(i, inp[:, rows], out[:, rows], hidden, rows, end)
                    layer_final += (c,)
                bucket_finals.append(layer_final)
                inp = out
            outs.append(inp.reshape(steps * n, -1))
            finals.append(bucket_finals)
            envs.append(env_of[last_ids])
        y = torch.cat(outs)[where]
        # Each env's final state: concatenated in bucket order, then put back in env order.
        back = torch.argsort(torch.cat(envs)).to(device)
        per_layer = [
            tuple(torch.cat([f[i][j] for f in finals])[back] for j in range(len(finals[0][i])))
            for i in range(self.num_layers)
        ]
        return y, self._stack(per_layer)

    def _final_cell(self, i: int, u, h, hidden: Hidden, rows, end) -> torch.Tensor:
        """LSTM layer i's cell state after step ``end`` [m] of the segments in ``rows`` [m].

        ``u`` [L, m, D] and ``h`` [L, m, H] are those segments' layer input and output.
        The gates at every step follow from u_t and h_{t-1}; the cell then obeys the linear
        recurrence c_t = f_t * c_{t-1} + i_t * g_t, whose solution at step n is
        c_n = sum_k exp(sum_{k<j<=n} log f_j) * i_k * g_k + exp(sum_{j<=n} log f_j) * c_0.
        The sums of log f are suffix sums of non-positive terms, so exp never overflows."""
        layer = self.layers[i]
        h_prev = torch.cat([hidden[0][:, rows], h[:-1]])  # h_{t-1}, with h_0 at t = 0
        gates = F.linear(u, layer.weight_ih_l0, layer.bias_ih_l0) + F.linear(
            h_prev, layer.weight_hh_l0, layer.bias_hh_l0
        )
        gi, gf, gg, _ = gates.chunk(4, dim=-1)
        steps = torch.arange(u.shape[0], device=u.device).unsqueeze(1)  # [L, 1]
        valid = (steps <= end).unsqueeze(-1)  # [L, m, 1]: steps of the segment
        log_f = torch.where(valid, F.logsigmoid(gf), torch.zeros_like(gf))
        write = torch.where(valid, torch.sigmoid(gi) * torch.tanh(gg), torch.zeros_like(gg))
        # suffix[t] = sum_{j >= t} log f_j; the weight of step k's write is suffix[k + 1].
        suffix = log_f.flip(0).cumsum(0).flip(0)
        after = torch.cat([suffix[1:], torch.zeros_like(suffix[:1])])
        return (after.exp() * write).sum(0) + suffix[0].exp() * hidden[1][0, rows]


def _bucket_of(lengths: torch.Tensor) -> torch.Tensor:
    """The padded path's bucket of each segment length: k for lengths in (2^(k-1), 2^k]."""
    return torch.ceil(torch.log2(lengths.double())).long()


class LSTMCore(_FusedRNNCore):
    """Stacked LSTM; state ``{"h": [B, L, H], "c": [B, L, H]}``."""

    _rnn_cls = nn.LSTM
    _state_keys = ("h", "c")

    def _cpu_path(self, lengths: torch.Tensor, T: int) -> str:
        """Padded, ragged or not: torch's CPU LSTM is one fused oneDNN kernel a call, and
        on MiniGrid's minibatches (4 sequences x 128 steps) a PPO update took 0.76 s
        padded against 0.87 s scanned (at 256 sequences the scan wins, 0.45 s against
        0.61 s: ``sequence_path="scan"`` takes it; docs/benchmarks.md)."""
        return "padded"

    def _scan_layer(self, layer: nn.LSTM, x, hidden: Hidden, keep):  # noqa: D102
        if keep is None:
            keep = x.new_ones(*x.shape[:2], 1)
        out, c = lstm_sequence(x, hidden[0], hidden[1], keep, layer.weight_ih_l0,
                               layer.weight_hh_l0, layer.bias_ih_l0, layer.bias_hh_l0)
        return out, (out[-1], c)


class GRUCore(_FusedRNNCore):
    """Stacked GRU; state ``{"h": [B, L, H]}``."""

    _rnn_cls = nn.GRU
    _state_keys = ("h",)
    # Whole-update times with no episode start inside the sequences (idle, 1 thread,
    # benchmarks/update_paths.py; docs/benchmarks.md): RepeatFirst 268 ms scanned against
    # 342 ms in torch's fused GRU, RepeatPrevious 277 / 343, NBack 300 / 319.
    _cpu_uncut_scan = True

    def _run_plain(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """An acting step (T = 1) without autograd on the CPU goes through the scan's C++
        step (``gru_step``): the formulas the training pass recomputes it with, and a step
        of Autoencode's 96 copies in 190 us against 225 us (idle, 1 thread); anything else
        takes torch's fused GRU."""
        if x.shape[0] == 1:
            y, finals = x[0], []
            for i, layer in enumerate(self.layers):
                y = gru_step(y, state["h"][:, i], layer.weight_ih_l0, layer.weight_hh_l0,
                             layer.bias_ih_l0, layer.bias_hh_l0)
                if y is None:  # the same for every layer: the first says so
                    return super()._run_plain(x, state)
                finals.append((y,))
            return y.unsqueeze(0), self._stack(finals)
        return super()._run_plain(x, state)

    def _scan_layer(self, layer: nn.GRU, x, hidden: Hidden, keep):  # noqa: D102
        out = gru_sequence(x, hidden[0], keep, layer.weight_ih_l0, layer.weight_hh_l0,
                           layer.bias_ih_l0, layer.bias_hh_l0)
        return out, (out[-1],)
