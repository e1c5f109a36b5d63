"""The agent: observation encoder -> memory core -> actor and critic heads.

``act`` is the acting path (one step for every env, ``T == 1`` through the
core); ``evaluate_sequence`` is the training path (the core runs over a whole
``[T, B]`` sequence in one call). Both read the same features, so a sequence
evaluated in one call gives what ``act`` gave step by step.

With ``prev_action_reward`` the core also reads the previous action (one-hot,
with an extra "none" entry at episode starts) and the previous reward (0 at
episode starts), as in RL^2 / IMPALA-style agents.

With ``oracle_critic`` the critic alone also reads a hint: the env's oracle action
for the step (one-hot, with an extra "none" entry where no hint is given). This
is the asymmetric actor-critic of Pinto et al. (2018): privileged information
that exists in training only, given to the value function, never to the actor,
whose action reads observations and memory alone. Acting without a hint (every
evaluation) is unchanged.

With ``core_norm`` a LayerNorm sits between the core and the heads. A GRU/LSTM
starts with its retain gate biased shut (memory_modules.rnn), so its outputs are
small (mean |y| ~0.02 on Ballet's first steps): behind them, the hidden layer and
the actor's 0.01-gain init leave the logits flat. In a supervised fit of Ballet's
instruction-step move (benchmarks/head_fit.py) the loss sat at the label's
marginal (1.555 after 300 Adam steps) and reached 0.667 with the LayerNorm. In
RL it lets gradients reach the core: at Ballet's rate of 3e-3 the GRU then
saturated, so it wants a lower rate (docs/results.md, Ballet).

Sampling is Gumbel-max on the logits, so acting never syncs with the host
(``torch.distributions`` validates its arguments, which does).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from torch import nn
from torch.nn import functional as F

from agents.common.encoders import make_encoder
from agents.common.tree import tree_map
from agents.ppo.next_obs import NextObsHead
from memory_modules import State, make_core


def _init_linear(layer: nn.Linear, gain: float) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class Policy(nn.Module):
    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        core: str = "gru",
        core_cfg: dict[str, Any] | None = None,
        encoder_cfg: dict[str, Any] | None = None,
        prev_action_reward: bool = False,
        head_hidden: int = 128,
        predict_next_obs: bool = False,
        oracle_critic: bool = False,
        core_norm: bool = False,
    ):
        super().__init__()
        if not isinstance(action_space, gym.spaces.Discrete):
            raise TypeError(f"Policy supports Discrete action spaces only, got {action_space!r}")
        self.observation_space = observation_space
        self.action_space = action_space
        self.num_actions = int(action_space.n)
        self.action_start = int(action_space.start)
        self.core_name = core
        self.prev_action_reward = bool(prev_action_reward)
        self.encoder = make_encoder(observation_space, **(encoder_cfg or {}))
        in_size = self.encoder.output_size
        if self.prev_action_reward:
            in_size += self.num_actions + 2  # one-hot action (+ "none") and the reward
        self.core = make_core(core, in_size, **(core_cfg or {}))
        # ``core_norm``: the core's outputs at a fixed scale for the heads (module docstring)
        self.core_norm = nn.LayerNorm(self.core.output_size) if core_norm else nn.Identity()
        # A hidden layer after the core (sample-factory's "decoder"): comparing what the
        # core remembers with what it sees now needs a nonlinearity after the memory.
        out = self.core.output_size
        if head_hidden:
            self.decoder = nn.Sequential(_init_linear(nn.Linear(out, head_hidden), 2**0.5), nn.ReLU())
            out = head_hidden
        else:
            self.decoder = nn.Identity()
        self.actor = _init_linear(nn.Linear(out, self.num_actions), 0.01)
        self.oracle_critic = bool(oracle_critic)
        if self.oracle_critic:
            # its own hidden layer over the core output and the hint: the value turns on
            # how the two combine (is the dancer in view the one the hint points to?),
            # which a hint added after the shared layer could not express
            hidden = head_hidden or 128
            self.critic = nn.Sequential(
                _init_linear(nn.Linear(self.core.output_size + self.num_actions + 1, hidden), 2**0.5),
                nn.ReLU(), _init_linear(nn.Linear(hidden, 1), 1.0))
        else:
            self.critic = _init_linear(nn.Linear(out, 1), 1.0)
        # algo.next_obs_coef > 0: a head on the core output that predicts the next
        # observation (agents.ppo.next_obs), a self-supervised loss for the memory.
        self.next_obs = NextObsHead(observation_space, self.core.output_size) if predict_next_obs else None

    # ------------------------------------------------------------------ pieces
    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        return self.core.initial_state(batch_size, device)

    def features(
        self,
        obs: Any,
        starts: torch.Tensor,
        prev_action: torch.Tensor | None = None,
        prev_reward: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Core inputs ``[T, B, D]`` from observations ``[T, B, ...]`` and starts ``[T, B]``."""
        T, B = starts.shape
        flat = tree_map(lambda o: o.reshape(T * B, *o.shape[2:]), obs)
        x = self.encoder(flat).view(T, B, -1)
        if self.prev_action_reward:
            if prev_action is None or prev_reward is None:
                raise ValueError("this policy reads the previous action and reward; pass both")
            none = torch.full_like(prev_action, self.num_actions)
            a = torch.where(starts, none, prev_action.long() - self.action_start)
            r = torch.where(starts, torch.zeros_like(prev_reward), prev_reward.float())
            x = torch.cat([x, F.one_hot(a, self.num_actions + 1).to(x.dtype), r.unsqueeze(-1)], -1)
        return x

    def heads(self, y: torch.Tensor, hint: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities ``[..., A]`` and values ``[...]`` from core outputs."""
        z = self.decoder(y)
        if torch.is_autocast_enabled(z.device.type):
            # the heads in full precision: their log-probabilities set PPO's ratio against
            # the acting pass's, and the value its targets' scale
            dtype = self.actor.weight.dtype
            with torch.autocast(z.device.type, enabled=False):
                y, z = y.to(dtype), z.to(dtype)
                return F.log_softmax(self.actor(z), dim=-1), self._value(y, hint, z)
        return F.log_softmax(self.actor(z), dim=-1), self._value(y, hint, z)

    def _value(self, y: torch.Tensor, hint: torch.Tensor | None, z: torch.Tensor | None = None) -> torch.Tensor:
        """The value of core outputs ``y``: through the shared decoder (``z``, computed if not
        given), or with an oracle critic through its own layer over ``y`` and the hint."""
        if not self.oracle_critic:
            return self.critic(self.decoder(y) if z is None else z).squeeze(-1)
        if hint is None:
            index = torch.full(y.shape[:-1], self.num_actions, dtype=torch.int64, device=y.device)
        else:
            index = hint.long() - self.action_start
        return self.critic(torch.cat([y, F.one_hot(index, self.num_actions + 1).to(y.dtype)], -1)).squeeze(-1)

    # ------------------------------------------------------------------ paths
    def _step(self, obs, state, starts, prev_action, prev_reward,
              reuse_state: bool = False, need_state: bool = True) -> tuple[torch.Tensor, State]:
        """Core output ``[B, H]`` and next state for one step of a batch ``[B, ...]``."""
        def unsq(t):
            return None if t is None else t.unsqueeze(0)

        x = self.features(tree_map(unsq, obs), unsq(starts), unsq(prev_action), unsq(prev_reward))
        y, state = self._core(x, state, unsq(starts), reuse_state, need_state)
        return y[0], state

    def _core(self, x: torch.Tensor, state: State, starts: torch.Tensor,
              reuse_state: bool = False, need_state: bool = True) -> tuple[torch.Tensor, State]:
        """The core over ``[T, B, D]`` inputs, its outputs through ``core_norm``: what the heads
        read. The two flags pass on to the core (memory_modules.base)."""
        y, state = self.core(x, state, starts, reuse_state=reuse_state, need_state=need_state)
        return self.core_norm(y), state

    def act(
        self,
        obs: Any,
        state: State,
        starts: torch.Tensor,
        prev_action: torch.Tensor | None = None,
        prev_reward: torch.Tensor | None = None,
        deterministic: bool = False,
        hint: torch.Tensor | None = None,
        reuse_state: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, State]:
        """One step for a batch ``[B, ...]``: (action, log-prob, value, next state).

        ``reuse_state=True`` hands ``state`` over to the core, which may write the next
        state into its tensors (memory_modules.base); the caller must not use it after.
        """
        y, state = self._step(obs, state, starts, prev_action, prev_reward, reuse_state)
        logp, value = self.heads(y, hint)
        if deterministic:
            action = logp.argmax(-1)
        else:
            # Gumbel-max: argmax(logits + Gumbel noise) is a sample of the categorical.
            u = torch.rand_like(logp).clamp_(min=1e-20)
            action = (logp - torch.log(-torch.log(u))).argmax(-1)
        return (
            action + self.action_start,
            logp.gather(-1, action.unsqueeze(-1)).squeeze(-1),
            value,
            state,
        )

    def value(
        self,
        obs: Any,
        state: State,
        starts: torch.Tensor,
        prev_action: torch.Tensor | None = None,
        prev_reward: torch.Tensor | None = None,
        hint: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The value of one observation per env ``[B]``, the state left as it was."""
        y, _ = self._step(obs, state, starts, prev_action, prev_reward, need_state=False)
        return self._value(y, hint)

    def truncation_values(
        self,
        final_obs: Any,
        state: State,
        truncated: torch.Tensor,
        prev_action: torch.Tensor,
        prev_reward: torch.Tensor,
        hint: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``[B]``: the value of each env's final observation where a time limit cut its
        episode (``truncated``), read with the state that follows the step; 0 elsewhere.

        On the CPU only the cut envs go through the network: a gridworld's time limit cuts
        about one env in its limit per step, and valuing the whole batch for them doubled
        the acting cost (Ballet: docs/results.md). Picking rows needs their count on the
        host, a sync on an accelerator, so there every env is valued and the rest masked.
        """
        cut = truncated.float()
        if truncated.device.type != "cpu":
            no_starts = torch.zeros_like(truncated)
            return self.value(final_obs, state, no_starts, prev_action, prev_reward, hint) * cut
        rows = truncated.nonzero().squeeze(1)
        values = torch.zeros_like(cut)
        if rows.numel() == 0:
            return values
        every = rows.numel() == truncated.numel()

        def take(t: torch.Tensor) -> torch.Tensor:
            return t if every else t.index_select(0, rows)

        v = self.value(tree_map(take, final_obs), tree_map(take, state),
                       torch.zeros_like(rows, dtype=torch.bool), take(prev_action), take(prev_reward),
                       None if hint is None else take(hint))
        return values.index_copy_(0, rows, v.to(values.dtype))

    def evaluate_sequence(
        self,
        obs: Any,
        state: State,
        starts: torch.Tensor,
        actions: torch.Tensor,
        prev_action: torch.Tensor | None = None,
        prev_reward: torch.Tensor | None = None,
        hint: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """Log-prob of ``actions``, entropy and value, each ``[T, B]``, from the core's one call.

        A policy that predicts the next observation also returns that prediction's loss
        (a scalar: agents.ppo.next_obs).
        """
        x = self.features(obs, starts, prev_action, prev_reward)
        y, _ = self._core(x, state, starts, need_state=False)
        logp, value = self.heads(y, hint)
        entropy = -(logp.exp() * logp).sum(-1)
        taken = logp.gather(-1, (actions.long() - self.action_start).unsqueeze(-1)).squeeze(-1)
        if self.next_obs is not None:
            return taken, entropy, value, self.next_obs.loss(y, obs, starts)
        return taken, entropy, value

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
