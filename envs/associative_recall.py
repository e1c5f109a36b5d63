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
from envs.batched import BatchedEnv
from envs.render import ANSWER, Canvas, palette

PAIRS, DELAY, QUERY = 0, 1, 2


class AssociativeRecall(BatchedEnv):
    env_id = "recall/AssociativeRecall-v0"

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
        n, dev, P = self.num_envs, self.device, self.num_pairs
        # Tokens = one row of table A read at the first 2P positions of one row of table
        # B: a composition of two table permutations, so 4096**2 token draws, not 4096.
        self._perm_a = rng.permutation_table(self.vocab_size, device=dev)
        self._perm_b = rng.permutation_table(self.vocab_size, device=dev)[:, : 2 * P].contiguous()
        self._orders = rng.permutation_table(P, device=dev)[:, : self.num_queries].contiguous()
        self._cols = torch.arange(2 * P, device=dev)
        self.keys = torch.zeros(n, P, dtype=torch.int64, device=dev)
        self.values = torch.zeros(n, P, dtype=torch.int64, device=dev)
        self.order = torch.zeros(n, self.num_queries, dtype=torch.int64, device=dev)
        self.correct = torch.zeros(n, dtype=torch.int64, device=dev)

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
        # Flat takes: row indexing of a table is several times slower on CPU.
        P, Q, V = self.num_pairs, self.num_queries, self.vocab_size
        rows, qrows = self._perm_b.shape[0], self._orders.shape[0]
        ka, kb, kc = rng.combine(key, 1), rng.combine(key, 2), rng.combine(key, 3)
        positions = self._perm_b.take((kb % rows)[:, None] * (2 * P) + self._cols[: 2 * P])
        tokens = self._perm_a.take((ka % rows)[:, None] * V + positions) + 1
        order = self._orders.take((kc % qrows)[:, None] * Q + self._cols[:Q])
        m = mask[:, None]
        self.keys = torch.where(m, tokens[:, :P], self.keys)
        self.values = torch.where(m, tokens[:, P:], self.values)
        self.order = torch.where(m, order, self.order)
        self.correct.masked_fill_(mask, 0)

    def actions_matter(self) -> torch.Tensor:
        return self.t >= self.query_step

    def phase(self) -> torch.Tensor:
        return (self.t >= self.num_pairs).long() + (self.t >= self.query_step).long()

    def _query_pair(self) -> torch.Tensor:
        """Index of the pair queried now (clamped outside the query phase)."""
        q = (self.t - self.query_step).clamp(0, self.num_queries - 1)
        return self.order.gather(1, q[:, None]).squeeze(1)

    def target(self) -> torch.Tensor:
        """The token (1..V) that answers the current query."""
        return self.values.gather(1, self._query_pair()[:, None]).squeeze(1)

    def _observe(self):
        phase = self.phase()
        shown = self.t.clamp(max=self.num_pairs - 1)[:, None]
        pair_key = self.keys.gather(1, shown).squeeze(1)
        pair_value = self.values.gather(1, shown).squeeze(1)
        query_key = self.keys.gather(1, self._query_pair()[:, None]).squeeze(1)
        key = torch.where(phase == PAIRS, pair_key, torch.where(phase == QUERY, query_key, 0))
        value = torch.where(phase == PAIRS, pair_value, 0)
        return torch.stack([phase, key, value], dim=1)

    def _transition(self, actions):
        asked = self.t >= self.query_step
        right = asked & (actions + 1 == self.target())
        self.correct += right.long()
        terminated = self.t == self.last_step
        success = self.correct == self.num_queries
        return right.float() / self.num_queries, terminated, torch.zeros_like(terminated), success

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
