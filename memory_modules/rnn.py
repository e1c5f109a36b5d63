"""LSTM and GRU cores on torch's fused recurrent kernels (cuDNN on GPU).

The state is batch-first: ``{"h": [B, L, H], "c": [B, L, H]}`` for the LSTM and
``{"h": [B, L, H]}`` for the GRU, ``L`` being the number of layers.

Acting (``T == 1``) masks the state of envs whose episode starts and takes one
fused step. Training (``T > 1``) never loops over time in Python: every env's
sequence is cut at its episode starts into segments, and all segments of all
envs run as one packed batch through the fused RNN. An env's first segment
starts from the stored state, every later one from zeros; outputs are scattered
back to ``[T, B]`` and the final state is read from each env's last segment.
All segment bookkeeping is vectorised index arithmetic on the input's device.

The bias of the gate that retains the state starts at +2 (see ``RETAIN_BIAS``),
the usual forget-gate bias trick, so memory lasts across long delays from the start.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from memory_modules.base import MemoryCore, State, reset_state

# Added to the retain gate's bias at init (see _FusedRNNCore._init_retain_bias). With
# torch's default init (bias ~ 0) an LSTM/GRU did not learn the delay-32 recall test in
# 1500 updates; a shift of 1 was still too little, 2 learned it in 200-450 updates.
RETAIN_BIAS = 2.0


class _FusedRNNCore(MemoryCore):
    """Shared logic of the LSTM and GRU cores; subclasses name the module and state keys."""

    _rnn_cls: type[nn.RNNBase]
    _state_keys: tuple[str, ...]

    def __init__(self, input_size: int, hidden_size: int = 128, num_layers: int = 1):
        super().__init__()
        if hidden_size < 1 or num_layers < 1:
            raise ValueError(
                f"hidden_size and num_layers must be positive, got {hidden_size}, {num_layers}"
            )
        self.input_size = input_size
        self.output_size = hidden_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        # Time-major, as the core's inputs are [T, B, D].
        self.rnn = self._rnn_cls(input_size, hidden_size, num_layers)
        self._init_retain_bias()

    def _init_retain_bias(self) -> None:
        """Shift the bias of the gate that keeps the old state (LSTM forget gate, GRU update
        gate) by ``RETAIN_BIAS``: at init the cell then keeps ~88% of its state per step
        instead of ~50%, so gradients reach across long delays. Both gates are the second
        block of torch's gate layout (LSTM: i, f, g, o; GRU: r, z, n)."""
        H = self.hidden_size
        with torch.no_grad():
            for layer in range(self.num_layers):
                getattr(self.rnn, f"bias_ih_l{layer}")[H : 2 * H] += RETAIN_BIAS

    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        dtype = self.rnn.weight_ih_l0.dtype
        shape = (batch_size, self.num_layers, self.hidden_size)
        return {k: torch.zeros(shape, device=device, dtype=dtype) for k in self._state_keys}

    # -- conversion between the batch-first state and torch's [L, B, H] hx ------------------

    def _to_hx(self, state: State):
        hs = tuple(state[k].transpose(0, 1).contiguous() for k in self._state_keys)
        return hs if len(hs) > 1 else hs[0]

    def _from_hx(self, hx, rows: torch.Tensor | None = None) -> State:
        hs = hx if isinstance(hx, tuple) else (hx,)
        out = {}
        for k, h in zip(self._state_keys, hs, strict=True):
            h = h.transpose(0, 1)  # [N, L, H]
            out[k] = (h if rows is None else h[rows]).contiguous()
        return out

    # -- forward -------------------------------------------------------------------------------

    def forward(
        self, x: torch.Tensor, state: State, episode_starts: torch.Tensor
    ) -> tuple[torch.Tensor, State]:
        self.check_inputs(x, episode_starts)
        T, B, _ = x.shape
        if T == 0:  # an empty sequence reads nothing and leaves the state as it is
            return x.new_zeros(0, B, self.output_size), state
        starts = episode_starts.to(device=x.device, dtype=torch.bool)
        # A start at step 0 resets the stored state; both paths begin from this state.
        state = reset_state(state, starts[0])
        if T == 1:
            y, hx = self.rnn(x, self._to_hx(state))
            return y, self._from_hx(hx)
        return self._forward_sequence(x, state, starts)

    def _forward_sequence(
        self, x: torch.Tensor, state: State, starts: torch.Tensor
    ) -> tuple[torch.Tensor, State]:
        T, B, D = x.shape
        device = x.device
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

        # Segment lengths in a fixed-size buffer (at most T * B segments) so nothing syncs
        # until here. Packing needs the lengths on the CPU: this copy is the one host sync
        # of the sequence path, and it cannot be avoided with packed sequences.
        lengths = torch.zeros(T * B, dtype=torch.long, device=device)
        lengths.scatter_add_(0, seg.reshape(-1), torch.ones(T * B, dtype=torch.long, device=device))
        lengths = lengths.cpu()
        n_total = int((lengths > 0).sum())  # segments are numbered 0..n_total-1, none empty

        if n_total == B:
            # No episode starts inside the sequence: one plain fused pass, no packing.
            y, hx = self.rnn(x, self._to_hx(state))
            return y, self._from_hx(hx)

        lengths = lengths[:n_total]
        padded = x.new_zeros(int(lengths.max()), n_total, D).index_put((pos, seg), x)
        # Initial states: zeros, except each env's first segment takes its stored state.
        h0 = {}
        for k in self._state_keys:
            v = state[k]
            h0[k] = v.new_zeros(n_total, *v.shape[1:]).index_put((first,), v)
        packed = pack_padded_sequence(padded, lengths, enforce_sorted=False)
        out, hx = self.rnn(packed, self._to_hx(h0))  # hx comes back in segment order
        out, _ = pad_packed_sequence(out, total_length=padded.shape[0])  # [L_max, S, H]
        return out[pos, seg], self._from_hx(hx, rows=last)


class LSTMCore(_FusedRNNCore):
    """Stacked LSTM; state ``{"h": [B, L, H], "c": [B, L, H]}``."""

    _rnn_cls = nn.LSTM
    _state_keys = ("h", "c")


class GRUCore(_FusedRNNCore):
    """Stacked GRU; state ``{"h": [B, L, H]}``."""

    _rnn_cls = nn.GRU
    _state_keys = ("h",)
