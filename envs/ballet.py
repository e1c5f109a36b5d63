"""Ballet (Lampinen et al. 2021, "Towards mental time travel", the HCAM paper).

An 11 x 11 room (walls on the border); the agent starts in the centre.
``num_dancers`` dancers stand on random spots of the 8 fixed spots three cells
from the centre (the compass points N, NE, E, SE, S, SW, W, NW), each with its
own shape and its own colour (8 shapes, 8 colours, all distinct in a room).

* Watch phase: the dancers perform one after another, in random order. Each
  performs one of 13 fixed 16-step dances (all distinct; every dancer a
  different one): a pattern of hops to the 8 cells around its spot and of
  vanishing for a beat. Each dance is followed by ``delay`` empty steps. The
  instruction token reads 0 ("watch") and the agent's actions are ignored for
  the whole phase, num_dancers * (16 + delay) steps.
* Instruction phase: the token names one of the dances performed (1 + its id).
  Stepping onto the dancer that performed it gives +1 and ends the episode
  (success); stepping onto any other dancer gives 0 and ends it. The episode
  is truncated at 320 steps (delay 16) or 1024 steps (delay 48).

Levels: num_dancers in {2, 4, 8} x delay in {16, 48}.
Actions (8): the compass moves N, NE, E, SE, S, SW, W, NW; walls block.
Chance: 1 / num_dancers. Memory horizon: from the last step of the named dance
to the earliest step on its dancer (three moves from the centre, the first at
the instruction): when the first dance is named, xi = num_dancers * (16 + delay)
- 12 (the last dance named: delay + 4).

Observation, by default (MultiDiscrete, length 122): the egocentric 11 x 11
view centred on the agent, row by row, with cell ids 0 floor, 1 wall (also
outside the room), 2 agent, 3 + 8 * shape + colour a dancer; then the
instruction token (0 watch, 1..13 dance). ``pixels=True``: the same view as a
99 x 99 RGB image (Box uint8, 9 x 9 pixels a cell); the instruction is drawn in
the agent's own (centre) cell as four bits, blank while watching.
"""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F

from envs import rng
from envs.batched import BatchedEnv
from envs.gridworld import AGENT_RGB, FLOOR_RGB, WALL_RGB, Window, room_walls
from envs.render import ANSWER, Canvas, palette

SIZE, CELL = 11, 9
CENTRE = (SIZE // 2) * SIZE + SIZE // 2
FLOOR, WALL, AGENT, DANCER = 0, 1, 2, 3
NUM_SHAPES = NUM_COLOURS = 8
NUM_IDS = DANCER + NUM_SHAPES * NUM_COLOURS
DANCE_STEPS = 16
# N, NE, E, SE, S, SW, W, NW: the 8 moves, and the 8 spots 3 cells from the centre.
COMPASS = [(-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1)]
SPOTS = [(5 + 3 * dr, 5 + 3 * dc) for dr, dc in COMPASS]
SPOT_NAMES = ["N", "NE", "E", "SE", "S", "SW", "W", "NW"]
TIME_LIMIT = {16: 320, 48: 1024}

# The 13 dances: per step, where the dancer stands relative to its spot, as on a
# numeric keypad (7 8 9 / 4 5 6 / 1 2 3; 5 = on the spot) or 0 = vanished.
DANCES = {
    "circle clockwise": "8963214789632147",
    "circle anticlockwise": "8741236987412369",
    "nod": "8525852585258525",
    "sway": "4565456545654565",
    "blink": "5050505050505050",
    "lean back-diagonal": "7535753575357535",
    "lean diagonal": "9515951595159515",
    "corners": "7799331177993311",
    "plus": "5856525458565254",
    "slow circle": "8899663322114477",
    "hop and vanish": "5555888800005555",
    "zigzag": "1379137913791379",
    "shimmy and vanish": "4646464600000000",
}
DANCE_NAMES = list(DANCES)
_KEYPAD = {"7": (-1, -1), "8": (-1, 0), "9": (-1, 1), "4": (0, -1), "5": (0, 0), "6": (0, 1),
           "1": (1, -1), "2": (1, 0), "3": (1, 1)}
HIDDEN = 1000  # flat offset that sends a vanished dancer to the spare grid column


def dance_offsets() -> torch.Tensor:
    """[13, 16] flat cell offsets of each dance step (HIDDEN = vanished)."""
    rows = []
    for steps in DANCES.values():
        rows.append([HIDDEN if ch == "0" else _KEYPAD[ch][0] * SIZE + _KEYPAD[ch][1] for ch in steps])
    return torch.tensor(rows, dtype=torch.int64)


@functools.lru_cache(maxsize=1)
def _distance_table() -> torch.Tensor:
    """[8 * 256, SIZE * SIZE] king-move distances to spot g with the spots in mask occ blocked.

    Row g * 256 + occ; blocked cells (walls, other occupied spots) read a large value.
    """
    walls = room_walls(SIZE, "cpu").reshape(SIZE, SIZE)
    big = 10_000
    rows = torch.arange(8 * 256)
    goal, occ = rows // 256, rows % 256
    blocked = walls.expand(8 * 256, SIZE, SIZE).clone()
    for j, (r, c) in enumerate(SPOTS):
        blocked[:, r, c] = ((occ >> j) & 1).bool() & (goal != j)
    dist = torch.full((8 * 256, SIZE, SIZE), big, dtype=torch.int64)
    for j, (r, c) in enumerate(SPOTS):
        dist[goal == j, r, c] = 0
    for _ in range(2 * SIZE):
        pad = F.pad(dist, (1, 1, 1, 1), value=big)
        best = dist
        for dr, dc in COMPASS:
            shifted = pad[:, 1 + dr : 1 + dr + SIZE, 1 + dc : 1 + dc + SIZE]
            best = torch.minimum(best, shifted + 1)
        dist = torch.where(blocked, big, best)
    return dist.reshape(8 * 256, SIZE * SIZE)


def _shape_masks() -> np.ndarray:
    y, x = np.mgrid[0:CELL, 0:CELL] - CELL // 2
    r = np.hypot(x, y)
    masks = [
        (abs(x) <= 3) & (abs(y) <= 3),  # square
        r <= 3.6,  # disc
        (y >= -3) & (y <= 3) & (abs(x) <= (y + 3) / 2 + 0.5),  # triangle
        abs(x) + abs(y) <= 4,  # diamond
        (abs(abs(x) - abs(y)) <= 1) & (r <= 4.3),  # X
        ((abs(x) <= 1) | (abs(y) <= 1)) & (abs(x) <= 4) & (abs(y) <= 4),  # plus
        (r >= 2.2) & (r <= 4.2),  # ring
        (abs(x) <= abs(y) + 0.5) & (abs(y) <= 4),  # hourglass
    ]
    return np.stack(masks)


@functools.lru_cache(maxsize=1)
def sprite_table() -> torch.Tensor:
    """[NUM_IDS + 14, 9, 9, 3] uint8 sprites: the cell ids, then the agent showing token 0..13."""
    sprites = np.zeros((NUM_IDS + 14, CELL, CELL, 3), dtype=np.uint8)
    sprites[FLOOR] = FLOOR_RGB
    sprites[WALL] = WALL_RGB
    masks = _shape_masks()
    colours = palette(NUM_COLOURS)
    for s in range(NUM_SHAPES):
        for c in range(NUM_COLOURS):
            tile = np.empty((CELL, CELL, 3), dtype=np.uint8)
            tile[:] = FLOOR_RGB
            tile[masks[s]] = colours[c]
            sprites[DANCER + s * NUM_COLOURS + c] = tile
    for token in range(14):
        tile = np.empty((CELL, CELL, 3), dtype=np.uint8)
        tile[:] = AGENT_RGB
        tile[1:-1, 1:-1] = (20, 20, 20)
        for bit, (r, c) in enumerate([(2, 2), (2, 5), (5, 2), (5, 5)]):
            if (token >> bit) & 1:
                tile[r : r + 2, c : c + 2] = (255, 210, 0)
        sprites[NUM_IDS + token] = tile
    sprites[AGENT] = sprites[NUM_IDS]
    return torch.from_numpy(sprites)


class Ballet(BatchedEnv):
    env_id = "recall/Ballet-v0"
    can_truncate = True
    python_rules = True

    def __init__(
        self,
        num_envs: int = 1,
        device: torch.device | str = "cpu",
        seed: int = 0,
        *,
        num_dancers: int = 2,
        delay: int = 16,
        pixels: bool = False,
        **kwargs,
    ):
        for name, value, levels in (("num_dancers", num_dancers, (2, 4, 8)), ("delay", delay, (16, 48))):
            # 2.0 == 2 and True == 1: the type check keeps floats and bools out
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or (
                    value not in levels):
                raise ValueError(f"{name}={value!r} is not a Ballet level; accepted: "
                                 + ", ".join(map(str, levels)))
        self.check_bool("pixels", pixels)
        self.num_dancers, self.delay, self.pixels = int(num_dancers), int(delay), bool(pixels)
        self.period = DANCE_STEPS + self.delay
        self.watch_steps = self.num_dancers * self.period
        self.time_limit = TIME_LIMIT[self.delay]
        super().__init__(num_envs, device, seed, **kwargs)
        xp, k = self.xp, self.num_dancers
        walls = room_walls(SIZE, "cpu")
        self._walls = xp.const(walls)
        # the room, then a wall column (outside the room, for the view), then a spare
        # column where a vanished dancer goes
        room = torch.where(walls, WALL, FLOOR)
        self._empty = xp.const(torch.cat([room, torch.tensor([WALL, FLOOR])]), dense=True)
        self._window = Window(SIZE, SIZE, xp)
        self._spot_flat = xp.const([r * SIZE + c for r, c in SPOTS])
        self._move_flat = xp.const([dr * SIZE + dc for dr, dc in COMPASS])
        self._dances = xp.const(dance_offsets().reshape(-1))
        # permutation tables flat: a copy's draw is one slice
        self._rows8, self._rows13 = (rng.permutation_table(n).shape[0] for n in (8, 13))
        self._perm8 = xp.const(rng.permutation_table(8).reshape(-1))
        self._perm13 = xp.const(rng.permutation_table(13)[:, :k].reshape(-1))
        # the oracle's distances: tensors only (the single env's oracle runs on a batch of one)
        self._dist = None if xp.python else _distance_table().to(self.device).reshape(-1)
        self._sprites = xp.const(sprite_table(), dense=True) if self.pixels else None
        self.pos, self.target, self.occupied = xp.full(CENTRE), xp.zeros(), xp.zeros()
        self.spot = xp.zeros(k)
        self.look = xp.zeros(k)
        self.dance = xp.zeros(k)

    @property
    def chance(self) -> float:
        return 1.0 / self.num_dancers

    @property
    def memory_horizon(self) -> int:
        # First dance ends at step 15; moves start at watch_steps and the third lands.
        return (self.watch_steps + 2) - (DANCE_STEPS - 1) + 1

    def _spaces(self):
        if self.pixels:
            obs = gym.spaces.Box(0, 255, (SIZE * CELL, SIZE * CELL, 3), dtype=np.uint8)
        else:
            nvec = [NUM_IDS] * (SIZE * SIZE) + [len(DANCES) + 1]
            obs = gym.spaces.MultiDiscrete(np.array(nvec, dtype=np.int64))
        return obs, gym.spaces.Discrete(8)

    def _new_episode(self, mask, key):
        xp, k = self.xp, self.num_dancers
        spot = xp.slice(self._perm8, rng.combine(key, 1) % self._rows8 * 8, k)
        shape = xp.slice(self._perm8, rng.combine(key, 2) % self._rows8 * 8, k)
        colour = xp.slice(self._perm8, rng.combine(key, 3) % self._rows8 * 8, k)
        dance = xp.slice(self._perm13, rng.combine(key, 4) % self._rows13 * k, k)
        target = rng.combine(key, 5) % k
        occupied = xp.sum(xp.rowwise(lambda j: 1 << j, spot))
        look = xp.rowwise(lambda a, b: DANCER + a * NUM_COLOURS + b, shape, colour)
        self.spot = xp.row_where(mask, spot, self.spot)
        self.look = xp.row_where(mask, look, self.look)
        self.dance = xp.row_where(mask, dance, self.dance)
        self.target = xp.where(mask, target, self.target)
        self.occupied = xp.where(mask, occupied, self.occupied)
        self.pos = xp.where(mask, CENTRE, self.pos)

    # ---------------------------------------------------------------- helpers
    @property
    def symbol_grid(self) -> tuple[int, int] | None:
        """The symbolic observation's first 121 symbols are the 11 x 11 view (for the policy's
        grid encoder); None with pixels."""
        return None if self.pixels else (SIZE, SIZE)

    def actions_matter(self):
        return self.t >= self.watch_steps

    def watching(self):
        return self.t < self.watch_steps

    def target_dance(self):
        return self.xp.get(self.dance, self.target)

    def instruction(self):
        return self.xp.where(self.watching(), 0, self.target_dance() + 1)

    def dancer_cells(self):
        """The flat cell of every dancer now, a row (SIZE * SIZE + 1, the spare column, when vanished)."""
        xp = self.xp
        home = xp.take(self._spot_flat, self.spot)
        slot = self.t // self.period
        beat = self.t % self.period
        dancing = self.watching() & (beat < DANCE_STEPS)
        performer = xp.minimum(slot, self.num_dancers - 1)  # only the performer moves
        step = xp.get(self.dance, performer)
        offset = xp.take(self._dances, step * DANCE_STEPS + xp.minimum(beat, DANCE_STEPS - 1))
        here = xp.get(home, performer)
        moved = xp.where(offset >= HIDDEN, SIZE * SIZE + 1, here + offset)
        return xp.put(home, performer, xp.where(dancing, moved, here))

    def grid(self):
        """Cell ids of the room (dancers placed), outside (wall), spare: SIZE * SIZE + 2 a copy."""
        return self.xp.with_values(self._empty, self.dancer_cells(), self.look)

    def _observe(self):
        xp = self.xp
        cells = self._window.cells(self.grid(), self.pos)
        token = self.instruction()
        if not self.pixels:
            return xp.obs(xp.put(cells, self._window.centre, AGENT), token)
        cells = xp.put(cells, self._window.centre, NUM_IDS + token)
        return xp.tiles(self._sprites, cells, SIZE, SIZE)

    def _transition(self, actions):
        xp = self.xp
        query = xp.not_(self.watching())
        dest = self.pos + xp.take(self._move_flat, actions) * xp.int(query)
        home = xp.take(self._spot_flat, self.spot)
        hit = query & xp.contains(home, dest)
        correct = hit & (dest == xp.get(home, self.target))
        self.pos = xp.where(xp.take(self._walls, dest), self.pos, dest)
        truncated = query & xp.not_(hit) & (self.t >= self.time_limit - 1)
        return xp.float(correct), hit, truncated, correct

    def path_actions(self, dancer: torch.Tensor) -> torch.Tensor:
        """King moves along a shortest path to dancer index ``dancer`` (0..k-1), around the others."""
        goal_spot = self.spot.gather(1, dancer[:, None])
        row = (goal_spot * 256 + self.occupied[:, None]) * (SIZE * SIZE)
        dist = self._dist[row + self.pos[:, None] + self._move_flat]
        return dist.argmin(1)

    def oracle_actions(self):
        """Any move while watching (ignored), then a shortest path to the named dancer."""
        return self.path_actions(self.target)

    # --------------------------------------------------------------- render
    action_names = tuple(SPOT_NAMES)

    def render_frame(self, index=0, show_answer=True, action=None):
        scale = 3
        grid = self.grid()[index, : SIZE * SIZE].clone()
        grid[int(self.pos[index])] = NUM_IDS + int(self.instruction()[index])
        sprites = sprite_table().numpy()
        img = sprites[grid.cpu().numpy()].reshape(SIZE, SIZE, CELL, CELL, 3)
        img = img.transpose(0, 2, 1, 3, 4).reshape(SIZE * CELL, SIZE * CELL, 3)
        img = img.repeat(scale, 0).repeat(scale, 1)
        side = SIZE * CELL * scale
        c = Canvas(side + 16, side + 64)
        c.image.paste(_to_image(img), (8, 56))
        t = int(self.t[index])
        if t < self.watch_steps:
            slot, beat = divmod(t, self.period)
            who = SPOT_NAMES[int(self.spot[index, slot])]
            if beat < DANCE_STEPS:
                name = DANCE_NAMES[int(self.dance[index, slot])]
                label = f"dancer {slot + 1}/{self.num_dancers} ({who}): {name} {beat + 1}/16"
            else:
                label = f"delay {beat - DANCE_STEPS + 1}/{self.delay}"
        else:
            label = f"go to: {DANCE_NAMES[int(self.target_dance()[index])]}"
        c.text((8, 6), f"Ballet  t={t}/{self.time_limit}")
        c.text((8, 24), label)
        if show_answer and t >= self.watch_steps:
            r, col = SPOTS[int(self.spot[index, int(self.target[index])])]
            x, y, s = 8 + col * CELL * scale, 56 + r * CELL * scale, CELL * scale
            c.draw.rectangle((x - 2, y - 2, x + s + 1, y + s + 1), outline=ANSWER, width=3)
        if action is not None and t >= self.watch_steps:
            self._draw_move(c, index, action, CELL * scale)
        return c.array()

    def _draw_move(self, c: Canvas, index: int, action: int, s: int) -> None:
        """The agent's move as an arrow; stepping onto a dancer is its choice."""
        r, col = divmod(int(self.pos[index]), SIZE)
        dr, dc = COMPASS[action]
        homes = [SPOTS[k] for k in self.spot[index].tolist()]
        dest = (r + dr, col + dc)
        right = (dest == homes[int(self.target[index])]) if dest in homes else None
        x, y = 8 + dest[1] * s, 56 + dest[0] * s
        if right is not None:
            c.pick_box((x, y, x + s - 1, y + s - 1), right)
        half = s // 2
        c.arrow((8 + col * s + half, 56 + r * s + half), (x + half, y + half), right)


def _to_image(arr: np.ndarray):
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(arr))
