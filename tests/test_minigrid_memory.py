"""MiniGrid's Memory rooms through envs.make_vec (envs/minigrid_memory.py)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from minigrid.minigrid_env import MiniGridEnv

import envs
from envs.minigrid_memory import MiniGridMemory, episode_seed

IDS = list(envs.MINIGRID_IDS)
S7 = "MiniGrid-MemoryS7-v0"
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


class Replay:
    """A plain ``gymnasium.make(env_id)`` reset with copy ``copy``'s episode seeds."""

    def __init__(self, env_id: str, seed: int, copy: int, **kwargs):
        self.env = gym.make(env_id, **kwargs)
        self.seed, self.copy, self.episode = seed, copy, 0

    def reset(self) -> np.ndarray:
        obs, _ = self.env.reset(seed=episode_seed(self.seed, self.copy, self.episode))
        self.episode += 1
        return obs["image"]

    def step(self, action: int):
        obs, r, te, tr, _ = self.env.step(action)
        return obs["image"], r, te, tr


def test_ids_are_separate_from_recall_tasks():
    assert len(IDS) == 6 and all(i.startswith("MiniGrid-Memory") for i in IDS)
    assert not set(IDS) & set(envs.ENV_IDS)


@pytest.mark.parametrize("env_id", IDS)
def test_make_vec_builds_every_room(env_id):
    vec = envs.make_vec(env_id, 5, seed=2)
    assert isinstance(vec, gym.vector.VectorEnv) and isinstance(vec, MiniGridMemory)
    assert vec.num_envs == 5 and vec.single_action_space == gym.spaces.Discrete(3)
    assert vec.single_observation_space.shape == (7, 7, 3)
    assert vec.single_observation_space.dtype == np.uint8
    obs, info = vec.reset(seed=2)
    assert info == {}
    assert obs.shape == (5, 7, 7, 3) and obs.dtype == torch.uint8
    assert vec.observation_space.contains(obs.numpy())
    obs, reward, term, trunc, info = vec.step(torch.tensor([2, 0, 1, 2, 2]))
    assert obs.shape == (5, 7, 7, 3) and reward.dtype == torch.float32
    assert term.dtype == torch.bool and trunc.dtype == torch.bool
    assert vec.action_space.shape == (5,)
    full = envs.make_vec(env_id, 2, full_action_space=True)
    assert full.single_action_space == gym.spaces.Discrete(7)


@pytest.mark.parametrize("device", DEVICES)
def test_every_tensor_is_on_the_device(device):
    vec = envs.make_vec(S7, 6, device=device, seed=0)
    dev = torch.device(device)
    obs, _ = vec.reset(seed=0)
    assert obs.device.type == dev.type
    gen = torch.Generator().manual_seed(0)
    for _ in range(260):  # past max_steps = 245: every copy has ended an episode
        actions = torch.randint(0, 3, (6,), generator=gen).to(dev)
        out = vec.step(actions)
        for x in out[:4]:
            assert x.device.type == dev.type
        info = out[4]
        assert set(info) == {"done", "success", "episode_return", "episode_length", "final_observation"}
        for x in info.values():
            assert x.device.type == dev.type and x.shape[0] == 6
    assert vec.oracle_actions().device.type == dev.type
    assert vec.t.device.type == dev.type and vec.episode.device.type == dev.type
    assert torch.all(vec.episode >= 1)


@pytest.mark.parametrize("copy", [0, 6])
def test_copy_i_replays_as_a_single_minigrid_env(copy):
    """Copy i's episodes are gymnasium.make(env_id) reset with episode_seed(seed, i, e)."""
    seed, n = 9, 8
    vec = envs.make_vec(S7, n, seed=seed)
    single = Replay(S7, seed, copy)
    obs_b, _ = vec.reset(seed=seed)
    obs_s = single.reset()
    gen = torch.Generator().manual_seed(copy)
    ends = 0
    for _ in range(400):
        np.testing.assert_array_equal(obs_b[copy].numpy(), obs_s)
        actions = torch.randint(0, 3, (n,), generator=gen)
        obs_b, r_b, te_b, tr_b, info = vec.step(actions)
        obs_s, r_s, te_s, tr_s = single.step(int(actions[copy]))
        assert float(r_b[copy]) == pytest.approx(r_s, abs=1e-6)
        assert bool(te_b[copy]) == te_s and bool(tr_b[copy]) == tr_s
        if te_s or tr_s:
            ends += 1
            np.testing.assert_array_equal(info["final_observation"][copy].numpy(), obs_s)
            assert bool(info["success"][copy]) == (te_s and r_s > 0)
            obs_s = single.reset()
    assert ends >= 1  # the replay crossed an episode boundary (max_steps is 245)


def test_copy_does_not_depend_on_batch_size_or_shard():
    a = envs.make_vec(S7, 3, seed=5)
    b = envs.make_vec(S7, 8, seed=5)
    shard = envs.make_vec(S7, 4, seed=5, first_copy=4)
    oa, _ = a.reset(seed=5)
    ob, _ = b.reset(seed=5)
    osh, _ = shard.reset(seed=5)
    gen = torch.Generator().manual_seed(1)
    for _ in range(250):
        assert torch.equal(oa, ob[:3]) and torch.equal(osh, ob[4:])
        act = torch.randint(0, 3, (8,), generator=gen)
        oa, *_ = a.step(act[:3])
        ob, *_ = b.step(act)
        osh, *_ = shard.step(act[4:])


def test_reset_seed_restarts_and_reset_without_seed_moves_on():
    vec = envs.make_vec(S7, 16, seed=0)
    first, _ = vec.reset(seed=4)
    again, _ = vec.reset(seed=4)
    assert torch.equal(first, again)
    assert torch.all(vec.episode == 0)
    nxt, _ = vec.reset()
    assert torch.all(vec.episode == 1)
    assert not torch.equal(nxt, first)  # 16 fresh layouts, not the same ones
    other, _ = vec.reset(seed=5)
    assert not torch.equal(other, first)


def test_automatic_reset_returns_the_next_episode():
    seed, n = 3, 8
    vec = envs.make_vec(S7, n, seed=seed)
    vec.reset(seed=seed)
    replays = [Replay(S7, seed, i) for i in range(n)]
    for r in replays:
        r.reset()
    ended = torch.zeros(n, dtype=torch.bool)
    for _ in range(60):
        obs, _, term, trunc, info = vec.step(vec.oracle_actions())
        done = term | trunc
        assert torch.equal(done, info["done"])
        assert torch.all(info["episode_length"][done] >= 1)
        assert torch.all(vec.t[done] == 0) and torch.all(vec.t[~done] > 0)
        for i in done.nonzero().flatten().tolist():
            if not ended[i]:
                ended[i] = True
                assert int(vec.episode[i]) == 1
                # the observation returned is the first of episode 1, not the final one
                np.testing.assert_array_equal(obs[i].numpy(), replays[i].reset())
                assert not torch.equal(obs[i], info["final_observation"][i])
    assert bool(ended.all())


def test_truncation_hands_out_the_final_observation():
    vec = envs.make_vec(S7, 4, seed=0)
    assert vec.final_observation and vec.can_truncate and vec.max_steps == 245
    vec.reset(seed=0)
    left = torch.zeros(4, dtype=torch.int64)  # spinning in place never reaches an object
    for step in range(1, 246):
        obs, reward, term, trunc, info = vec.step(left)
        if step < 245:
            assert not trunc.any()
    assert trunc.all() and not term.any() and not info["success"].any()
    assert torch.all(info["episode_length"] == 245) and torch.all(info["episode_return"] == 0)
    assert torch.all(reward == 0) and torch.all(vec.t == 0) and torch.all(vec.episode == 1)
    replay = Replay(S7, 0, 2)
    replay.reset()
    for _ in range(245):
        last, *_ = replay.step(0)
    np.testing.assert_array_equal(info["final_observation"][2].numpy(), last)
    np.testing.assert_array_equal(obs[2].numpy(), replay.reset())


@pytest.mark.parametrize("env_id", IDS)
def test_oracle_always_succeeds(env_id):
    vec = envs.make_vec(env_id, 8, seed=1)
    vec.reset(seed=1)
    succ, rets, lens = [], [], []
    while sum(len(s) for s in succ) < 24:
        _, _, term, trunc, info = vec.step(vec.oracle_actions())
        done = info["done"]
        assert not trunc.any()
        succ.append(info["success"][done])
        rets.append(info["episode_return"][done])
        lens.append(info["episode_length"][done])
    succ, rets, lens = torch.cat(succ), torch.cat(rets), torch.cat(lens)
    assert succ.all()
    # MiniGrid pays 1 - 0.9 * steps / max_steps for the right object
    expected = 1.0 - 0.9 * lens.float() / vec.max_steps
    assert torch.allclose(rets, expected, atol=1e-5)
    assert torch.all((rets > 0) & (rets <= 1))


def test_oracle_follows_a_reseeded_reset():
    """reset(seed=...) restarts episode numbers: the oracle must plan for the new rooms."""
    vec = envs.make_vec("MiniGrid-MemoryS13Random-v0", 8, seed=0)
    for seed in (0, 1, 0, 2):
        vec.reset(seed=seed)
        vec.oracle_actions()
        finished = torch.zeros(8, dtype=torch.bool)
        while not finished.all():
            _, _, _, trunc, info = vec.step(vec.oracle_actions())
            assert torch.all(info["success"][info["done"] & ~finished]) and not trunc.any()
            finished |= info["done"]


def test_wrong_object_ends_without_success():
    """Walking to the other object (read from the simulator) terminates with 0 and success False."""
    vec = envs.make_vec(S7, 8, seed=2)
    vec.reset(seed=2)


    def swap_targets():
        for env in vec._envs:
            env.success_pos, env.failure_pos = env.failure_pos, env.success_pos

    finished = torch.zeros(8, dtype=torch.bool)
    for _ in range(40):
        swap_targets()  # plan for the wrong object, then step the unaltered simulator
        actions = vec.oracle_actions()
        swap_targets()
        _, reward, term, trunc, info = vec.step(actions)
        new = info["done"] & ~finished
        assert torch.all(term[new]) and torch.all(reward[new] == 0)
        assert not info["success"][new].any()
        finished |= info["done"]
        if finished.all():
            break
    assert finished.all()


def test_random_policy_success():
    """Random turns and steps in the smallest room: about a third of first episodes reach the
    matching object (measured 0.35 over 128 copies); among episodes that reach an object about
    half pick the right one, as a policy without the cue must."""
    n = 64
    vec = envs.make_vec(S7, n, seed=11)
    vec.reset(seed=11)
    gen = torch.Generator().manual_seed(0)
    success = torch.full((n,), -1.0)
    reached = torch.zeros(n, dtype=torch.bool)
    for _ in range(vec.max_steps):
        _, _, term, trunc, info = vec.step(torch.randint(0, 3, (n,), generator=gen))
        new = info["done"] & (success < 0)
        success[new] = info["success"][new].float()
        reached[new] = term[new]
    assert torch.all(success >= 0)
    rate = success.mean().item()
    assert 0.15 <= rate <= 0.6
    assert 0.3 <= success[reached].mean().item() <= 0.7
    assert reached.float().mean().item() < 0.95  # some copies wander until the time limit


def test_render_is_minigrid_frame_of_that_copy():
    vec = envs.make_vec(S7, 4, seed=6)
    vec.reset(seed=6)
    frame = vec.render(2)
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    single = gym.make(S7, render_mode="rgb_array")
    single.reset(seed=episode_seed(6, 2, 0))
    np.testing.assert_array_equal(single.render(), frame)
    with pytest.raises(IndexError, match=r"\[0, 3\]"):
        vec.render(4)


def test_bad_actions_raise_clear_errors():
    vec = envs.make_vec(S7, 4)
    vec.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        vec.step(torch.zeros(5, dtype=torch.int64))
    with pytest.raises(TypeError, match="integers"):
        vec.step(torch.zeros(4))
    with pytest.raises(ValueError, match=r"action 3 of copy 2 is out of range; accepted: 0..2 \(0=left, 1=right, 2=forward\)"):
        vec.step(torch.tensor([0, 0, 3, 0]))
    with pytest.raises(ValueError, match="action -1 of copy 1 .*accepted: 0..2"):
        vec.step(torch.tensor([0, -1, 0, 0]))
    with pytest.raises(TypeError, match="torch.Tensor"):
        vec.step([0, 0, 0, 0])
    # the 3-action space is enforced even with check_actions off (the check costs nothing here)
    lax = envs.make_vec(S7, 4, check_actions=False)
    lax.reset(seed=0)
    with pytest.raises(ValueError, match="accepted: 0..2"):
        lax.step(torch.tensor([0, 0, 6, 0]))
    full = envs.make_vec(S7, 4, full_action_space=True)
    full.reset(seed=0)
    full.step(torch.tensor([3, 4, 5, 6]))
    with pytest.raises(ValueError, match=r"action 7 of copy 0 .*accepted: 0..6 .*6=done"):
        full.step(torch.tensor([7, 0, 0, 0]))


def test_bad_knobs_raise_clear_errors():
    with pytest.raises(ValueError, match="num_envs"):
        envs.make_vec(S7, 0)
    with pytest.raises(ValueError, match="seed"):
        envs.make_vec(S7, 2, seed=-1)
    with pytest.raises(ValueError, match="full_action_space='yes'"):
        envs.make_vec(S7, 2, full_action_space="yes")
    with pytest.raises(ValueError, match="accepted: MiniGrid-MemoryS7-v0"):
        MiniGridMemory("MiniGrid-Empty-5x5-v0", 2)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \[.size.\]; accepted: .*full_action_space"):
        envs.make_vec(S7, 2, size=9)


def test_unknown_id_lists_recall_and_minigrid_ids():
    with pytest.raises(ValueError, match="known ids: .*recall/DelayedMatch-v0.*MiniGrid-MemoryS17Random-v0") as err:
        envs.make_vec("MiniGrid-MemoryS8-v0", 4)
    for env_id in IDS:
        assert env_id in str(err.value)


def _real_view(env) -> np.ndarray:
    """MiniGrid's own observation of a copy (the adapter stubs ``gen_obs`` on its instances)."""
    return MiniGridEnv.gen_obs(env)["image"]


@pytest.mark.parametrize("env_id", IDS)
def test_fast_views_equal_minigrid_gen_obs_at_every_step(env_id):
    """The adapter's views are MiniGrid's ``gen_obs()['image']`` at every step of many episodes:
    half random actions of the full action space (turns at walls, pickup/drop/toggle, done),
    half the oracle's, so episodes reach the corridor ends and the adapter resets copies."""
    n = 6
    vec = envs.make_vec(env_id, n, seed=3, full_action_space=True)
    obs, _ = vec.reset(seed=3)
    gen = torch.Generator().manual_seed(0)
    ends = at_object = facing_wall = 0
    steps = 90 if "S7" in env_id else 140
    for t in range(steps):
        for i, env in enumerate(vec._envs):
            np.testing.assert_array_equal(obs[i].numpy(), _real_view(env), err_msg=f"copy {i} step {t}")
            front = env.grid.get(*env.front_pos)
            facing_wall += front is not None and front.type == "wall"
            assert env.carrying is None  # nothing is ever picked up: the room stays as encoded
            if t % 10 == 0:  # the room is as it was at reset (pickup/drop/toggle changed nothing)
                p, (w, h) = vec._views.pad, (env.width, env.height)
                np.testing.assert_array_equal(vec._views.cells[i, p:p + w, p:p + h, :3], env.grid.encode())
        random = torch.randint(0, 7, (n,), generator=gen)
        use_random = torch.rand(n, generator=gen) < 0.5
        actions = torch.where(use_random, random, vec.oracle_actions())
        obs, _, term, trunc, info = vec.step(actions)
        ends += int(info["done"].sum())
        at_object += int(term.sum())
    assert ends >= n and at_object >= n // 2  # across resets, and at the corridor's ends
    assert facing_wall >= steps  # many steps face a wall


@pytest.mark.parametrize("env_id", IDS)
def test_fast_views_equal_minigrid_in_every_cell_and_direction(env_id):
    """Every cell the agent can stand on (corridor ends, next to the objects, start room, off-grid
    cells in view) in each of the 4 directions, in several layouts of each room."""
    vec = envs.make_vec(env_id, 3, seed=1)
    vec.reset(seed=1)
    states = 0
    for i, env in enumerate(vec._envs):
        for x in range(env.width):
            for y in range(env.height):
                if env.grid.get(x, y) is not None:
                    continue
                for d in range(4):
                    env.agent_pos, env.agent_dir = (x, y), d
                    fast = vec._views.observe(np.array([i]))[0]
                    np.testing.assert_array_equal(fast, _real_view(env), err_msg=f"copy {i} at {(x, y, d)}")
                    states += 1
    assert states >= 3 * 4 * 12  # 12 free cells in the smallest room


def test_row_visibility_table_is_minigrid_process_vis():
    """The per-row table reproduces Grid.process_vis on random 7x7 grids of walls and floor."""
    from minigrid.core.grid import Grid
    from minigrid.core.world_object import Ball, Wall

    from envs.minigrid_memory import _row_visibility_table

    row_seen, row_up = _row_visibility_table(7)
    rng = np.random.default_rng(0)
    for _ in range(200):
        grid = Grid(7, 7)
        kinds = rng.integers(0, 3, (7, 7))  # empty, wall, ball (a ball lets sight through)
        for x in range(7):
            for y in range(7):
                if kinds[x, y]:
                    grid.set(x, y, Wall() if kinds[x, y] == 1 else Ball("green"))
        expected = grid.process_vis(agent_pos=(3, 6))
        clear = kinds != 1
        up, got = 1 << 3, np.zeros((7, 7), dtype=bool)
        for y in reversed(range(7)):
            code = up | int(sum(int(clear[x, y]) << x for x in range(7))) << 7
            got[:, y] = [(int(row_seen[code]) >> x) & 1 for x in range(7)]
            up = int(row_up[code])
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("room, needs_memory", [("S7", False), ("S9", False), ("S11", True), ("S13", True)])
def test_which_rooms_need_memory(room, needs_memory):
    """From the junction, facing west, S7 and S9 show the cue and both end objects in one
    view, so a memoryless policy can solve them (the mlp control, sampled, does: docs/results.md);
    from S11 on the cue is out of sight there and only memory carries it."""
    env = gym.make(f"MiniGrid-Memory{room}-v0").unwrapped
    for seed in range(5):
        env.reset(seed=seed)
        h = env.height
        x = next(x for x in range(5, env.width) if env.grid.get(x, h // 2 - 1) is None)  # the junction column
        env.agent_pos, env.agent_dir = (x, h // 2), 2  # facing west
        ends = [(x, y) for y in range(h) if (o := env.grid.get(x, y)) is not None and o.type in ("key", "ball")]
        assert len(ends) == 2 and all(env.agent_sees(*p) for p in ends)
        assert env.agent_sees(1, h // 2 - 1) is (not needs_memory)
