"""What every recall task must do (issue: the batched environment core).

Parameterised over every registered id; a task may name small knobs in SMALL
so the tests run fast.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs

SMALL: dict[str, dict] = {
    "recall/DelayedMatch-v0": {"delay": 5},
    "recall/NBack-v0": {"length": 12},
    "recall/HiddenObjects-v0": {"size": 7, "delay": 4},
    "recall/Ballet-v0": {"num_dancers": 2, "delay": 16},
    "recall/PassiveTMaze-v0": {"length": 6},
    "recall/AssociativeRecall-v0": {"delay": 3},
    "recall/RepeatFirst-v0": {},
    "recall/RepeatPrevious-v0": {},
    "recall/CountRecall-v0": {},
    "recall/Autoencode-v0": {},
}
IDS = list(envs.ENV_IDS)


def small(env_id: str) -> dict:
    return SMALL.get(env_id, {})


def run_episodes(env, policy, steps: int):
    """Step a batched env ``steps`` times; return the info of finished episodes."""
    succ, rets, lens = [], [], []
    env.reset(seed=123)
    for _ in range(steps):
        _, _, _, _, info = env.step(policy(env))
        done = info["done"]
        succ.append(info["success"][done])
        rets.append(info["episode_return"][done])
        lens.append(info["episode_length"][done])
    return torch.cat(succ).float(), torch.cat(rets), torch.cat(lens)


@pytest.mark.parametrize("env_id", IDS)
def test_gymnasium_and_sb3_checkers_pass(env_id):
    env = gym.make(env_id, **small(env_id))
    gym_check_env(env.unwrapped, skip_render_check=False)
    sb3_check_env(gym.make(env_id, **small(env_id)).unwrapped, warn=True)


@pytest.mark.parametrize("env_id", IDS)
def test_vector_env_spaces(env_id):
    vec = envs.make_vec(env_id, 7, **small(env_id))
    assert isinstance(vec, gym.vector.VectorEnv)
    obs, _ = vec.reset(seed=0)
    assert obs.shape[0] == 7 and vec.observation_space.contains(obs.numpy())
    assert vec.action_space.shape == (7,)


@pytest.mark.parametrize("env_id", IDS)
@pytest.mark.parametrize("copy", [0, 1, 517, 1023])
def test_copy_i_equals_single_env(env_id, copy):
    """Copy i of a batch of 1024 plays the same episodes as a single env for copy i."""
    seed, steps = 7, 120
    vec = envs.make_vec(env_id, 1024, seed=seed, **small(env_id))
    single = gym.make(env_id, copy_index=copy, **small(env_id)).unwrapped
    obs_b, _ = vec.reset(seed=seed)
    obs_s, _ = single.reset(seed=seed)
    gen = torch.Generator().manual_seed(0)
    n = vec.single_action_space.n
    for _ in range(steps):
        np.testing.assert_array_equal(obs_b[copy].numpy(), obs_s)
        actions = torch.randint(0, n, (1024,), generator=gen)
        obs_b, r_b, te_b, tr_b, info = vec.step(actions)
        obs_s, r_s, te_s, tr_s, info_s = single.step(int(actions[copy]))
        assert float(r_b[copy]) == pytest.approx(r_s)
        assert bool(te_b[copy]) == te_s and bool(tr_b[copy]) == tr_s
        if te_s or tr_s:
            assert bool(info["success"][copy]) == info_s["success"]
            assert int(info["episode_length"][copy]) == info_s["episode_length"]
            obs_s, _ = single.reset()


@pytest.mark.parametrize("env_id", IDS)
def test_copy_does_not_depend_on_batch_size(env_id):
    a = envs.make_vec(env_id, 3, seed=5, **small(env_id))
    b = envs.make_vec(env_id, 64, seed=5, **small(env_id))
    oa, _ = a.reset(seed=5)
    ob, _ = b.reset(seed=5)
    for _ in range(40):
        assert torch.equal(oa, ob[:3])
        act = b.oracle_actions()
        oa, *_ = a.step(act[:3])
        ob, *_ = b.step(act)


@pytest.mark.parametrize("env_id", IDS)
def test_automatic_reset(env_id):
    vec = envs.make_vec(env_id, 32, seed=1, final_observation=True, **small(env_id))
    obs, _ = vec.reset(seed=1)
    first_episode = vec.episode.clone()
    fresh = envs.make_vec(env_id, 32, seed=1, **small(env_id))
    fresh.reset(seed=1)
    seen_done = False
    for _ in range(200):
        obs, _, term, trunc, info = vec.step(vec.oracle_actions())
        done = term | trunc
        assert torch.equal(done, info["done"])
        # lengths are counted in steps and the next episode starts at t = 0
        assert torch.all(info["episode_length"][done] >= 1)
        assert torch.all(vec.t[done] == 0)
        assert "final_observation" in info
        seen_done |= bool(done.any())
    assert seen_done
    assert torch.all(vec.episode > first_episode)


@pytest.mark.parametrize("env_id", IDS)
def test_oracle_reaches_full_success(env_id):
    vec = envs.make_vec(env_id, 256, **small(env_id))
    succ, rets, _ = run_episodes(vec, lambda e: e.oracle_actions(), 300)
    assert len(succ) >= 256
    assert succ.mean().item() == 1.0
    assert torch.all(rets <= 1.0 + 1e-5) and torch.all(rets >= -1.0 - 1e-5)


@pytest.mark.parametrize("env_id", IDS)
def test_returns_are_scaled(env_id):
    vec = envs.make_vec(env_id, 512, **small(env_id))
    gen = torch.Generator().manual_seed(3)
    n = vec.single_action_space.n
    _, rets, _ = run_episodes(vec, lambda e: torch.randint(0, n, (e.num_envs,), generator=gen), 200)
    assert torch.all(rets <= 1.0 + 1e-5) and torch.all(rets >= -1.0 - 1e-5)


@pytest.mark.parametrize("env_id", IDS)
def test_render_gives_rgb_frames(env_id):
    vec = envs.make_vec(env_id, 4, **small(env_id))
    vec.reset(seed=0)
    frame = vec.render(2)
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    single = gym.make(env_id, **small(env_id))
    single.reset(seed=0)
    assert single.render().shape == frame.shape
    with pytest.raises(IndexError, match=r"\[0, 3\]"):
        vec.render(4)


def test_unknown_env_id_lists_known_ids():
    with pytest.raises(ValueError, match="known ids: .*recall/DelayedMatch-v0"):
        envs.make_vec("recall/DelayedMatc-v0", 4)


@pytest.mark.parametrize("env_id", IDS)
def test_bad_actions_raise(env_id):
    vec = envs.make_vec(env_id, 4, **small(env_id))
    vec.reset(seed=0)
    n = vec.single_action_space.n
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        vec.step(torch.zeros(5, dtype=torch.int64))
    with pytest.raises(TypeError, match="integers"):
        vec.step(torch.zeros(4))
    with pytest.raises(ValueError, match=rf"action {n} .*accepted: 0..{n - 1}"):
        vec.step(torch.tensor([0, 0, n, 0]))
    with pytest.raises(ValueError, match="accepted: 0"):
        vec.step(torch.tensor([0, -1, 0, 0]))
    with pytest.raises(TypeError, match="torch.Tensor"):
        vec.step([0, 0, 0, 0])
    single = gym.make(env_id, **small(env_id))
    single.reset(seed=0)
    with pytest.raises(ValueError, match=rf"action {n} is out of range; accepted: 0..{n - 1}"):
        single.step(n)
    with pytest.raises(ValueError, match="one integer"):
        single.step(0.5)
    with pytest.raises(ValueError, match="one integer"):
        single.step(np.array([0, 1]))


@pytest.mark.parametrize("env_id", IDS)
def test_bad_num_envs_and_seed_raise(env_id):
    with pytest.raises(ValueError, match="num_envs"):
        envs.make_vec(env_id, 0)
    with pytest.raises(ValueError, match="seed"):
        envs.make_vec(env_id, 2, seed=-1)


@pytest.mark.parametrize("env_id", IDS)
def test_unknown_knob_lists_accepted(env_id):
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['bogus_knob'\]; accepted: .*seed"):
        envs.make_vec(env_id, 2, bogus_knob=1)
    with pytest.raises(ValueError, match="bogus_knob"):
        gym.make(env_id, bogus_knob=1)
