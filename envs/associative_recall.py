"""Multi-query associative recall (after Zoology's MQAR, as an RL task).

``num_pairs`` key -> value pairs are shown one per step, then ``delay`` blank
steps, then ``num_queries`` of the shown keys (distinct, in random order) one
per step; each query is answered by naming the value paired with that key.
Keys and values are ``2 * num_pairs`` distinct tokens of one vocabulary of
``vocab_size`` tokens (as in Zoology, a token is either a key or a value in an
episode, never both). Reward ``1 / num_queries`` per right answer, so the
return lies in [0, 1]; ``success`` = every query answered right. Actions before
the queries do nothing. The episode ends after the last query
(``num_pairs + delay + num_queries`` steps).

Observation (MultiDiscrete ``[3, V + 1, V + 1]``): ``[phase, key, value]``
with phase 0 = pairs, 1 = delay, 2 = queries; token 0 is blank and tokens are
1..V. During queries the value slot is blank. Action a (Discrete V) names
token a + 1.

Chance: a uniform random policy scores 1 / V per query (expected return 1/V);
guessing among the shown values would score 1 / num_pairs. Memory horizon: the
first pair (step 0) may be queried at the last step, so up to
``num_pairs + delay + num_queries`` steps.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from envs import rng
from envs.backends import f32
from envs.batched import BatchedEnv
from envs.render import ANSWER, Canvas, palette

PAIRS, DELAY, QUERY = 0, 1, 2


class AssociativeRecall(BatchedEnv):
    env_id = "recall/AssociativeRecall-v0"
    python_rules = True

    def __init__(
        self,
        num_envs: int = 1,
        device: torch.device | str = "cpu",
        seed: int = 0,
        *,
        num_pairs: int = 4,
        num_queries: int = 4,
        vocab_size: int = 16,
        delay: int = 8,
        **kwargs,
    ):
        self.check_range("num_pairs", num_pairs, 1, 64)
        self.check_range("num_queries", num_queries, 1, num_pairs)
        self.check_range("vocab_size", vocab_size, 2 * num_pairs, 256)
        self.check_range("delay", delay, 0, 100_000)
        self.num_pairs, self.num_queries = int(num_pairs), int(num_queries)
        self.vocab_size, self.delay = int(vocab_size), int(delay)
        self.query_step = self.num_pairs + self.delay
        self.last_step = self.query_step + self.num_queries - 1
        super().__init__(num_envs, device, seed, **kwargs)
        xp, P = self.xp, self.num_pairs
        # Tokens = one row of table A read at the first 2P positions of one row of table
        # B: a composition of two table permutations, so 4096**2 token draws, not 4096.
        # Tables flat (one take per draw); table A holds tokens 1..V.
        perm_a = rng.permutation_table(self.vocab_size)
        perm_b = rng.permutation_table(self.vocab_size)[:, : 2 * P]
        orders = rng.permutation_table(P)[:, : self.num_queries]
        self._rows, self._qrows = perm_b.shape[0], orders.shape[0]
        self._tokens = xp.const((perm_a + 1).reshape(-1))
        self._positions = xp.const(perm_b.reshape(-1))
        self._orders = xp.const(orders.reshape(-1))
        self._scale = f32(1.0 / self.num_queries)
        self.keys = xp.zeros(P)
        self.values = xp.zeros(P)
        self.order = xp.zeros(self.num_queries)
        self.correct = xp.zeros()

    @property
    def chance(self) -> float:
        """Expected return of a uniform random policy."""
        return 1.0 / self.vocab_size

    @property
    def memory_horizon(self) -> int:
        # The first pair (step 0) queried at the last step.
        return self.last_step + 1

    def _spaces(self):
        v = self.vocab_size + 1
        obs = gym.spaces.MultiDiscrete(np.array([3, v, v], dtype=np.int64))
        return obs, gym.spaces.Discrete(self.vocab_size)

    def _new_episode(self, mask, key):
        xp, P, Q, V = self.xp, self.num_pairs, self.num_queries, self.vocab_size
        ka, kb, kc = rng.combine(key, 1), rng.combine(key, 2), rng.combine(key, 3)
        positions = xp.slice(self._positions, (kb % self._rows) * (2 * P), 2 * P)
        tokens = xp.take(self._tokens, xp.row_add(positions, (ka % self._rows) * V))
        order = xp.slice(self._orders, (kc % self._qrows) * Q, Q)
        self.keys = xp.row_where(mask, xp.cols(tokens, 0, P), self.keys)
        self.values = xp.row_where(mask, xp.cols(tokens, P, 2 * P), self.values)
        self.order = xp.row_where(mask, order, self.order)
        self.correct = xp.fill(self.correct, mask, 0)

    def actions_matter(self):
        return self.t >= self.query_step

    def phase(self):
        xp = self.xp
        return xp.int(self.t >= self.num_pairs) + xp.int(self.t >= self.query_step)

    def _query_pair(self):
        """Index of the pair queried now (clamped outside the query phase)."""
        q = self.xp.clip(self.t - self.query_step, 0, self.num_queries - 1)
        return self.xp.get(self.order, q)

    def target(self):
        """The token (1..V) that answers the current query."""
        return self.xp.get(self.values, self._query_pair())

    def _observe(self):
        xp = self.xp
        phase = self.phase()
        shown = xp.minimum(self.t, self.num_pairs - 1)
        pair_key = xp.get(self.keys, shown)
        pair_value = xp.get(self.values, shown)
        query_key = xp.get(self.keys, self._query_pair())
        key = xp.where(phase == PAIRS, pair_key, xp.where(phase == QUERY, query_key, 0))
        value = xp.where(phase == PAIRS, pair_value, 0)
        return xp.obs(phase, key, value)

    def _transition(self, actions):
        xp = self.xp
        asked = self.t >= self.query_step
        right = asked & (actions + 1 == self.target())
        self.correct = self.correct + xp.int(right)
        terminated = self.t == self.last_step
        success = self.correct == self.num_queries
        return xp.float(right) * self._scale, terminated, xp.false(terminated), success

    def oracle_actions(self):
        return self.target() - 1

    def render_frame(self, index=0, show_answer=True, action=None):
        t = int(self.t[index])
        phase = int(self.phase()[index])
        colors = palette(self.vocab_size)
        P = self.num_pairs
        c = Canvas(max(300, 16 + 40 * P), 190)
        label = ["pairs", f"delay {t - P + 1}/{self.delay}", f"query {t - self.query_step + 1}"][phase]
        c.text((8, 6), f"AssociativeRecall  t={t}  {label}  right={int(self.correct[index])}")
        obs = self._observe()[index].tolist()
        c.text((8, 28), "now: key / value")
        c.tile(120, 24, 32, obs[1], colors)
        c.tile(160, 24, 32, obs[2], colors)
        keys, values = self.keys[index].tolist(), self.values[index].tolist()
        target = int(self.target()[index]) if phase == QUERY else -1
        c.text((8, 72), "pairs shown so far (hidden from the agent):")
        for j in range(min(P, t + 1) if phase == PAIRS else P):
            mark = ANSWER if show_answer and values[j] == target else None
            c.tile(8 + 40 * j, 92, 32, keys[j], colors)
            c.tile(8 + 40 * j, 132, 32, values[j], colors, outline=mark)
            if phase == QUERY and action is not None and values[j] == action + 1:
                c.pick_bar(8 + 40 * j, 170, 32, right=action + 1 == target)
        if phase == QUERY and action is not None:
            # The agent's answer (token action + 1), also where it is no shown value.
            c.text((206, 28), "agent")
            c.tile(248, 24, 32, action + 1, colors)
            c.pick_bar(248, 60, 32, right=action + 1 == target)
        return c.array()
