"""agents.integrations.sb3.to_vec_env: the SB3 VecEnv contract, and real PPO / RecurrentPPO runs on it."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
from agents.integrations.sb3 import RecallVecEnv, to_vec_env

SHORT = dict(delay=1, num_choices=2, num_symbols=4)  # episode: cue, 1 delay step, choice


def _venv(n=4, seed=0, **kw):
    return to_vec_env(envs.make_vec("recall/DelayedMatch-v0", n, seed=seed, **{**SHORT, **kw}))


def test_spaces_one_hot_and_raw():
    v = _venv()
    assert isinstance(v.observation_space, gym.spaces.Box)
    width = int(np.sum(envs.make_vec("recall/DelayedMatch-v0", 1, **SHORT).single_observation_space.nvec))
    assert v.observation_space.shape == (width,)
    obs = v.reset()
    assert obs.shape == (4, width) and obs.dtype == np.float32
    # one 1 per observation component (phase, symbol, 2 options)
    np.testing.assert_array_equal(obs.sum(1), np.full(4, 4.0))
    raw = to_vec_env(envs.make_vec("recall/DelayedMatch-v0", 4, **SHORT), one_hot=False)
    assert isinstance(raw.observation_space, gym.spaces.MultiDiscrete)
    robs = raw.reset()
    assert robs.dtype == np.int64 and robs.shape == (4, 4)
    assert all(raw.observation_space.contains(o) for o in robs)


def test_an_image_of_ids_is_one_hot_per_cell():
    batch = envs.make_vec("MiniGrid-MemoryS7-v0", 3, seed=2)
    counts = batch.symbol_counts  # MiniGrid's (object, colour, state) ids
    v = to_vec_env(batch)
    assert v.observation_space.shape == (7 * 7 * sum(counts),)
    obs = v.reset()
    np.testing.assert_array_equal(obs.sum(1), np.full(3, 7 * 7 * 3.0))  # one 1 per id
    # the 1s sit at each cell's ids: decode them back to the view
    ids = np.flatnonzero(obs[0]) - np.tile(np.concatenate([[0], np.cumsum(counts)[:-1]]), 49) \
        - np.repeat(np.arange(49) * sum(counts), 3)
    raw = to_vec_env(envs.make_vec("MiniGrid-MemoryS7-v0", 3, seed=2), one_hot=False).reset()
    np.testing.assert_array_equal(ids, raw[0].reshape(-1))


def _task_or_skip(env_id):
    try:
        return envs.task_class(env_id)
    except ModuleNotFoundError as e:  # a task registered before its module has landed
        pytest.skip(f"{env_id}: {e}")


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_auto_reset_terminal_observation_and_episode_info(env_id):
    _task_or_skip(env_id)
    batch = envs.make_vec(env_id, 3, seed=5)
    ref = envs.make_vec(env_id, 3, seed=5, final_observation=True)  # the same episodes, as tensors
    v = to_vec_env(batch, one_hot=False)
    obs = v.reset()
    ref_obs, _ = ref.reset()
    np.testing.assert_array_equal(obs, ref_obs.numpy())
    rng = np.random.default_rng(0)
    ended = 0
    for _ in range(200):
        a = rng.integers(0, v.action_space.n, size=3)
        obs, rew, done, infos = v.step(a)
        r_obs, r_rew, r_term, r_trunc, r_info = ref.step(torch.from_numpy(a))
        np.testing.assert_array_equal(obs, r_obs.numpy())  # already the next episode's first obs
        np.testing.assert_allclose(rew, r_rew.numpy())
        assert rew.dtype == np.float32 and done.dtype == bool
        np.testing.assert_array_equal(done, r_info["done"].numpy())
        for i in range(3):
            if done[i]:
                ended += 1
                info = infos[i]
                np.testing.assert_array_equal(info["terminal_observation"], r_info["final_observation"][i].numpy())
                assert info["episode"]["r"] == pytest.approx(float(r_info["episode_return"][i]))
                assert info["episode"]["l"] == int(r_info["episode_length"][i])
                assert info["is_success"] == bool(r_info["success"][i])
                assert info["TimeLimit.truncated"] == bool(r_trunc[i] and not r_term[i])
            else:
                assert "terminal_observation" not in infos[i] and "episode" not in infos[i]
    assert ended > 0


def test_seed_is_applied_at_next_reset():
    a, b = _venv(seed=0), _venv(seed=0)
    a.seed(7)
    b.seed(7)
    np.testing.assert_array_equal(a.reset(), b.reset())
    acts = np.zeros(4, dtype=np.int64)
    for _ in range(10):
        oa, *_ = a.step(acts)
        ob, *_ = b.step(acts)
        np.testing.assert_array_equal(oa, ob)


def test_attributes_and_images():
    v = _venv()
    assert v.get_attr("num_choices") == [2, 2, 2, 2]
    assert v.env_method("oracle_actions", indices=[0])[0].shape == (4,)
    assert v.render_mode == "rgb_array"
    v.reset()
    imgs = v.get_images()
    assert len(imgs) == 4 and imgs[0].ndim == 3 and imgs[0].shape[2] == 3


def test_bad_input():
    with pytest.raises(TypeError, match="BatchedEnv"):
        to_vec_env(gym.make("recall/DelayedMatch-v0"))
    with pytest.raises(ValueError, match="one_hot"):
        RecallVecEnv(envs.make_vec("recall/DelayedMatch-v0", 2), one_hot="yes")
    v = _venv()
    v.reset()
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        v.step(np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="integers"):
        v.step(np.zeros(4, dtype=np.float32))
    with pytest.raises(ValueError, match="out of range"):
        v.step(np.full(4, 9, dtype=np.int64))
    with pytest.raises(ValueError, match="subset"):
        v.set_attr("delay", 3, indices=[0])


def test_ppo_trains_unchanged_on_raw_multidiscrete():
    from stable_baselines3 import PPO

    torch.set_num_threads(1)
    v = to_vec_env(envs.make_vec("recall/NBack-v0", 4, seed=0, n=1, length=8), one_hot=False)
    model = PPO("MlpPolicy", v, n_steps=16, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(128)
    assert model.num_timesteps >= 128
    assert len(model.ep_info_buffer) > 0  # the logger saw episode returns from our infos
    assert len(model.ep_success_buffer) > 0


def test_recurrent_ppo_beats_chance_on_short_delay():
    """A real sb3-contrib RecurrentPPO run: ~18k steps, about 30 s on one CPU core."""
    from sb3_contrib import RecurrentPPO
    from stable_baselines3.common.evaluation import evaluate_policy

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = RecurrentPPO(
        "MlpLstmPolicy",
        _venv(n=16, seed=0),
        n_steps=32,
        batch_size=256,
        n_epochs=8,
        learning_rate=3e-3,
        ent_coef=0.01,
        gamma=0.9,
        policy_kwargs=dict(lstm_hidden_size=32, net_arch=[32]),
        seed=0,
        device="cpu",
    )
    model.learn(18432)
    successes: list[bool] = []

    def collect(local_vars, _globals):
        if local_vars["done"]:
            successes.append(local_vars["info"]["is_success"])

    mean_return, _ = evaluate_policy(
        model, _venv(n=16, seed=123), n_eval_episodes=200, deterministic=True, callback=collect
    )
    rate = float(np.mean(successes))
    assert len(successes) >= 200
    # chance is 0.5 (two choices); the reward is 1 exactly on success
    assert rate >= 0.8, f"success rate {rate:.3f} after 18k steps; chance is 0.5"
    assert mean_return == pytest.approx(rate, abs=0.05)
