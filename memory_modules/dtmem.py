"""DT-Mem working memory (Kang et al. 2023, "Think Before You Act: Decision
Transformers with Working Memory"), made strictly causal and recurrent.

A memory M of ``mem_slots`` rows of ``hidden_size`` features is written by
attention from each incoming token, with LSTM-like input and forget gates, and
read back by attention from the token. Per step t, for token x_t:

    e_t  = W_e x_t + b_e                                   embedding, [H]

    WRITE (sees e_t and M_{t-1} only, so step t never sees a later token)
    P    = [M_{t-1}; e_t]                                  (N + 1) x H
    c    = concat_h softmax(q_h k_h^T / sqrt(d)) v_h,      q = M_{t-1} W_q^w,
                                                           k = P W_k^w, v = P W_v^w
    A    = LN_1(M_{t-1} + c)
    M~   = LN_2(A + W_2 relu(W_1 A + b_1) + b_2)           candidate, per slot
    i, f = split(W_gm tanh(M_{t-1}) + W_ge e_t + b_g)      one gate per slot feature
    M_t  = sigmoid(f + 1) * M_{t-1} + sigmoid(i) * tanh(M~)

    READ (from the updated memory)
    q    = e_t W_q^r,   K = M_t W_k^r,   V = M_t W_v^r
    r_t  = W_r concat_h softmax(q_h K_h^T / sqrt(d)) V_h + b_r
    y_t  = LN_o(W_o [e_t; r_t] + b_o)                      output, [H]

All layer norms are per row (per slot, or per token) over H features. In the
write, each slot's softmax runs over the N slots and the token: the weight a
slot gives the token is its content-based write address (how much of the token
goes into that slot's candidate; the rest is content gathered from the slots).
The forget gate then decides how much of M_{t-1} survives and the input gate
how much of the candidate enters.

Differences from the paper's public code, on purpose:

- There the slots attend over the whole context window at once and the gates
  read the window's mean, so a token's write sees later tokens. Here each token
  writes once, in order, so the output at step t depends on steps <= t only.
  With a single token as the only key the softmax would be the constant 1, which
  is why the slots are keys too (as in RMC, which the paper's memory is built on).
- The memory is the recurrent state: it is carried from one call to the next
  (one context window to the next) until an episode start resets it, so a model
  with a short context can still recall across a long delay.
- Separate projections for write and read, and separate MLP weights.

The initial memory M_0 is a learned [N, H] parameter (distinct rows, so the
slots are not interchangeable); an episode start resets env b's memory to M_0
before its step t is written or read. ``initial_state`` returns a detached copy
of M_0 so a rollout can store it.

``embed`` / ``write`` / ``read`` are exposed separately: ``write`` runs the
recurrence and returns the memory after each step, ``read`` is one parallel
attention over those memories, so a caller can reuse either half.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from memory_modules.base import MemoryCore, State


class DTMemCore(MemoryCore):
    context_length = math.inf

    def __init__(
        self, input_size: int, hidden_size: int = 128, mem_slots: int = 8, num_heads: int = 4
    ):
        super().__init__()
        for name, value in (
            ("hidden_size", hidden_size),
            ("mem_slots", mem_slots),
            ("num_heads", num_heads),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if hidden_size % num_heads:
            raise ValueError(
                f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})"
            )
        self.input_size = input_size
        self.output_size = hidden_size
        self.hidden_size = hidden_size
        self.mem_slots = mem_slots
        self.num_heads = num_heads
        self.forget_bias = 1.0
        H = hidden_size

        self.embed_proj = nn.Linear(input_size, H)
        # write
        self.write_qkv = nn.Linear(H, 3 * H)  # [q | k | v]; the token uses only k, v
        self.write_norm = nn.LayerNorm(H)
        self.write_mlp = nn.Sequential(nn.Linear(H, H), nn.ReLU(), nn.Linear(H, H))
        self.write_mlp_norm = nn.LayerNorm(H)
        self.gate_embed = nn.Linear(H, 2 * H)  # holds the gate bias b_g: [input | forget]
        self.gate_memory = nn.Linear(H, 2 * H, bias=False)
        # read
        self.read_q = nn.Linear(H, H)
        self.read_kv = nn.Linear(H, 2 * H)
        self.read_out = nn.Linear(H, H)
        self.out_proj = nn.Linear(2 * H, H)
        self.out_norm = nn.LayerNorm(H)

        self.initial_memory = nn.Parameter(torch.randn(mem_slots, H) / H**0.5)

    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        memory = self.initial_memory.detach().to(device).expand(batch_size, -1, -1).clone()
        return {"memory": memory}

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """[..., n, H] -> [..., heads, n, H / heads]"""
        *lead, n, _ = x.shape
        return x.view(*lead, n, self.num_heads, -1).transpose(-3, -2)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        """[..., heads, n, d] -> [..., n, heads * d]"""
        return x.transpose(-3, -2).flatten(-2)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed_proj(x)

    def write(
        self, e: torch.Tensor, memory: torch.Tensor, episode_starts: torch.Tensor
    ) -> torch.Tensor:
        """Write embeddings e [T, B, H] in order; returns M_1..M_T as [T, B, N, H]."""
        T, B = e.shape[:2]
        # Token-only terms for all steps at once; only the memory terms wait for the loop.
        H = self.hidden_size
        w_kv, b_kv = self.write_qkv.weight[H:], self.write_qkv.bias[H:]
        k_e, v_e = F.linear(e, w_kv, b_kv).chunk(2, dim=-1)  # [T, B, H] each
        k_e = self._heads(k_e.unsqueeze(2))  # [T, B, heads, 1, d]
        v_e = self._heads(v_e.unsqueeze(2))
        gate_e = self.gate_embed(e).unsqueeze(2)  # [T, B, 1, 2H]
        initial = self.initial_memory.to(dtype=e.dtype)
        memories = []
        for t in range(T):
            memory = torch.where(episode_starts[t].view(B, 1, 1), initial, memory)
            q, k_m, v_m = self.write_qkv(memory).chunk(3, dim=-1)
            q = self._heads(q)  # [B, heads, N, d]
            k = torch.cat([self._heads(k_m), k_e[t]], dim=-2)  # [B, heads, N + 1, d]
            v = torch.cat([self._heads(v_m), v_e[t]], dim=-2)
            c = self._merge(F.scaled_dot_product_attention(q, k, v))  # [B, N, H]
            a = self.write_norm(memory + c)
            candidate = self.write_mlp_norm(a + self.write_mlp(a))
            i, f = (self.gate_memory(torch.tanh(memory)) + gate_e[t]).chunk(2, dim=-1)
            memory = torch.sigmoid(f + self.forget_bias) * memory + torch.sigmoid(i) * torch.tanh(
                candidate
            )
            memories.append(memory)
        return torch.stack(memories)

    def read(self, e: torch.Tensor, memories: torch.Tensor) -> torch.Tensor:
        """Each embedding e[t] [T, B, H] attends over its memory memories[t] [T, B, N, H]."""
        q = self._heads(self.read_q(e).unsqueeze(2))  # [T, B, heads, 1, d]
        k, v = self.read_kv(memories).chunk(2, dim=-1)
        k, v = self._heads(k), self._heads(v)
        if self.read_recording:  # the same attention with its weights kept (videos only)
            probs = (q @ k.transpose(-1, -2) * (1.0 / math.sqrt(q.shape[-1]))).softmax(-1)
            self.read_trace = probs[..., 0, :].mean(-2)  # every token's read: [T, B, N]
            r = self._merge(probs @ v)
        else:
            r = self._merge(F.scaled_dot_product_attention(q, k, v))
        r = self.read_out(r.squeeze(2))  # [T, B, H]
        return self.out_norm(self.out_proj(torch.cat([e, r], dim=-1)))

    def forward(self, x, state, episode_starts, reuse_state=False, need_state=True):
        self.check_inputs(x, episode_starts)
        if x.shape[0] == 0:
            return x.new_zeros(0, x.shape[1], self.output_size), state
        e = self.embed(x)
        memories = self.write(e, state["memory"], episode_starts)
        y = self.read(e, memories)
        if self.read_recording:
            before = memories[-2] if x.shape[0] > 1 else state["memory"]
            initial = self.initial_memory.to(dtype=x.dtype)
            before = torch.where(episode_starts[-1].view(-1, 1, 1), initial, before)
            moved = (memories[-1] - before).pow(2).mean(-1).sqrt()  # [B, N]
            self.keep_read("slots", torch.stack([self.read_trace[-1], moved], 1), ["read", "write"],
                           columns=[str(n) for n in range(self.mem_slots)])
        return y, {"memory": memories[-1]}
