"""Relational memory core (Santoro et al. 2018, "Relational recurrent neural networks").

Follows Sonnet 1 ``relational_memory.py``. The memory M is ``mem_slots`` rows of
``mem_size = head_size * num_heads`` features. One step, with input x_t:

    u      = W_in x_t + b_in                              the input as one extra row
    P      = [M; u]                                       (N + 1) x S
    repeat num_blocks times (block k has its own qkv projection and layer norms):
        q, k, v = split_heads(LN_qkv(W_qkv P))            LN_qkv as in Sonnet
        A       = concat_h softmax(q_h k_h^T / sqrt(d)) v_h
        P       = LN_1(P + A)
        P       = LN_2(P + MLP(P))
    M~     = P[:N]                                        drop the input row
    i, f   = split(W_gm tanh(M) + b_gm + W_gu u + b_gu)   per slot; gate_style below
    M'     = sigmoid(i + input_bias) * tanh(M~) + sigmoid(f + forget_bias) * M
    y_t    = flatten(M')                                  output_size = N * S

Every layer norm normalises one row (one slot) over its S features, never the
whole matrix, so one slot's values cannot shift another slot's normalisation.
``MLP`` is ``attention_mlp_layers`` linear layers, each with its own weight, ReLU
between them (none after the last). As in Sonnet, that MLP is shared by the
blocks, while each block's attention projection and layer norms are its own.

``gate_style="unit"`` gives each slot a gate per feature; ``"memory"`` one
scalar gate per slot. input_bias = 0, forget_bias = 1 (Sonnet's defaults).

The initial memory is Sonnet's fixed identity: row n is the unit vector e_n,
padded with zeros (mem_size > mem_slots) or truncated (mem_size < mem_slots).
An episode start resets a row to that constant, so the reset value never
depends on the past.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from memory_modules.base import MemoryCore, State

GATE_STYLES = ("unit", "memory")


class _AttentionBlock(nn.Module):
    """Multi-head attention across rows, then the shared row-wise MLP; residual + LN per row."""
    read_recording = False  # set by the core's record_reads (videos only)


    def __init__(self, mem_size: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(mem_size, 3 * mem_size)
        self.qkv_norm = nn.LayerNorm(3 * mem_size)
        self.attn_norm = nn.LayerNorm(mem_size)
        self.mlp_norm = nn.LayerNorm(mem_size)

    def forward(self, rows: torch.Tensor, mlp: nn.Module) -> torch.Tensor:
        b, n, s = rows.shape
        h = self.num_heads
        qkv = self.qkv_norm(self.qkv(rows))  # [B, n, 3S]
        # [B, n, 3, H, d] -> [3, B, H, n, d]
        q, k, v = qkv.view(b, n, 3, h, s // h).permute(2, 0, 3, 1, 4)
        if self.read_recording:  # the same attention with its weights kept (videos only)
            probs = (q @ k.transpose(-1, -2) * (1.0 / math.sqrt(s // h))).softmax(-1)
            self.last_probs = probs[:, :, :-1].mean((1, 2))  # slots' queries: [B, n]
            attended = probs @ v
        else:
            attended = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(d)
        attended = attended.transpose(1, 2).reshape(b, n, s)
        rows = self.attn_norm(rows + attended)
        return self.mlp_norm(rows + mlp(rows))


class _RowMLP(nn.Module):
    """``num_layers`` separate linear layers of width S, ReLU between them."""

    def __init__(self, size: int, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(size, size) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            if i:
                x = F.relu(x)
            x = layer(x)
        return x


class RMCCore(MemoryCore):
    context_length = math.inf

    def __init__(
        self,
        input_size: int,
        mem_slots: int = 4,
        head_size: int = 32,
        num_heads: int = 4,
        num_blocks: int = 1,
        gate_style: str = "unit",
        attention_mlp_layers: int = 2,
    ):
        super().__init__()
        if gate_style not in GATE_STYLES:
            raise ValueError(
                f"gate_style {gate_style!r} is not supported; accepted: {', '.join(GATE_STYLES)}"
            )
        for name, value in (
            ("mem_slots", mem_slots),
            ("head_size", head_size),
            ("num_heads", num_heads),
            ("num_blocks", num_blocks),
            ("attention_mlp_layers", attention_mlp_layers),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.input_size = input_size
        self.mem_slots = mem_slots
        self.mem_size = head_size * num_heads
        self.output_size = mem_slots * self.mem_size
        self.gate_style = gate_style
        self.input_bias = 0.0
        self.forget_bias = 1.0
        self.gate_size = self.mem_size if gate_style == "unit" else 1

        self.input_proj = nn.Linear(input_size, self.mem_size)
        self.blocks = nn.ModuleList(_AttentionBlock(self.mem_size, num_heads) for _ in range(num_blocks))
        self.mlp = _RowMLP(self.mem_size, attention_mlp_layers)
        self.gate_input = nn.Linear(self.mem_size, 2 * self.gate_size)
        self.gate_memory = nn.Linear(self.mem_size, 2 * self.gate_size)

        init = torch.eye(mem_slots, max(mem_slots, self.mem_size))[:, : self.mem_size]
        self.register_buffer("initial_memory", init, persistent=False)

    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        memory = self.initial_memory.to(device).expand(batch_size, -1, -1).clone()
        return {"memory": memory}

    def step(self, u: torch.Tensor, gate_u: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """One update from the projected input ``u`` [B, S] and its gate term [B, 2G]."""
        rows = torch.cat([memory, u.unsqueeze(1)], dim=1)
        for block in self.blocks:
            rows = block(rows, self.mlp)
        candidate = rows[:, :-1]
        gates = self.gate_memory(torch.tanh(memory)) + gate_u.unsqueeze(1)
        i, f = gates.chunk(2, dim=-1)
        return (
            torch.sigmoid(i + self.input_bias) * torch.tanh(candidate)
            + torch.sigmoid(f + self.forget_bias) * memory
        )

    def forward(self, x, state, episode_starts, reuse_state=False, need_state=True):
        self.check_inputs(x, episode_starts)
        T, B = x.shape[:2]
        if T == 0:
            return x.new_zeros(0, B, self.output_size), state
        # Everything that depends on the input alone is computed for all steps at once.
        u = self.input_proj(x)  # [T, B, S]
        gate_u = self.gate_input(u)  # [T, B, 2G]
        initial = self.initial_memory.to(dtype=x.dtype)
        memory = state["memory"]
        outputs = []
        for t in range(T):
            before = memory = torch.where(episode_starts[t].view(B, 1, 1), initial, memory)
            memory = self.step(u[t], gate_u[t], memory)
            outputs.append(memory)
        if self.read_recording:
            self._keep_slot_read(before, memory)
        y = torch.stack(outputs).flatten(2)  # [T, B, N * S]
        return y, {"memory": memory}

    def _keep_slot_read(self, before: torch.Tensor, after: torch.Tensor) -> None:
        """Per block, the slots' attention over [slots; input]; then how much each slot moved."""
        moved = (after - before).pow(2).mean(-1).sqrt()  # [B, N]
        moved = torch.cat([moved, moved.new_zeros(moved.shape[0], 1)], 1)
        rows = [block.last_probs for block in self.blocks] + [moved]
        names = [f"attend {i}" for i in range(len(self.blocks))] + ["write"]
        columns = [str(n) for n in range(self.mem_slots)] + ["in"]
        self.keep_read("slots", torch.stack(rows, 1), names, columns=columns)
