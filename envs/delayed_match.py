"""Delayed match-to-sample.

A sample symbol is shown for ``cue_steps`` steps, then ``delay`` steps of random
distractor symbols (or blanks), then ``num_choices`` options appear, one equal
to the sample, in random order; the action picks one. Reward 1 for the match,
else 0; the episode ends at the choice. Actions before the choice do nothing.
Chance = 1 / num_choices. Memory horizon: the last cue step (cue_steps - 1) to
the choice (cue_steps + delay): xi = delay + 2.

Observation (MultiDiscrete, length 2 + num_choices):
``[phase, symbol, option_1 .. option_k]`` with phase 0 = cue, 1 = delay,
2 = choice; symbol 0 is blank and 1..num_symbols are symbols.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from envs import rng
from envs.batched import BatchedEnv
from envs.render import ANSWER, Canvas, palette

CUE, DELAY, CHOICE = 0, 1, 2


class DelayedMatch(BatchedEnv):
    env_id = "recall/DelayedMatch-v0"
    python_rules = True

    def __init__(
        self,
        num_envs: int = 1,
        device: torch.device | str = "cpu",
        seed: int = 0,
        *,
        num_symbols: int = 8,
        cue_steps: int = 1,
        delay: int = 16,
        num_choices: int = 4,
        distractors: bool = True,
        **kwargs,
    ):
        self.check_range("num_symbols", num_symbols, 2, 256)
        self.check_range("cue_steps", cue_steps, 1, 1000)
        self.check_range("delay", delay, 0, 100_000)
        self.check_range("num_choices", num_choices, 2, num_symbols)
        self.check_bool("distractors", distractors)
        self.num_symbols = num_symbols
        self.cue_steps = cue_steps
        self.delay = delay
        self.num_choices = num_choices
        self.distractors = bool(distractors)
        self.choice_step = cue_steps + delay
        super().__init__(num_envs, device, seed, **kwargs)
        xp = self.xp
        # Episode e's options are row ``row`` of a table of random orderings (flattened, so
        # the per-step work is one gather of [B] or [B, k] indices).
        table = rng.permutation_table(num_symbols)[:, :num_choices] + 1
        self._rows = table.shape[0]
        self._table = xp.const(table.reshape(-1))
        self.row = xp.zeros()
        self.answer = xp.zeros()
        self.sample = xp.zeros()

    @property
    def chance(self) -> float:
        return 1.0 / self.num_choices

    @property
    def memory_horizon(self) -> int:
        return self.delay + 2

    def _spaces(self):
        k, s = self.num_choices, self.num_symbols
        obs = gym.spaces.MultiDiscrete(np.array([3, s + 1] + [s + 1] * k, dtype=np.int64))
        return obs, gym.spaces.Discrete(k)

    def _new_episode(self, mask, key):
        xp = self.xp
        # The key's two 16-bit halves pick the ordering and the answer's position.
        # (multiply-shift on 16-bit values, as rng.randint does on 32-bit keys).
        row = ((key >> 16) * self._rows) >> 16
        answer = ((key & 0xFFFF) * self.num_choices) >> 16
        self.row = xp.where(mask, row, self.row)
        self.answer = xp.where(mask, answer, self.answer)
        self.sample = xp.take(self._table, self.row * self.num_choices + self.answer)

    @property
    def options(self):
        """The options of every copy's current episode (a row of num_choices)."""
        return self.xp.slice(self._table, self.row * self.num_choices, self.num_choices)

    def actions_matter(self):
        return self.t == self.choice_step

    def phase(self):
        xp = self.xp
        return xp.int(self.t >= self.cue_steps) + xp.int(self.t >= self.choice_step)

    def _observe(self):
        xp = self.xp
        phase = self.phase()
        if self.distractors:
            noise = rng.randint(self.step_key(), self.num_symbols) + 1
            shown = xp.where(phase == DELAY, noise, 0)
        else:
            shown = phase * 0
        symbol = xp.where(phase == CUE, self.sample, shown)
        return xp.obs(phase, symbol, xp.row_where(phase == CHOICE, self.options, 0))

    def _transition(self, actions):
        at_choice = self.t == self.choice_step
        correct = at_choice & (actions == self.answer)
        return self.xp.float(correct), at_choice, self.xp.false(at_choice), correct

    def oracle_actions(self):
        return self.xp.copy(self.answer)

    def render_frame(self, index=0, show_answer=True, action=None):
        obs = self._observe()[index].tolist()
        phase, shown, options = obs[0], obs[1], obs[2:]
        t = int(self.t[index])
        colors = palette(self.num_symbols)
        c = Canvas(max(240, 64 + 40 * self.num_choices), 150)
        label = ["cue", f"delay {t - self.cue_steps + 1}/{self.delay}", "choose"][phase]
        c.text((8, 6), f"DelayedMatch  t={t}  {label}")
        c.tile(8, 30, 48, shown, colors)
        answer = int(self.answer[index])
        for j, sym in enumerate(options):
            mark = ANSWER if show_answer and phase == CHOICE and j == answer else None
            c.tile(16 + 40 * j, 100, 32, sym, colors, outline=mark)
            if action == j and phase == CHOICE:
                c.pick_bar(16 + 40 * j, 138, 32, right=j == answer)
        return c.array()
