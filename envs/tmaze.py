"""Passive T-Maze (Ni et al. 2023, "When do transformers shine in RL?").

A corridor of ``length`` cells leads from the start (x = 0) to a junction
(x = length) with two arms, up (y = +1) and down (y = -1). The cue naming the
rewarded arm is seen only at the first step. An episode lasts exactly
``length + 1`` steps: ``length`` moves to reach the junction and one to turn.
At the last step the reward is +1 if the agent stands on the arm the cue named
(else 0); at every earlier step t (counted from 1 after the move) the agent
pays ``1 / length`` if it is behind schedule (x < t), so the return lies in
[-1, 1]. The paper treats the end of the episode as terminal (its
``finite_horizon_terminal``): the last reward settles the episode, so nothing
is bootstrapped past it and ``terminated`` is set, not ``truncated``.

Observation (MultiDiscrete ``[2, 3]``): the paper's ambiguous-position view
shifted to non-negative ints: ``[at_junction, signal]`` where at the start
(t = 0) ``signal`` is the cue (0 = down, 2 = up), along the corridor it is 1
(nothing), and at the junction or in an arm it is ``y + 1``.

Actions (Discrete 4, the paper's order): 0 right, 1 up, 2 left, 3 down; a move
off the maze leaves the agent in place.

Chance: a policy without memory that runs right and turns at random succeeds
half the time (return 0.5); uniform random actions almost never reach the
junction for long corridors. Memory horizon: the cue shown at step 0 is needed
at step ``length`` (xi = length + 1 in Cherepanov et al.'s count).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from envs.backends import f32
from envs.batched import BatchedEnv
from envs.render import ANSWER, Canvas

RIGHT, UP, LEFT, DOWN = 0, 1, 2, 3


class PassiveTMaze(BatchedEnv):
    env_id = "recall/PassiveTMaze-v0"
    python_rules = True

    def __init__(
        self,
        num_envs: int = 1,
        device: torch.device | str = "cpu",
        seed: int = 0,
        *,
        length: int = 50,
        **kwargs,
    ):
        self.check_range("length", length, 1, 5000)
        self.length = int(length)
        self.penalty = f32(1.0 / self.length)
        super().__init__(num_envs, device, seed, **kwargs)
        xp = self.xp
        self.x = xp.zeros()
        self.y = xp.zeros()
        self.goal = xp.full(1)  # +1 up, -1 down
        self._dx = xp.const([1, 0, -1, 0])
        self._dy = xp.const([0, 1, 0, -1])

    @property
    def chance(self) -> float:
        """Success rate of the best policy without memory (run right, guess the arm)."""
        return 0.5

    @property
    def episode_steps(self) -> int:
        return self.length + 1

    @property
    def memory_horizon(self) -> int:
        return self.length + 1

    def _spaces(self):
        return gym.spaces.MultiDiscrete(np.array([2, 3], dtype=np.int64)), gym.spaces.Discrete(4)

    def _new_episode(self, mask, key):
        xp = self.xp
        goal = (key & 1) * 2 - 1
        self.goal = xp.where(mask, goal, self.goal)
        self.x = xp.fill(self.x, mask, 0)
        self.y = xp.fill(self.y, mask, 0)

    def _observe(self):
        xp = self.xp
        at_junction = self.x == self.length
        signal = xp.where(self.t == 0, self.goal + 1, 1)
        signal = xp.where(at_junction, self.y + 1, signal)
        return xp.obs(xp.int(at_junction), signal)

    def _transition(self, actions):
        xp = self.xp
        nx = self.x + xp.take(self._dx, actions)
        ny = self.y + xp.take(self._dy, actions)
        on_corridor = (ny == 0) & (nx >= 0) & (nx <= self.length)
        on_arm = (nx == self.length) & (abs(ny) == 1)
        valid = on_corridor | on_arm
        self.x = xp.where(valid, nx, self.x)
        self.y = xp.where(valid, ny, self.y)
        done = self.t == self.length  # this step is the (length + 1)-th
        success = done & (self.y == self.goal)
        behind = self.x < self.t + 1
        reward = xp.where(done, xp.float(success), xp.float(behind) * -self.penalty)
        return reward, done, xp.false(done), success

    def oracle_actions(self):
        turn = torch.where(self.goal == 1, UP, DOWN)
        back = torch.where(self.y == 1, DOWN, UP)  # from the wrong arm to the junction
        at_junction = torch.where(self.y == 0, turn, torch.where(self.y == self.goal, RIGHT, back))
        return torch.where(self.x < self.length, RIGHT, at_junction)

    action_names = ("right", "up", "left", "down")

    def render_frame(self, index=0, show_answer=True, action=None):
        L = self.length
        x, y, t = int(self.x[index]), int(self.y[index]), int(self.t[index])
        goal = int(self.goal[index])
        cells = min(L + 1, 40)  # long corridors are drawn compressed
        cell = 12
        c = Canvas(max(260, 24 + cell * (cells + 1)), 130)
        cue = {1: "up", -1: "down"}[goal] if t == 0 else "-"
        c.text((8, 6), f"PassiveTMaze L={L}  t={t}/{L + 1}  x={x}  cue: {cue}")
        top = 60

        def col(px: int) -> int:
            return 12 + cell * round(px * (cells - 1) / max(L, 1))

        for i in range(cells):
            c.draw.rectangle((12 + cell * i, top, 12 + cell * i + cell - 2, top + cell - 2),
                             fill=(90, 90, 100))
        jx = col(L)
        for arm in (1, -1):
            ay = top - arm * cell
            outline = ANSWER if show_answer and arm == goal else None
            c.draw.rectangle((jx, ay, jx + cell - 2, ay + cell - 2), fill=(90, 90, 100),
                             outline=outline, width=2)
        ax, ay = col(x), top - y * cell
        c.draw.ellipse((ax + 1, ay + 1, ax + cell - 3, ay + cell - 3), fill=(240, 200, 60))
        if t == 0:
            c.draw.rectangle((2, top - goal * cell, 8, top - goal * cell + cell - 2), fill=ANSWER)
        if action is not None:
            # Where the move leads (as _transition); the last step's move is the scored choice.
            nx, ny = x + (1, 0, -1, 0)[action], y + (0, 1, 0, -1)[action]
            if not ((ny == 0 and 0 <= nx <= L) or (nx == L and abs(ny) == 1)):
                nx, ny = x, y
            right = (ny == goal) if t == L else None
            bx, by = col(nx), top - ny * cell
            if t == L or (nx, ny) == (x, y):  # the cell it ends on, or stays on
                c.pick_box((bx - 3, by - 3, bx + cell + 1, by + cell + 1), right)
            if (nx, ny) != (x, y):
                half = cell // 2 - 1
                c.arrow((ax + half, ay + half), (bx + half, by + half), right)
        return c.array()
