"""MiniGrid's Memory rooms behind the batched tensor interface of :class:`BatchedEnv`.

MiniGrid's simulator is Python, so this is the one adapter in ``envs/`` that
steps its copies in a Python loop on the CPU (one ``MemoryEnv`` per copy,
stepped in one ``step()`` call); everything it returns is a torch tensor on the
chosen device, so trainers run on it unchanged. Per step it pays one
device->host copy of the actions (when they live on an accelerator) and a few
host->device copies of the packed results; nothing else syncs.

The task (``MiniGrid-MemoryS{7,9,11,13}-v0``, ``MiniGrid-MemoryS{13,17}Random-v0``):
the agent starts facing east in a hallway that leads west into a small room
holding a green key or ball (the cue), east to a north-south corridor with a
key at one end and a ball at the other. Stepping next to the object that
matches the cue gives ``1 - 0.9 * steps / max_steps`` and ends the episode;
stepping next to the other gives 0 and ends it; ``max_steps = 5 * size**2``
truncates it. ``success`` = reward > 0 at termination. Chance (a navigator that
forgot the cue) = 0.5. In the Random rooms the hallway length varies.

Observation: MiniGrid's egocentric 7x7 partial view (object, colour, state per
cell) as ``uint8`` ``[7, 7, 3]``, as ``ImgObsWrapper`` gives it; the mission
string (always the same) and the direction (the view is already egocentric)
are dropped. The views are bit-identical to MiniGrid's ``gen_obs()["image"]``
but not made by it: MiniGrid builds each view from Python objects (slice,
rotations, occlusion, encode: about 0.5 ms a copy-step, nearly all of a step).
A Memory room never changes within an episode apart from the agent (pickup is
MiniGrid's toggle there, a no-op on keys, balls and walls; drop needs a carried
object, and nothing can be picked up), so each copy's room is encoded once per
episode and every step gathers all copies' views at once with numpy
(:class:`_Views`). Each ``MemoryEnv`` has its ``gen_obs`` replaced by a stub
so that its ``step`` and ``reset`` skip the slow view; MiniGrid's dynamics,
rewards, ends and ``render`` are untouched, and ``MiniGridEnv.gen_obs(env)``
still gives the real observation.

Actions: ``Discrete(3)`` = left, right, forward by default (MiniGrid's 0..2; the
other four do nothing in these rooms but spend a step);
``full_action_space=True`` gives MiniGrid's ``Discrete(7)``.

Seeding: episode e of copy i is MiniGrid's ``reset(seed=episode_seed(seed, i, e))``,
so copy i's episodes depend only on (seed, i), and a plain
``gymnasium.make(env_id)`` reset with those seeds replays copy i.

Oracle: a scripted solver. It reads the matching object's cell from the
simulator (``success_pos``) and follows a shortest path over (cell, direction)
states, found by a backward breadth-first search once per episode; it never
steps next to the wrong object. It is optimal (fewest steps, so highest return).
"""

from __future__ import annotations

import copy
from collections import deque
from typing import Any

import gymnasium as gym
import minigrid  # noqa: F401  (registers the MiniGrid ids with gymnasium)
import numpy as np
import torch
from minigrid.core.constants import OBJECT_TO_IDX
from minigrid.core.world_object import Wall

from envs import rng
from envs.batched import BatchedEnv
from envs.registration import MINIGRID_IDS, MINIGRID_ROOMS, minigrid_id

# MiniGrid's direction index -> (dx, dy): east, south, west, north.
_DIR_VEC = ((1, 0), (0, 1), (-1, 0), (0, -1))
LEFT, RIGHT, FORWARD = 0, 1, 2
_ACTION_NAMES = ("left", "right", "forward", "pickup", "drop", "toggle", "done")
# Columns of the packed int64 result sent to the device in one copy.
_T, _EPISODE, _LEN, _TERM, _TRUNC, _SUCCESS = range(6)


def episode_seed(seed: int, copy: int, episode: int) -> int:
    """The MiniGrid reset seed of episode ``episode`` (0, 1, ...) of copy ``copy``."""
    key = rng.copy_keys(int(seed), torch.tensor([int(copy)], dtype=torch.int64))
    return int(rng.combine(key, torch.tensor([int(episode)], dtype=torch.int64))[0])


class MiniGridMemory(BatchedEnv):
    """N MiniGrid Memory rooms stepped on the CPU, presented as device tensors.

    See the module docstring for the task, observation, actions, seeding and
    oracle. ``check_actions`` is accepted for the common signature, but the
    range check always runs: the actions are on the host anyway, so it is free.
    """

    can_truncate = True

    def __init__(
        self,
        env_id: str,
        num_envs: int = 1,
        device: torch.device | str = "cpu",
        seed: int = 0,
        *,
        full_action_space: bool = False,
        room: str | None = None,
        **kwargs,
    ):
        if room is not None and env_id != minigrid_id(room):
            raise ValueError(f"room={room!r} does not name {env_id!r}; accepted rooms: "
                             f"{', '.join(MINIGRID_ROOMS)}")
        if env_id not in MINIGRID_IDS:
            raise ValueError(
                f"env_id={env_id!r} is not a MiniGrid Memory room; accepted: {', '.join(MINIGRID_IDS)}"
            )
        self.check_bool("full_action_space", full_action_space)
        self.env_id = env_id
        self.full_action_space = bool(full_action_space)
        self.check_count("num_envs", num_envs)  # checked here: the copies are built before super()
        self._envs = [gym.make(env_id, render_mode="rgb_array").unwrapped for _ in range(num_envs)]
        for env in self._envs:
            env.gen_obs = _no_obs  # _Views makes the observations; see the module docstring
        self._views = _Views(self._envs)
        self._plans: list[tuple[int, dict] | None] = [None] * num_envs  # (episode, distance map)
        super().__init__(num_envs, device, seed, **kwargs)
        n = self.num_envs
        self._t = np.zeros(n, dtype=np.int64)
        self._ret = np.zeros(n, dtype=np.float64)

    @property
    def symbol_counts(self) -> tuple[int, ...]:
        """How many values each channel of a cell holds (object, colour, state ids).

        The observation is a uint8 image by type, but its values are ids, not
        intensities: encoders that read this embed them as symbols.
        """
        from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX, STATE_TO_IDX

        return len(OBJECT_TO_IDX), len(COLOR_TO_IDX), len(STATE_TO_IDX)

    @property
    def chance(self) -> float:
        """Success of a policy that reaches one of the two objects without the cue."""
        return 0.5

    @property
    def max_steps(self) -> int:
        return int(self._envs[0].max_steps)

    @property
    def memory_horizon(self) -> int:
        """The shortest solution's horizon in the longest hallway the room draws.

        An agent that starts next to the start room (x = 1) sees the cue at step 0 and
        reaches the matching object's cell at step hallway_end + 1 (hallway_end forward
        moves, one turn, one move): xi = hallway_end + 2 with hallway_end = width - 3,
        the fixed rooms' length and the Random rooms' longest. An agent that starts
        further east, or detours, carries the cue for longer, so this is a lower bound.
        """
        return int(self._envs[0].width) - 1

    def _spaces(self):
        image = self._envs[0].observation_space["image"]
        obs = gym.spaces.Box(0, 255, image.shape, dtype=np.uint8)
        return obs, gym.spaces.Discrete(7 if self.full_action_space else 3)

    # ------------------------------------------------------------- seeding
    def _set_seed(self, seed: int) -> None:
        super()._set_seed(seed)
        if not hasattr(self, "_copies_cpu"):
            self._copies_cpu = self.copies.cpu()  # once, at construction
        self._key_cpu = rng.copy_keys(self.seed_value, self._copies_cpu)
        self._episode = np.full(self.num_envs, -1, dtype=np.int64)

    def _start(self, index: np.ndarray, obs: np.ndarray) -> None:
        """Start the next episode of the copies ``index``; write their first observation."""
        self._episode[index] += 1
        self._t[index] = 0
        self._ret[index] = 0.0
        keys = rng.combine(self._key_cpu[index], torch.from_numpy(self._episode[index]))
        for i, s in zip(index.tolist(), keys.tolist(), strict=True):
            self._plans[i] = None  # a reseeded reset reuses episode numbers: drop the old plan
            self._envs[i].reset(seed=int(s))
            self._views.load_room(i)
        obs[index] = self._views.observe(index)

    # ------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        # The copies are MiniGrid objects (grid, agent, their own RNG): kept whole, pickled.
        return {**super().state_dict(), "minigrid": copy.deepcopy(self._envs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state.get("minigrid", ())) != self.num_envs:
            raise ValueError("env state does not fit this env: it holds no MiniGrid copies "
                             f"for {self.num_envs} envs of {self.env_id}")
        super().load_state_dict(state)
        self._envs = copy.deepcopy(state["minigrid"])
        # The views read the copies' rooms from an encoding made at each reset: remade here.
        self._views = _Views(self._envs)
        for i in range(self.num_envs):
            self._views.load_room(i)
        self._plans = [None] * self.num_envs  # the oracle's caches: rebuilt on demand

    # ------------------------------------------------------------ gymnasium
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start a new episode in every copy; ``seed`` restarts each copy's episode sequence."""
        if seed is not None:
            self._set_seed(seed)
        obs = np.empty((self.num_envs, *self.single_observation_space.shape), dtype=np.uint8)
        self._start(np.arange(self.num_envs), obs)
        self._sync_counters()
        return self._to_device(obs), {}

    def step(self, actions):
        acts = self._host_actions(actions).tolist()
        n = self.num_envs
        reward = np.zeros(n, dtype=np.float64)
        ints = np.zeros((n, 6), dtype=np.int64)
        for i, (env, a) in enumerate(zip(self._envs, acts, strict=True)):
            _, r, te, tr, _ = env.step(a)
            reward[i] = r
            ints[i, _TERM] = te
            ints[i, _TRUNC] = tr
        obs = self._views.observe(np.arange(n))
        self._t += 1
        self._ret += reward
        done = (ints[:, _TERM] | ints[:, _TRUNC]).astype(bool)
        ints[:, _SUCCESS] = ints[:, _TERM].astype(bool) & (reward > 0)
        ints[:, _LEN] = self._t
        floats = np.zeros((n, 3), dtype=np.float32)
        floats[:, 0], floats[:, 1] = reward, self._ret
        # copied: on the CPU the tensor would share memory with ``obs``, rewritten below
        final = self._to_device(obs.copy()) if self.final_observation else None
        if done.any():
            self._start(np.flatnonzero(done), obs)
        floats[:, 2] = self._ret
        ints[:, _T] = self._t
        ints[:, _EPISODE] = self._episode
        ints_d = torch.from_numpy(ints).to(self.device)
        floats_d = torch.from_numpy(floats).to(self.device)
        self.t, self.episode = ints_d[:, _T], ints_d[:, _EPISODE]
        self.episode_return = floats_d[:, 2]
        terminated, truncated = ints_d[:, _TERM].bool(), ints_d[:, _TRUNC].bool()
        info: dict[str, Any] = {
            "done": terminated | truncated,
            "success": ints_d[:, _SUCCESS].bool(),
            "episode_return": floats_d[:, 1],
            "episode_length": ints_d[:, _LEN],
        }
        if final is not None:
            info["final_observation"] = final
        return self._to_device(obs), floats_d[:, 0], terminated, truncated, info

    action_names = _ACTION_NAMES

    def render_frame(self, index: int = 0, show_answer: bool = True, action: int | None = None
                     ) -> np.ndarray:
        """MiniGrid's own ``rgb_array`` frame of copy ``index`` (whole room, agent's view lit).

        The agent is MiniGrid's red triangle; its action is named beside the frame by the
        video (MiniGrid draws no answer or move marks)."""
        return self._envs[index].render()

    def close(self, **kwargs):
        for env in self._envs:
            env.close()
        super().close(**kwargs)

    # -------------------------------------------------------------- oracle
    def oracle_actions(self) -> torch.Tensor:
        """Each copy's next step on a shortest path to the object matching the cue."""
        out = np.empty(self.num_envs, dtype=np.int64)
        for i, env in enumerate(self._envs):
            plan = self._plans[i]
            if plan is None or plan[0] != self._episode[i]:
                plan = (int(self._episode[i]), _distances_to_goal(env))
                self._plans[i] = plan
            out[i] = _best_action(env, plan[1])
        return torch.from_numpy(out).to(self.device)

    # ------------------------------------------------------------ internals
    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self.device)

    def _sync_counters(self) -> None:
        self.t = torch.from_numpy(self._t.copy()).to(self.device)
        self.episode = torch.from_numpy(self._episode.copy()).to(self.device)
        self.episode_return = torch.from_numpy(self._ret.astype(np.float32)).to(self.device)

    def _host_actions(self, actions) -> np.ndarray:
        """Validate the actions and bring them to the host (the simulator is Python)."""
        actions = self._action_tensor(actions)
        host = actions.to("cpu", torch.int64).numpy()
        n = int(self.single_action_space.n)
        bad = np.flatnonzero((host < 0) | (host >= n))
        if bad.size:
            first = int(bad[0])
            names = ", ".join(f"{k}={name}" for k, name in enumerate(_ACTION_NAMES[:n]))
            raise ValueError(
                f"{self.env_id}: action {int(host[first])} of copy {first} is out of range; "
                f"accepted: 0..{n - 1} ({names})"
            )
        return host


def _no_obs() -> None:
    """Stands in for ``MiniGridEnv.gen_obs`` inside ``step``/``reset`` (see the module docstring)."""
    return None


# MiniGrid's cell encodings (Grid.encode): cells the agent can't see stay all zero ("unseen").
_EMPTY = np.array([OBJECT_TO_IDX["empty"], 0, 0], dtype=np.uint8)
_WALL = np.array(Wall().encode(), dtype=np.uint8)  # Grid.slice fills cells off the grid with walls
_EMPTY_CELL = (OBJECT_TO_IDX["empty"], 0, 0, True)  # an empty cell's code bytes, and sight passes it


class _Views:
    """MiniGrid's partial views (``gen_obs()["image"]``) of many copies, computed together.

    ``load_room(i)`` encodes copy i's whole room once per episode (``Grid.encode``
    of the full grid, 3 bytes a cell) with a fourth byte per cell saying whether
    sight passes through it (empty, or ``see_behind()``), padded by ``view - 1``
    cells of wall: what ``Grid.slice`` gives for cells off the grid. A cell's 4
    bytes are read as one ``uint32``, so a view is one gather. ``observe(index)``
    builds the views of those copies from their agents' cells and directions:

    - window: MiniGrid slices the ``view x view`` square in front of the agent
      (``get_view_exts``) and turns it left ``dir + 1`` times, so the agent sits
      at the bottom centre ``(view // 2, view - 1)`` looking up. Cell ``(vx, vy)``
      of the view is therefore the world cell ``agent + (view - 1 - vy) * forward
      + (vx - view // 2) * right`` (``forward`` = MiniGrid's ``DIR_TO_VEC[dir]``,
      ``right`` = ``(-forward_y, forward_x)``).
    - occlusion: ``Grid.process_vis`` (MemoryEnv sets ``see_through_walls=False``)
      marks the agent's cell seen, then goes up the view one row at a time; a row's
      result depends only on the seen cells handed up from the row below and on
      which cells of the row let sight through, so a table over those two bit
      sets (:func:`_row_visibility_table`) does one row of every copy in one
      lookup.
    - unseen cells are all zero, as ``Grid.encode`` leaves them; the agent's own
      cell holds the carried object or empty (``gen_obs_grid``): always empty here,
      as nothing can be picked up in a Memory room.
    """

    def __init__(self, envs: list):
        env = envs[0]
        self.envs = envs
        self.view = v = int(env.agent_view_size)
        self.pad = p = v - 1
        w, h = int(env.width) + 2 * p, int(env.height) + 2 * p
        self.cells = np.zeros((len(envs), w, h, 4), dtype=np.uint8)  # 3 code bytes, clear
        self.cells[..., :3] = _WALL
        self.words = self.cells.view(np.uint32).reshape(-1)  # one word per cell, same memory
        self.room_words = w * h
        forward = np.array(_DIR_VEC)  # [4, 2]
        right = np.stack([-forward[:, 1], forward[:, 0]], axis=1)
        ahead = (v - 1 - np.arange(v))[None, :]  # by vy
        side = (np.arange(v) - v // 2)[:, None]  # by vx
        dx = forward[:, 0, None, None] * ahead + right[:, 0, None, None] * side  # [4, v, v]
        dy = forward[:, 1, None, None] * ahead + right[:, 1, None, None] * side
        self.offsets = (dx + p) * h + (dy + p)  # word offset of view cell [dir, vx, vy]
        self.row_seen, self.row_up = _row_visibility_table(v)

    def load_room(self, i: int) -> None:
        """Encode copy ``i``'s room (call after each reset; the room is static within an episode)."""
        grid, p = self.envs[i].grid, self.pad
        w, h = grid.width, grid.height
        # What ``grid.encode()`` and each cell's ``see_behind()`` give, in one pass over
        # the grid's flat row-major list: a third of the time of encode's per-cell
        # ``get`` and item writes, and a reset is most of a step here.
        codes = [_EMPTY_CELL if c is None else (*c.encode(), c.see_behind()) for c in grid.grid]
        self.cells[i, p:p + w, p:p + h] = np.array(codes, dtype=np.uint8).reshape(h, w, 4).transpose(1, 0, 2)

    def observe(self, index: np.ndarray) -> np.ndarray:
        """The views ``[len(index), view, view, 3]`` of copies ``index`` at their current state."""
        v, m = self.view, len(index)
        envs = self.envs
        agents = [envs[i] for i in index.tolist()]
        xy = np.array([e.agent_pos for e in agents], dtype=np.int64).reshape(m, 2)
        d = np.array([e.agent_dir for e in agents], dtype=np.int64)
        base = index * self.room_words + xy[:, 0] * self.cells.shape[2] + xy[:, 1]
        words = self.words[base[:, None, None] + self.offsets[d]]  # [m, vx, vy]
        clear = words.view(np.uint8).reshape(m, v, v, 4)[..., 3]
        clear_bits = np.packbits(clear, axis=1, bitorder="little")[:, 0].astype(np.intp)  # [m, vy]
        seen_bits = np.empty((m, v), dtype=np.uint8)
        up = np.full(m, 1 << (v // 2), dtype=np.intp)  # the agent's cell, bottom row
        for y in reversed(range(v)):
            row = up | (clear_bits[:, y] << v)
            seen_bits[:, y] = self.row_seen[row]
            up = self.row_up[row]
        seen = np.unpackbits(seen_bits[:, None, :], axis=1, count=v, bitorder="little")
        words *= seen  # unseen cells -> 0
        image = np.ascontiguousarray(words.view(np.uint8).reshape(m, v, v, 4)[..., :3])
        image[:, v // 2, v - 1] = _EMPTY
        return image


def _row_visibility_table(width: int) -> tuple[np.ndarray, np.ndarray]:
    """One row of ``Grid.process_vis``, tabulated for every input.

    Index ``seen | clear << width``: ``seen`` = the row's cells already marked seen
    (bit i = cell i), ``clear`` = its cells that let sight through. Returns the
    row's seen cells after MiniGrid's left-to-right then right-to-left sweeps,
    and the cells of the row above that those sweeps mark seen.
    """
    code = np.arange(1 << (2 * width))
    bit = np.arange(width)
    seen = ((code[:, None] >> bit) & 1).astype(bool)  # [codes, width]
    clear = ((code[:, None] >> (bit + width)) & 1).astype(bool)
    up = np.zeros_like(seen)
    for i in range(width - 1):  # left to right: a seen, clear cell shows its right and upper cells
        through = seen[:, i] & clear[:, i]
        seen[:, i + 1] |= through
        up[:, i + 1] |= through
        up[:, i] |= through
    for i in reversed(range(1, width)):  # right to left, likewise to the left
        through = seen[:, i] & clear[:, i]
        seen[:, i - 1] |= through
        up[:, i - 1] |= through
        up[:, i] |= through
    weights = 1 << bit
    return (seen @ weights).astype(np.intp), (up @ weights).astype(np.intp)


def _passable(env, x: int, y: int) -> bool:
    if (x, y) == tuple(env.failure_pos):
        return False  # stepping there ends the episode with 0
    cell = env.grid.get(x, y)
    return cell is None or cell.can_overlap()


def _distances_to_goal(env) -> dict[tuple[int, int, int], int]:
    """Fewest left/right/forward steps from each (x, y, dir) to the matching object's cell."""
    gx, gy = (int(v) for v in env.success_pos)
    dist = {(gx, gy, d): 0 for d in range(4)}
    queue = deque(dist)
    while queue:
        x, y, d = queue.popleft()
        k = dist[(x, y, d)] + 1
        preds = [(x, y, (d + 1) % 4), (x, y, (d - 1) % 4)]  # turned left / right into d
        dx, dy = _DIR_VEC[d]
        px, py = x - dx, y - dy
        if (px, py) != (gx, gy) and 0 <= px < env.width and 0 <= py < env.height and _passable(env, px, py):
            preds.append((px, py, d))  # moved forward into (x, y)
        for s in preds:
            if s not in dist:
                dist[s] = k
                queue.append(s)
    return dist


def _best_action(env, dist: dict) -> int:
    x, y = (int(v) for v in env.agent_pos)
    d = int(env.agent_dir)
    dx, dy = _DIR_VEC[d]
    fx, fy = x + dx, y + dy
    forward = (fx, fy, d) if _passable(env, fx, fy) else (x, y, d)
    options = ((FORWARD, forward), (LEFT, (x, y, (d - 1) % 4)), (RIGHT, (x, y, (d + 1) % 4)))
    inf = 1 << 30
    return min(options, key=lambda o: dist.get(o[1], inf))[0]
