"""Rollout storage on the env's device: ``[T, B]`` buffers and the core state per chunk.

Step t of env b holds what the agent saw and did: ``obs[t]``, ``starts[t]``
(obs[t] is the first of an episode), the previous action and reward (inputs of
policies that read them), ``actions[t]``, ``logprobs[t]``, ``values[t]``, and
what followed: ``rewards[t]`` and ``dones[t]`` (the episode ended with this
step). ``acting[t]`` is False where the task ignored the action (the env's
``actions_matter()``); PPO may leave those steps out of its policy loss.
``hints[t]`` is the env's oracle action, read by a policy whose critic takes it
(``oracle_critic``); the actor never sees it. A truncated episode's reward already carries ``gamma * V(final obs)``,
so GAE may treat every end alike.

The rollout is cut along time into chunks of ``seq_len`` steps; ``states[c]``
is the core state of every env just before step ``c * seq_len``, stored while
acting. PPO trains on those chunks as sequences, each from its stored state.
"""

from __future__ import annotations

from typing import Any

import torch

from agents.common.tree import tree_map
from memory_modules import State


class Rollout:
    def __init__(
        self,
        num_steps: int,
        num_envs: int,
        seq_len: int,
        obs_example: Any,
        state_example: State,
        device: torch.device | str,
    ):
        if seq_len < 1 or num_steps % seq_len:
            raise ValueError(f"num_steps={num_steps} must be a multiple of seq_len={seq_len}")
        T, B = num_steps, num_envs
        self.num_steps, self.num_envs, self.seq_len = T, B, seq_len
        self.num_chunks = T // seq_len
        self.device = torch.device(device)

        def zeros(dtype, *shape):
            return torch.zeros(T, B, *shape, dtype=dtype, device=self.device)

        self.obs = tree_map(lambda o: zeros(o.dtype, *o.shape[1:]), obs_example)
        self.starts = zeros(torch.bool)
        self.prev_actions = zeros(torch.int64)
        self.prev_rewards = zeros(torch.float32)
        self.actions = zeros(torch.int64)
        self.acting = torch.ones(T, B, dtype=torch.bool, device=self.device)
        self.hints = zeros(torch.int64)
        self.logprobs = zeros(torch.float32)
        self.values = zeros(torch.float32)
        self.rewards = zeros(torch.float32)
        self.dones = zeros(torch.bool)
        self.advantages = zeros(torch.float32)
        self.returns = zeros(torch.float32)
        self.states = {
            k: torch.zeros(self.num_chunks, *v.shape, dtype=v.dtype, device=self.device)
            for k, v in state_example.items()
        }

    def store_state(self, t: int, state: State) -> None:
        """Call before acting at step t; keeps the state at chunk boundaries."""
        if t % self.seq_len == 0:
            c = t // self.seq_len
            for k, v in state.items():
                self.states[k][c].copy_(v)

    def store_step(self, t, obs, starts, prev_action, prev_reward, action, logprob, value) -> None:
        tree_map(lambda buf, o: buf[t].copy_(o), self.obs, obs)
        self.starts[t] = starts
        self.prev_actions[t] = prev_action
        self.prev_rewards[t] = prev_reward
        self.actions[t] = action
        self.logprobs[t] = logprob
        self.values[t] = value

    def store_hint(self, t: int, hint: torch.Tensor) -> None:
        """The oracle action at step t (``env.oracle_actions()`` before the step)."""
        self.hints[t] = hint

    def store_acting(self, t: int, acting: torch.Tensor | None) -> None:
        """Whether step t's actions mattered (``env.actions_matter()`` before the step)."""
        if acting is not None:
            self.acting[t] = acting

    def store_outcome(self, t: int, reward: torch.Tensor, done: torch.Tensor) -> None:
        self.rewards[t] = reward
        self.dones[t] = done

    @torch.no_grad()
    def compute_gae(self, last_value: torch.Tensor, gamma: float, gae_lambda: float) -> None:
        """Generalised advantage estimation; ``last_value`` is V of the obs after the rollout."""
        not_done = (~self.dones).float()
        last = torch.zeros_like(last_value)
        next_value = last_value
        for t in reversed(range(self.num_steps)):
            delta = self.rewards[t] + gamma * next_value * not_done[t] - self.values[t]
            last = delta + gamma * gae_lambda * not_done[t] * last
            self.advantages[t] = last
            next_value = self.values[t]
        torch.add(self.advantages, self.values, out=self.returns)

    def sequences(self) -> dict[str, Any]:
        """Every chunk as a sequence: tensors ``[seq_len, C * B, ...]``, states ``[C * B, ...]``.

        Sequence ``c * B + b`` is chunk c of env b.
        """
        L, C, B = self.seq_len, self.num_chunks, self.num_envs

        def chunk(x: torch.Tensor) -> torch.Tensor:
            if C == 1:
                return x
            return x.view(C, L, B, *x.shape[2:]).transpose(0, 1).reshape(L, C * B, *x.shape[2:])

        out = {
            name: chunk(getattr(self, name))
            for name in (
                "starts", "prev_actions", "prev_rewards", "actions", "acting", "hints", "logprobs",
                "values", "advantages", "returns",
            )
        }
        out["obs"] = tree_map(chunk, self.obs)
        out["state"] = {k: v.reshape(C * B, *v.shape[2:]) for k, v in self.states.items()}
        return out
