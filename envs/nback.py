"""N-back.

A stream of ``length`` symbols of ``num_symbols``. From step n on, each step the
agent answers 1 if the symbol now shown equals the one n steps back, else 0
(actions before step n do nothing). A step from n on is a match with
probability ``match_prob``. Reward +1/(length - n) for each right answer and
-1/(length - n) for each wrong one, so the return lies in [-1, 1];
``success`` = at least 90% right. Chance: return 0, 50% right.
Memory horizon: the symbol of step t - n is needed at step t, all episode long
(xi = n + 1).

Observation (MultiDiscrete): ``[symbol, answer_due]`` with symbol in
1..num_symbols and answer_due 1 from step n on.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from envs import rng
from envs.backends import f32
from envs.batched import BatchedEnv
from envs.render import ANSWER, Canvas, palette, verdict


class NBack(BatchedEnv):
    env_id = "recall/NBack-v0"
    python_rules = True

    def __init__(
        self,
        num_envs: int = 1,
        device: torch.device | str = "cpu",
        seed: int = 0,
        *,
        n: int = 2,
        length: int = 32,
        num_symbols: int = 8,
        match_prob: float = 0.5,
        **kwargs,
    ):
        self.check_range("n", n, 1, 64)
        self.check_range("length", length, n + 1, 100_000)
        self.check_range("num_symbols", num_symbols, 2, 256)
        self.check_range("match_prob", match_prob, 0.0, 1.0, kind=float)
        self.n, self.length, self.num_symbols = n, length, num_symbols
        self.match_prob = float(match_prob)
        super().__init__(num_envs, device, seed, **kwargs)
        xp = self.xp
        # Ring buffer of the last n symbols: history[:, t % n] is the symbol shown at t - n.
        self.history = xp.zeros(n)
        self.symbol = xp.zeros()
        self.correct = xp.zeros()
        self._match_threshold = int(round(self.match_prob * 2**32))
        self._scale = f32(1.0 / (length - n))

    @property
    def chance(self) -> float:
        return 0.5

    @property
    def memory_horizon(self) -> int:
        return self.n + 1

    def _spaces(self):
        obs = gym.spaces.MultiDiscrete(np.array([self.num_symbols + 1, 2], dtype=np.int64))
        return obs, gym.spaces.Discrete(2)

    def _advance(self) -> None:
        """Draw the symbol shown at step t for every copy (t has changed)."""
        xp = self.xp
        key = self.step_key()
        fresh = rng.randint(key, self.num_symbols) + 1
        back = xp.get(self.history, self.t % self.n)
        # A non-match is a uniform symbol other than the one n back.
        other = (back + rng.randint(rng.combine(key, 1), self.num_symbols - 1)) % self.num_symbols + 1
        match = rng.combine(key, 2) < self._match_threshold
        after = xp.where(match, back, other)
        self.symbol = xp.where(self.t >= self.n, after, fresh)

    def _new_episode(self, mask, key):
        self.history = self.xp.fill(self.history, mask, 0)
        self.correct = self.xp.fill(self.correct, mask, 0)

    def target(self):
        """1 where the current symbol equals the one n steps back."""
        back = self.xp.get(self.history, self.t % self.n)
        return self.xp.int(self.symbol == back)

    def _observe(self):
        return self.xp.obs(self.symbol, self.xp.int(self.t >= self.n))

    def _transition(self, actions):
        xp = self.xp
        due = self.t >= self.n
        right = due & (actions == self.target())
        wrong = due & xp.not_(right)
        self.correct = self.correct + xp.int(right)
        reward = (xp.float(right) - xp.float(wrong)) * self._scale
        self.history = xp.put(self.history, self.t % self.n, self.symbol)
        terminated = self.t == self.length - 1
        success = self.correct * 10 >= 9 * (self.length - self.n)
        return reward, terminated, xp.false(terminated), success

    def oracle_actions(self):
        return self.target()

    def actions_matter(self):
        return self.t >= self.n

    def render_frame(self, index=0, show_answer=True, action=None):
        t = int(self.t[index])
        colors = palette(self.num_symbols)
        c = Canvas(max(240, 40 * (self.n + 1) + 24), 140)
        c.text((8, 6), f"{self.n}-back  t={t}/{self.length}  right={int(self.correct[index])}")
        # The last n symbols (oldest first), then the current one.
        hist = self.history[index].tolist()
        for j in range(self.n):
            step = t - self.n + j
            sym = hist[step % self.n] if step >= 0 else 0
            c.tile(8 + 40 * j, 40, 32, sym, colors)
        c.tile(8 + 40 * self.n, 36, 40, int(self.symbol[index]), colors)
        if t >= self.n:
            target = int(self.target()[index])
            answer = "match" if target else "no match"
            c.text((8, 100), f"answer: {answer}" if show_answer else "answer?", fill=ANSWER)
            if action is not None:
                c.pick_bar(8, 118, 8, right=action == target)
                c.text((20, 114), f"agent:  {'match' if action else 'no match'}",
                       fill=verdict(action == target))
        return c.array()
