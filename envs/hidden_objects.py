"""Hidden objects: remember which box hides which object.

A ``size`` x ``size`` room (walls on the border). The agent starts at a random
cell at least three cells from the walls. Objects of ``num_objects`` distinct
kinds (drawn from ``num_kinds``) lie on random spots of the ring of 8 cells two
apart around the start cell (offsets {-2, 0, 2}^2 minus the start), so all of
them are inside the agent's first view and no two objects touch.

* Show phase (``show_steps`` steps, from t = 0): the objects are visible. The
  agent is held still (actions are ignored), so it sees every object.
* Delay phase (``delay`` steps): every object is covered by an identical box.
  The agent moves freely; walls and boxes block it.
* Query phase (at most ``query_steps`` steps): the observation carries a cue
  naming one of the hidden kinds. Stepping onto the box that hides it gives
  +1 and ends the episode (success); stepping onto any other box gives 0 and
  ends it; reaching the time limit truncates the episode with 0.

Actions: 0 noop, 1 up, 2 right, 3 down, 4 left.
Chance: 1 / num_objects for a policy that walks to some box.
Memory horizon: from the last sight of the objects (step show_steps - 1) to the
first query step, when an agent already next to the box can step onto it:
xi = delay + 2; a longer walk adds its length.

Observation (MultiDiscrete, length view*view + 2, or size*size + 2 with
``full_view``): the cells of the egocentric window row by row (cell ids: 0
floor, 1 wall (also outside the room), 2 agent, 3 box, 3 + k object kind k),
then ``[phase, cue]`` with phase 0 show, 1 delay, 2 query and cue 0 = none,
k = kind k.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from envs import rng
from envs.batched import BatchedEnv
from envs.gridworld import AGENT_RGB, FLOOR_RGB, WALL_RGB, Window, draw_grid, room_walls
from envs.render import ANSWER, Canvas, palette

SHOW, DELAY, QUERY = 0, 1, 2
FLOOR, WALL, AGENT, BOX = 0, 1, 2, 3
NOOP, UP, RIGHT, DOWN, LEFT = 0, 1, 2, 3, 4
BOX_RGB = (150, 105, 60)
# The 8 spots around the start cell, two cells apart.
SPOT_OFFSETS = [(dr, dc) for dr in (-2, 0, 2) for dc in (-2, 0, 2) if (dr, dc) != (0, 0)]


class HiddenObjects(BatchedEnv):
    env_id = "recall/HiddenObjects-v0"
    can_truncate = True
    python_rules = True

    def __init__(
        self,
        num_envs: int = 1,
        device: torch.device | str = "cpu",
        seed: int = 0,
        *,
        size: int = 9,
        view: int = 5,
        full_view: bool = False,
        num_objects: int = 3,
        num_kinds: int = 8,
        show_steps: int = 4,
        delay: int = 16,
        query_steps: int | None = None,
        **kwargs,
    ):
        self.check_range("size", size, 7, 15)
        self.check_range("view", view, 5, 15)
        if view % 2 == 0:
            raise ValueError(f"view={view!r} must be odd; accepted: 5, 7, 9, 11, 13, 15")
        self.check_bool("full_view", full_view)
        self.check_range("num_objects", num_objects, 1, 8)
        self.check_range("num_kinds", num_kinds, num_objects, 16)
        self.check_range("show_steps", show_steps, 1, 1000)
        self.check_range("delay", delay, 0, 100_000)
        if query_steps is None:
            query_steps = 4 * size
        # The oracle's longest walk is 2 * size - 4 steps; shorter limits would fail it.
        self.check_range("query_steps", query_steps, 2 * size, 100_000)
        self.size, self.view, self.full_view = size, view, bool(full_view)
        self.num_objects, self.num_kinds = num_objects, num_kinds
        self.show_steps, self.delay, self.query_steps = show_steps, delay, query_steps
        self.query_start = show_steps + delay
        self.query_end = self.query_start + query_steps
        super().__init__(num_envs, device, seed, **kwargs)
        xp, s = self.xp, size
        walls = room_walls(s, "cpu")
        # one extra last column: what lies outside the room (read by the egocentric window)
        empty = torch.cat([torch.where(walls, -1, 0), torch.full((1,), -1)]).to(torch.int64)
        self._empty_layout = xp.const(empty, dense=True)
        self._window = Window(s, view, xp)
        # permutation tables flat: a copy's draw is one slice
        self._perm_rows = rng.permutation_table(8).shape[0]
        self._spot_perms = xp.const(rng.permutation_table(8)[:, :num_objects].reshape(-1))
        self._kind_perms = xp.const((rng.permutation_table(num_kinds)[:, :num_objects] + 1).reshape(-1))
        self._kind_rows = rng.permutation_table(num_kinds).shape[0]
        self._spot_flat = xp.const([dr * s + dc for dr, dc in SPOT_OFFSETS])
        self._move_flat = xp.const([0, -s, 1, s, -1])
        # layout: -1 wall, 0 floor, k > 0 the object of kind k (boxed after the show phase)
        # cell id of a layout value v (row 0: show phase, row 1: later), read at [row, v + 1]
        lut = [[WALL, FLOOR] + [BOX + k for k in range(1, num_kinds + 1)],
               [WALL, FLOOR] + [BOX] * num_kinds]
        self._cell_ids = xp.const(torch.tensor(lut).reshape(-1), dense=True)
        self.layout = xp.with_values(self._empty_layout, xp.zeros(0), xp.zeros(0))  # a copy each
        self.pos, self.start = xp.zeros(), xp.zeros()
        self.target_pos, self.target_kind = xp.zeros(), xp.zeros()
        self.obj_pos = xp.zeros(num_objects)
        self.obj_kind = xp.full(1, num_objects)

    @property
    def chance(self) -> float:
        return 1.0 / self.num_objects

    @property
    def memory_horizon(self) -> int:
        return self.delay + 2

    def _spaces(self):
        cells = self.size**2 if self.full_view else self.view**2
        nvec = [4 + self.num_kinds] * cells + [3, self.num_kinds + 1]
        return gym.spaces.MultiDiscrete(np.array(nvec, dtype=np.int64)), gym.spaces.Discrete(5)

    def _new_episode(self, mask, key):
        xp, s, inner, k = self.xp, self.size, self.size - 6, self.num_objects
        start = (3 + rng.combine(key, 1) % inner) * s + 3 + rng.combine(key, 2) % inner
        spots = xp.slice(self._spot_perms, rng.combine(key, 3) % self._perm_rows * k, k)
        obj_pos = xp.row_add(xp.take(self._spot_flat, spots), start)
        obj_kind = xp.slice(self._kind_perms, rng.combine(key, 4) % self._kind_rows * k, k)
        target = rng.combine(key, 5) % k
        layout = xp.with_values(self._empty_layout, obj_pos, obj_kind)
        self.layout = xp.row_where(mask, layout, self.layout)
        self.obj_pos = xp.row_where(mask, obj_pos, self.obj_pos)
        self.obj_kind = xp.row_where(mask, obj_kind, self.obj_kind)
        self.start = xp.where(mask, start, self.start)
        self.pos = xp.where(mask, start, self.pos)
        self.target_pos = xp.where(mask, xp.get(obj_pos, target), self.target_pos)
        self.target_kind = xp.where(mask, xp.get(obj_kind, target), self.target_kind)

    def actions_matter(self):
        return self.t >= self.show_steps

    def phase(self):
        xp = self.xp
        return xp.int(self.t >= self.show_steps) + xp.int(self.t >= self.query_start)

    def _observe(self):
        xp = self.xp
        phase = self.phase()
        if self.full_view:
            v = xp.cols(self.layout, 0, self.size**2)
        else:
            v = self._window.cells(self.layout, self.pos)
        offset = xp.int(phase != SHOW) * (self.num_kinds + 2) + 1
        cells = xp.take(self._cell_ids, xp.row_add(v, offset))
        cells = xp.put(cells, self.pos if self.full_view else self._window.centre, AGENT)
        cue = xp.where(phase == QUERY, self.target_kind, 0)
        return xp.obs(cells, phase, cue)

    def _transition(self, actions):
        xp = self.xp
        phase = self.phase()
        query = phase == QUERY
        dest = self.pos + xp.take(self._move_flat, actions) * xp.int(phase != SHOW)
        v = xp.get(self.layout, dest)
        hit = query & (v > 0)
        correct = hit & (dest == self.target_pos)
        self.pos = xp.where((v == 0) | hit, dest, self.pos)
        truncated = query & xp.not_(hit) & (self.t >= self.query_end - 1)
        return xp.float(correct), hit, truncated, correct

    def path_actions(self, goal: torch.Tensor) -> torch.Tensor:
        """Actions along a shortest path to the object spot ``goal`` (flat cell) of every copy.

        Objects lie on the lattice of cells an even number of rows and columns
        from the start cell. While the goal is in neither the agent's row nor
        its column, the agent takes a step towards it that lands off that
        lattice (one of the two always does), so it never meets a box. Once
        aligned it walks straight; if a wrong box is next, it steps aside onto a
        row (column) off the lattice and passes it. The walk is at most
        Manhattan distance + 2 steps.
        """
        s = self.size
        r, c = self.pos // s, self.pos % s
        gr, gc = goal // s, goal % s
        r0, c0 = self.start // s, self.start % s
        dr, dc = gr - r, gc - c
        a_v = torch.where(dr < 0, UP, DOWN)
        a_h = torch.where(dc < 0, LEFT, RIGHT)
        odd_r, odd_c = (r - r0) % 2 == 1, (c - c0) % 2 == 1
        v_on_lattice, h_on_lattice = odd_r & ~odd_c, ~odd_r & odd_c
        pick_h = ~h_on_lattice & (v_on_lattice | (dc.abs() >= dr.abs()))
        action = torch.where(pick_h, a_h, a_v)

        def blocked(step):
            nxt = self.pos + step
            return (self.layout.gather(1, nxt[:, None]).squeeze(1) > 0) & (nxt != goal)

        row_aligned = (dr == 0) & (dc != 0)
        col_aligned = (dc == 0) & (dr != 0)
        side_v = torch.where(r > r0, UP, DOWN)
        side_h = torch.where(c > c0, LEFT, RIGHT)
        along_row = torch.where(blocked(dc.sign()), side_v, a_h)
        along_col = torch.where(blocked(dr.sign() * s), side_h, a_v)
        action = torch.where(row_aligned, along_row, torch.where(col_aligned, along_col, action))
        return torch.where((dr == 0) & (dc == 0), NOOP, action)

    def oracle_actions(self):
        """Wait until the cue, then walk the shortest path to the box hiding the cued kind."""
        return torch.where(self.phase() == QUERY, self.path_actions(self.target_pos), NOOP)

    action_names = ("noop", "up", "right", "down", "left")

    def render_frame(self, index=0, show_answer=True, action=None):
        s, cell = self.size, 24
        t = int(self.t[index])
        phase = int(self.phase()[index])
        layout = self.layout[index].tolist()
        pos, target = int(self.pos[index]), int(self.target_pos[index])
        colors = palette(self.num_kinds)
        grid = []
        for i in range(s):
            row = []
            for j in range(s):
                v = layout[i * s + j]
                if v < 0:
                    row.append(WALL_RGB)
                elif v > 0:
                    row.append(colors[v - 1] if phase == SHOW else BOX_RGB)
                else:
                    row.append(FLOOR_RGB)
            grid.append(row)
        pr, pc = divmod(pos, s)
        grid[pr][pc] = AGENT_RGB
        c = Canvas(max(260, s * cell + 16), s * cell + 56)
        label = ["show", f"delay {t - self.show_steps + 1}/{self.delay}", "query"][phase]
        c.text((8, 6), f"HiddenObjects  t={t}  {label}")
        mark = [divmod(target, s)] if show_answer and phase == QUERY else []
        draw_grid(c, 8, 48, cell, grid, highlight=mark, outline=ANSWER)
        # kinds are written on their boxes in faint text once hidden, so videos stay readable
        for k, p in zip(self.obj_kind[index].tolist(), self.obj_pos[index].tolist(), strict=True):
            i, j = divmod(p, s)
            fill = (0, 0, 0) if phase == SHOW else (90, 60, 35)
            c.text((8 + j * cell + 8, 48 + i * cell + 6), str(k), fill=fill)
        if not self.full_view:
            h = self.view // 2
            c.draw.rectangle(
                (8 + (pc - h) * cell, 48 + (pr - h) * cell, 8 + (pc + h + 1) * cell - 1,
                 48 + (pr + h + 1) * cell - 1),
                outline=AGENT_RGB, width=1,
            )
        if phase == QUERY:
            kind = int(self.target_kind[index])
            c.text((8, 24), "cue:")
            c.tile(44, 20, 20, kind, colors)
        if action is not None and phase != SHOW:
            self._draw_move(c, cell, pos, layout, phase, target, action)
        return c.array()

    def _draw_move(self, c, cell, pos, layout, phase, target, action) -> None:
        """The agent's move as an arrow; stepping onto a box in the query is its choice."""
        s = self.size
        dest = pos + (0, -s, 1, s, -1)[action]
        pr, pc = divmod(pos, s)
        dr, dc = divmod(dest, s)
        chose = phase == QUERY and layout[dest] > 0
        right = (dest == target) if chose else None
        centre = cell // 2
        if chose or dest == pos:  # the box it steps onto, or its own cell when it stays
            c.pick_box((8 + dc * cell, 48 + dr * cell, 8 + (dc + 1) * cell - 1,
                        48 + (dr + 1) * cell - 1), right)
        else:
            c.arrow((8 + pc * cell + centre, 48 + pr * cell + centre),
                    (8 + dc * cell + centre, 48 + dr * cell + centre), right)
