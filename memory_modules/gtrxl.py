"""GTrXL: gated Transformer-XL (Parisotto et al. 2019, "Stabilizing Transformers for RL").

Each layer keeps its own input over the last ``window`` steps as a sliding
cache. A query at step t attends, with pre-layer-norm multi-head attention, to
the cached steps and to the steps of the current sequence up to t itself,
never further back than ``window`` steps and never across an episode start.
GRU-type gates replace both residual connections; their update gate starts
biased towards the identity, so the untrained core passes its input through.

Positions are relative, as in Transformer-XL: the logit of query t and key s is
``(q + u) . k + (q + v) . W_r R[t - s]`` with ``R`` a sinusoidal table over the
distances 0..window. A distance depends only on the two steps, not on where
a sequence was cut, which is what keeps a sequence forward equal to the same
steps taken one at a time.

Gradient: the cache in the state holds activations of earlier forward calls,
stored detached (as in TrXL-PPO), so no gradient flows into the steps before
the current sequence; within a sequence gradients flow between all steps.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from memory_modules.attention import (
    PositionwiseMLP,
    last_reset_index,
    sinusoid_table,
    split_heads,
)
from memory_modules.base import MemoryCore, State


class GRUGate(nn.Module):
    """GTrXL's gated residual: ``g(x, y) = (1 - z) * x + z * tanh(W_g y + U_g (r * x))``.

    ``x`` is the residual stream, ``y`` the sublayer output. The update gate
    ``z`` starts near ``sigmoid(-bias)``, i.e. close to the identity map on ``x``.
    """

    def __init__(self, size: int, bias: float = 2.0):
        super().__init__()
        self.from_y = nn.Linear(size, 3 * size)  # W_r, W_z, W_g
        self.from_x = nn.Linear(size, 2 * size, bias=False)  # U_r, U_z
        self.from_rx = nn.Linear(size, size, bias=False)  # U_g
        with torch.no_grad():
            self.from_y.bias.zero_()
            self.from_y.bias[size : 2 * size].fill_(-bias)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        wr, wz, wg = self.from_y(y).chunk(3, dim=-1)
        ur, uz = self.from_x(x).chunk(2, dim=-1)
        r = torch.sigmoid(wr + ur)
        z = torch.sigmoid(wz + uz)
        h = torch.tanh(wg + self.from_rx(r * x))
        return x + z * (h - x)


class GTrXLLayer(nn.Module):
    read_recording = False  # set by the core's record_reads (videos only)

    def __init__(self, size: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm_attn = nn.LayerNorm(size)
        self.query = nn.Linear(size, size, bias=False)
        self.key_value = nn.Linear(size, 2 * size, bias=False)
        self.position = nn.Linear(size, size, bias=False)  # W_r, applied to the sinusoid table
        head = size // num_heads
        self.content_bias = nn.Parameter(torch.zeros(num_heads, head))  # u
        self.position_bias = nn.Parameter(torch.zeros(num_heads, head))  # v
        self.out = nn.Linear(size, size)
        self.gate_attn = GRUGate(size)
        self.norm_mlp = nn.LayerNorm(size)
        self.mlp = PositionwiseMLP(size)
        self.gate_mlp = GRUGate(size)

    def forward(
        self,
        h: torch.Tensor,
        cache: torch.Tensor,
        visible: torch.Tensor,
        distance: torch.Tensor,
        table: torch.Tensor,
        cached_kv: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """h [B, T, H]; cache [B, W, H]; visible [B, T, W+T]; distance [T, W+T] in 0..W;
        table [W+1, H] sinusoids; ``cached_kv`` [B, W, 2H]: the cache's keys and values
        as this layer computes them now (or None: computed here). Returns the layer
        output, [cache; h] (the raw keys) and the keys and values of all W+T steps."""
        B, T, H = h.shape
        W = cache.shape[1]
        nh = self.num_heads
        raw = torch.cat([cache, h], dim=1)
        if cached_kv is None:
            normed = self.norm_attn(raw)
            kv = self.key_value(normed)
            normed = normed[:, W:]
        else:  # only the new steps go through the projections
            normed = self.norm_attn(h)
            kv = torch.cat([cached_kv, self.key_value(normed)], dim=1)
        q = split_heads(self.query(normed), nh)  # [B, T, nh, d]
        k, v = (split_heads(z, nh) for z in kv.chunk(2, dim=-1))
        content = torch.einsum("bthd,bshd->bhts", q + self.content_bias, k)
        # (q + v) . (W_r R[n]) == ((q + v) W_r) . R[n]: project the T queries
        # instead of the W+1 table rows, which is what makes the acting step cheap.
        w_r = self.position.weight.view(nh, H // nh, H)
        q_pos = torch.einsum("bthd,hdk->bhtk", q + self.position_bias, w_r)
        by_distance = torch.einsum("bhtk,nk->bhtn", q_pos, table)  # [B, nh, T, W+1]
        position = by_distance.gather(3, distance.expand(B, nh, T, W + T))
        logits = (content + position) * (1.0 / math.sqrt(H // nh))
        logits = logits.masked_fill(~visible[:, None], float("-inf"))
        probs = logits.softmax(-1)
        if self.read_recording:  # the last query's attention, heads averaged (videos only)
            self.last_probs = probs[:, :, -1].mean(1)  # [B, W+T]
        att = torch.einsum("bhts,bshd->bthd", probs, v).reshape(B, T, H)
        h = self.gate_attn(h, torch.relu(self.out(att)))
        h = self.gate_mlp(h, torch.relu(self.mlp(self.norm_mlp(h))))
        return h, raw, kv


class GTrXLCore(MemoryCore):
    """Gated Transformer-XL over a sliding window of ``window`` cached steps per layer.

    State: ``cache{l}`` [B, window, hidden] (layer l's input at the last
    ``window`` steps, oldest first, zero where invalid), ``valid``
    [B, window] (which cached steps belong to the current episode), and the
    cached steps' keys and values: ``kv{l}`` [B, window, 2 * hidden] (zero where
    invalid) with ``kv_params`` [B] (float64), a checksum of the parameters that
    computed them. Cached activations are stored detached: no gradient reaches
    steps from an earlier forward call. The receptive field of the stack is
    ``num_layers * window`` steps, since layer l's cache holds outputs of layer l-1.

    Keys and values: a step's are a function of its cached input and of the layer's
    norm and key/value weights only, so an acting step (one step, no gradient, on the
    CPU) projects only its own input and reads the cached steps' from ``kv{l}``,
    instead of projecting all window + 1 of them again (65x the work at the default
    window). It does so only while ``kv_params`` equals the checksum of the current
    weights (a dot product with a fixed random vector, in float64), so after any
    change of the weights (an optimizer step, a loaded state dict, a weight copy from
    another process) the first step projects the whole cache again, exactly as
    before. Elsewhere (sequences, gradients, CUDA, where reading the checksum would be
    a host sync) every step is projected as before; the outputs are the same either way
    to float rounding.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int = 128,
        num_layers: int = 2,
        num_heads: int = 4,
        window: int = 64,
    ):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.input_size = input_size
        self.output_size = hidden_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.window = window
        self.embed = nn.Linear(input_size, hidden_size)
        self.layers = nn.ModuleList(GTrXLLayer(hidden_size, num_heads) for _ in range(num_layers))
        self.norm_out = nn.LayerNorm(hidden_size)
        self.register_buffer(
            "table", sinusoid_table(torch.arange(window + 1), hidden_size), persistent=False
        )
        self._probe: torch.Tensor | None = None  # the checksum's random vector

    def derived_state_keys(self) -> tuple[str, ...]:
        return (*(f"kv{i}" for i in range(self.num_layers)), "kv_params")

    def _kv_weights(self) -> list[torch.Tensor]:
        """The parameters a step's keys and values depend on, besides its input."""
        return [p for layer in self.layers
                for p in (layer.norm_attn.weight, layer.norm_attn.bias, layer.key_value.weight)]

    def _kv_checksum(self) -> float:
        """A float64 fingerprint of the key/value weights (CPU: no host sync)."""
        flat = torch.cat([p.detach().reshape(-1) for p in self._kv_weights()]).double()
        if self._probe is None or self._probe.shape != flat.shape:
            gen = torch.Generator().manual_seed(0)
            self._probe = torch.rand(flat.shape, generator=gen, dtype=torch.float64) + 0.5
        return float(flat @ self._probe)

    @property
    def context_length(self) -> int:
        # Each layer reaches window steps further back through the previous layer's cache.
        return self.num_layers * self.window + 1

    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        dtype = self.embed.weight.dtype
        state = {
            f"cache{i}": torch.zeros(batch_size, self.window, self.hidden_size, device=device, dtype=dtype)
            for i in range(self.num_layers)
        }
        for i in range(self.num_layers):
            state[f"kv{i}"] = torch.zeros(batch_size, self.window, 2 * self.hidden_size,
                                          device=device, dtype=dtype)
        state["valid"] = torch.zeros(batch_size, self.window, dtype=torch.bool, device=device)
        # NaN equals nothing: a fresh state's keys and values are projected at its first step
        state["kv_params"] = torch.full((batch_size,), math.nan, device=device, dtype=torch.float64)
        return state

    def forward(self, x, state, episode_starts, reuse_state=False, need_state=True):
        self.check_inputs(x, episode_starts)
        T, B, _ = x.shape
        W = self.window
        dev = x.device
        starts = episode_starts.t()  # [B, T]
        reset_at = last_reset_index(starts)  # [B, T]
        fresh = reset_at < 0  # no episode start in this sequence up to t

        # Key u in [cache; sequence] is the step u - W relative to the sequence start.
        key_step = torch.arange(W + T, device=dev) - W
        query_step = torch.arange(T, device=dev)
        gap = query_step[:, None] - key_step[None, :]  # [T, W+T]
        in_window = (gap >= 0) & (gap <= W)
        key_valid = torch.cat([state["valid"], torch.ones(B, T, dtype=torch.bool, device=dev)], 1)
        same_episode = torch.where(
            key_step >= 0,
            key_step[None, None, :] >= reset_at[:, :, None],
            key_valid[:, None, :] & fresh[:, :, None],
        )
        visible = in_window[None] & same_episode  # [B, T, W+T]
        distance = gap.clamp(0, W)

        # Validity of the new cache (the last W keys) as seen from after step T-1.
        tail_step = key_step[T:]
        new_valid = torch.where(
            tail_step >= 0,
            tail_step[None, :] >= reset_at[:, -1:],
            key_valid[:, T:] & fresh[:, -1:],
        )

        # The cached steps' keys and values can be read rather than computed (see the class
        # docstring) on an acting step on the CPU whose state's checksum is the weights'.
        checksum = math.nan
        if dev.type == "cpu":
            checksum = self._kv_checksum()
        reuse = (T == 1 and dev.type == "cpu" and not torch.is_grad_enabled()
                 and all(k in state for k in self.derived_state_keys())
                 and bool((state["kv_params"] == checksum).all()))

        # Invalid rows of the new state are zero. On a step that reads the cached keys the
        # state's invalid rows already are, so only the rows of an env whose episode starts
        # now (its cached steps are of the last episode) turn invalid: those alone are zeroed.
        restarted = starts[:, 0].nonzero().squeeze(1) if reuse else None

        h = self.embed(x).transpose(0, 1)  # [B, T, H]
        new_state: State = {}
        for i, layer in enumerate(self.layers):
            h, raw, kv = layer(h, state[f"cache{i}"], visible, distance, self.table,
                               state[f"kv{i}"] if reuse else None)
            invalid = ~new_valid[..., None]
            for key, full in ((f"cache{i}", raw), (f"kv{i}", kv)):
                # Without autograd, the layer's own fresh buffer is zeroed in place and its
                # last W rows kept (a view): no copy of the cache beyond the layer's own.
                tail = full[:, T:]
                if full.requires_grad:
                    tail = tail.detach().masked_fill(invalid, 0.0)
                elif restarted is not None:
                    tail[restarted, : W - 1] = 0.0  # all but the new step, of the last episode
                else:
                    tail.masked_fill_(invalid, 0.0)
                new_state[key] = tail
        new_state["valid"] = new_valid
        new_state["kv_params"] = torch.full((B,), checksum, device=dev, dtype=torch.float64)
        if self.read_recording:
            # The last query (step T-1) sees keys T-1 .. W+T-1, i.e. W .. 0 steps back.
            weights = torch.stack([layer.last_probs[:, T - 1 :].flip(-1) for layer in self.layers], 1)
            rows = [f"layer {i}" for i in range(self.num_layers)]
            self.keep_read("steps", weights, rows, stored=visible[:, -1, T - 1 :].flip(-1))
        return self.norm_out(h).transpose(0, 1), new_state
