"""Decision transformer, optionally with the DT-Mem working memory in every block.

Each step t of an episode gives three tokens, in this order: return-to-go R_t,
observation o_t, action a_t (each embedding plus a learned timestep
embedding). The blocks are GPT blocks with causal self-attention over the
3K tokens of a window of K steps; the action a_t is predicted from the output
at the o_t token, so it sees R_<=t, o_<=t and a_<t only.

``memory=True`` (DT-Mem) adds, in every block after self-attention, a residual
branch through a :class:`memory_modules.dtmem.DTMemCore`: the observation
tokens are written into the memory one step after another (the core's own
gated, causal write), and every token reads the memory by attention:
R_t reads the memory written up to step t-1, o_t and a_t the memory written
up to step t (so the model stays causal). The memory is the recurrent state:
a window starts from the memory the previous window of the episode left, so
a model whose attention sees at most K steps can recall across a much longer
delay. ``memory=False`` is the plain DT with the same context.

Timestep embedding: ``timestep="episode"`` (the usual DT) embeds the step's index in
the episode; ``timestep="window"`` its place in the window (0..K-1), so nothing in
the model depends on how far into the episode a window lies: what is learnt on
short episodes applies unchanged to long ones, with the memory alone carrying
what came before the window (as in recurrent-memory transformers).

Windows: the memory model cuts an episode into consecutive aligned windows
[0, K), [K, 2K), ... (training and acting alike: at step t it attends over the
steps since the last window boundary and reads the memory carried in). The
plain DT uses the usual sliding window of the last K steps.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import torch
from torch import nn
from torch.nn import functional as F

from agents.common.encoders import make_encoder
from memory_modules.dtmem import DTMemCore

MemState = list[torch.Tensor]  # one [B, N, H] memory per block


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(y.transpose(1, 2).reshape(B, L, D))


class MemoryBranch(nn.Module):
    """DTMemCore used inside a block: write the observation tokens, read from every token."""

    def __init__(self, d_model: int, hidden_size: int, mem_slots: int, num_heads: int,
                 horizon: int = 64):
        super().__init__()
        self.core = DTMemCore(d_model, hidden_size, mem_slots, num_heads)
        self.out = nn.Linear(hidden_size, d_model)
        self.chrono_init(horizon)

    @torch.no_grad()
    def chrono_init(self, horizon: int) -> None:
        """Gate biases for retention times spread over 1..horizon steps (Tallec & Ollivier's
        chrono initialisation): forget logit log(u), input logit -log(u), u ~ U(1, horizon - 1).

        The core's default (forget logit 1, sigmoid 0.73 per step) keeps 0.73^64 ~ 1e-9 of a
        cue after a 64-step delay, so neither the cue nor its gradient crosses the delay and
        the gates never learn to hold it; here some features start with retention ~ horizon.
        """
        core, H = self.core, self.core.hidden_size
        u = torch.empty(H, device=core.gate_embed.bias.device).uniform_(1.0, max(horizon - 1, 2))
        core.gate_embed.bias[:H] = -u.log()
        core.gate_embed.bias[H:] = u.log() - core.forget_bias

    def initial_state(self, batch_size: int, device) -> torch.Tensor:
        return self.core.initial_state(batch_size, device)["memory"]

    def forward(
        self, h: torch.Tensor, memory: torch.Tensor, starts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """h [B, 3T, D] (tokens R, o, a per step), memory [B, N, H], starts [B] (reset first).

        Returns the branch output [B, 3T, D] and the memory after each step [T, B, N, H].
        """
        B, L, _ = h.shape
        T = L // 3
        core = self.core
        memory = torch.where(starts.view(B, 1, 1), core.initial_memory.to(h.dtype), memory)
        e = core.embed(h).transpose(0, 1)  # [3T, B, H]
        no_starts = torch.zeros(T, B, dtype=torch.bool, device=h.device)
        after = core.write(e[1::3], memory, no_starts)  # [T, B, N, H]: after writing o_t
        before = torch.cat([memory[None], after[:-1]])  # memory before step t
        # Token order R_t, o_t, a_t -> memories before_t, after_t, after_t.
        read_from = torch.stack([before, after, after], dim=1).flatten(0, 1)  # [3T, B, N, H]
        y = core.read(e, read_from)  # [3T, B, H]
        return self.out(y.transpose(0, 1)), after


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float, memory: dict | None):
        super().__init__()
        self.ln_attn = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads, dropout)
        self.memory = None
        if memory is not None:
            self.ln_mem = nn.LayerNorm(d_model)
            self.memory = MemoryBranch(d_model, **memory)
        self.ln_mlp = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x, memory, starts):
        x = x + self.drop(self.attn(self.ln_attn(x)))
        trace = None
        if self.memory is not None:
            y, trace = self.memory(self.ln_mem(x), memory, starts)
            x = x + self.drop(y)
        x = x + self.drop(self.mlp(self.ln_mlp(x)))
        return x, trace


MEMORY_KEYS = ("hidden_size", "mem_slots", "num_heads")
TIMESTEP_CHOICES = ("episode", "window")


class DecisionTransformer(nn.Module):
    """See the module docstring. ``spec`` (from :meth:`spec`) rebuilds the same model."""

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        context: int = 16,
        d_model: int = 64,
        n_layers: int = 2,
        n_heads: int = 4,
        dropout: float = 0.1,
        max_timestep: int = 1024,
        memory: bool = True,
        memory_cfg: dict[str, Any] | None = None,
        embed_dim: int = 16,
        timestep: str = "episode",
    ):
        super().__init__()
        if timestep not in TIMESTEP_CHOICES:
            raise ValueError(f"timestep={timestep!r}; accepted: {', '.join(TIMESTEP_CHOICES)}")
        if not isinstance(action_space, gym.spaces.Discrete):
            raise ValueError(f"the decision transformer needs a Discrete action space, got {action_space}")
        for name, value in (("context", context), ("d_model", d_model), ("n_layers", n_layers),
                            ("n_heads", n_heads), ("max_timestep", max_timestep)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        memory_cfg = dict(memory_cfg or {})
        unknown = sorted(set(memory_cfg) - set(MEMORY_KEYS))
        if unknown:
            raise ValueError(f"unknown memory option(s) {unknown}; accepted: {list(MEMORY_KEYS)}")
        self._spec = {
            "observation_space": observation_space, "action_space": action_space,
            "context": context, "d_model": d_model, "n_layers": n_layers, "n_heads": n_heads,
            "dropout": dropout, "max_timestep": max_timestep, "memory": bool(memory),
            "memory_cfg": memory_cfg, "embed_dim": embed_dim, "timestep": timestep,
        }
        self.timestep = timestep
        self.observation_space, self.action_space = observation_space, action_space
        self.context, self.max_timestep, self.uses_memory = context, max_timestep, bool(memory)
        self.n_actions = int(action_space.n)
        self.obs_encoder = make_encoder(observation_space, embed_dim=embed_dim, hidden_size=d_model)
        self.obs_proj = nn.Linear(self.obs_encoder.output_size, d_model)
        self.rtg_embed = nn.Linear(1, d_model)
        self.action_embed = nn.Embedding(self.n_actions, d_model)
        self.time_embed = nn.Embedding(max_timestep, d_model)
        if timestep == "window":
            # Small, as GPT's position embeddings: a place no window of training reached (a
            # warm start with a longer context) then adds next to nothing rather than noise.
            nn.init.normal_(self.time_embed.weight, std=0.02)
        self.ln_in = nn.LayerNorm(d_model)
        mem = ({"hidden_size": d_model, "mem_slots": 8, "num_heads": 4, **memory_cfg,
                "horizon": max_timestep} if memory else None)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, dropout, mem) for _ in range(n_layers))
        self.ln_out = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, self.n_actions)

    def spec(self) -> dict[str, Any]:
        return dict(self._spec)

    @property
    def context_length(self) -> float:
        """Cherepanov et al.'s context K: the window, or unlimited when the working memory
        carries information from one window to the next."""
        return math.inf if self.uses_memory else self.context

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def memory_parameters(self):
        """The parameters of the memory cores (what ``finetune=memory`` trains)."""
        return [p for b in self.blocks if b.memory is not None for p in b.memory.core.parameters()]

    def initial_state(self, batch_size: int, device) -> MemState:
        if not self.uses_memory:
            return []
        return [b.memory.initial_state(batch_size, device) for b in self.blocks]

    def forward(
        self,
        rtg: torch.Tensor,
        obs: torch.Tensor,
        actions: torch.Tensor,
        timesteps: torch.Tensor,
        state: MemState | None = None,
        starts: torch.Tensor | None = None,
        last: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, MemState]:
        """One window of T <= K steps per env.

        rtg [B, T], obs [B, T, *obs_shape], actions [B, T] (the action at step t is only
        seen by later tokens), timesteps [B, T]; ``state`` the memory carried in and
        ``starts`` [B] bool: envs whose memory starts afresh at this window.
        Returns action logits [B, T, A] (from the observation tokens) and the memory
        after step ``last[b]`` of the window (default: its last step).
        """
        B, T = actions.shape
        if T > self.context:
            raise ValueError(f"window of {T} steps exceeds the context of {self.context}")
        o = self.obs_proj(self.obs_encoder(obs.reshape(B * T, *obs.shape[2:]))).view(B, T, -1)
        if self.timestep == "window":  # the step's place in its window (windows start at column 0)
            timesteps = timesteps - timesteps[:, :1]
        time = self.time_embed(timesteps.clamp(0, self.max_timestep - 1))
        tokens = torch.stack(
            [self.rtg_embed(rtg.unsqueeze(-1).float()) + time, o + time,
             self.action_embed(actions) + time], dim=2,
        ).flatten(1, 2)  # [B, 3T, D]: R_0, o_0, a_0, R_1, ...
        x = self.ln_in(tokens)
        if self.uses_memory:
            if state is None:
                state = self.initial_state(B, x.device)
            if starts is None:
                starts = torch.zeros(B, dtype=torch.bool, device=x.device)
        new_state: MemState = []
        rows = torch.arange(B, device=x.device)
        for i, block in enumerate(self.blocks):
            x, trace = block(x, state[i] if self.uses_memory else None, starts)
            if trace is not None:
                new_state.append(trace[-1] if last is None else trace[last, rows])
        logits = self.head(self.ln_out(x[:, 1::3]))
        return logits, new_state
