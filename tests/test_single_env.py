"""The single gymnasium env: the task's own rules on one copy held as Python values.

test_env_contract checks that copy i of a batch plays the same observations; here
the whole per-copy state is compared, the values' Python types, and what the
single env does that a batch does not (episodes end without a reset, actions
given as numpy scalars, rendering and the oracle through a batch of one).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from test_env_contract import small

import envs
from envs.backends import PY
from envs.batched import BatchedEnv

IDS = list(envs.ENV_IDS)
EXTRA = [
    ("recall/HiddenObjects-v0", {"size": 9, "full_view": True, "delay": 2}),
    ("recall/Ballet-v0", {"num_dancers": 4, "pixels": True}),
    ("recall/DelayedMatch-v0", {"distractors": False, "cue_steps": 2, "delay": 3}),
    ("recall/CountRecall-v0", {"difficulty": "hard"}),
    ("recall/Autoencode-v0", {"difficulty": "medium"}),
]
CASES = [(i, small(i)) for i in IDS] + EXTRA


def per_copy_state(batch: BatchedEnv, copy: int) -> dict[str, torch.Tensor]:
    """Copy ``copy``'s row of every per-copy tensor of a batch (constants left out)."""
    return {k: v[copy] for k, v in vars(batch).items()
            if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == batch.num_envs}


@pytest.mark.parametrize("env_id,knobs", CASES, ids=[f"{i}-{k}" for i, k in CASES])
def test_every_task_has_python_rules(env_id, knobs):
    single = gym.make(env_id, **knobs).unwrapped
    assert single.batch.xp is PY


@pytest.mark.parametrize("env_id,knobs", CASES, ids=[f"{i}-{k}" for i, k in CASES])
def test_state_equals_the_batch_copy_step_by_step(env_id, knobs):
    """Every per-copy state value (not only what is observed) and every output agree exactly."""
    copy, seed = 5, 11  # 7 copies: no constant table has a first dimension of 7
    vec = envs.make_vec(env_id, 7, seed=seed, final_observation=True, **knobs)
    single = gym.make(env_id, copy_index=copy, **knobs).unwrapped
    obs_b, _ = vec.reset(seed=seed)
    obs_s, _ = single.reset(seed=seed)
    gen = torch.Generator().manual_seed(1)
    episodes = 0
    for i in range(250):
        np.testing.assert_array_equal(obs_b[copy].numpy(), obs_s)
        mine = per_copy_state(single.tensor_copy(), 0)
        theirs = per_copy_state(vec, copy)
        assert mine.keys() == theirs.keys()
        for k in mine:
            assert torch.equal(mine[k], theirs[k]), (k, i)
        actions = torch.randint(0, vec.single_action_space.n, (7,), generator=gen)
        if i % 2:
            actions = vec.oracle_actions()
            assert single.oracle_action() == int(actions[copy])
        obs_b, r_b, te_b, tr_b, info = vec.step(actions)
        obs_s, r_s, te_s, tr_s, info_s = single.step(int(actions[copy]))
        assert type(r_s) is float and r_s == float(r_b[copy])  # the same float32 value
        assert type(te_s) is bool and type(tr_s) is bool
        assert (te_s, tr_s) == (bool(te_b[copy]), bool(tr_b[copy]))
        if te_s or tr_s:
            episodes += 1
            np.testing.assert_array_equal(info["final_observation"][copy].numpy(), obs_s)
            assert info_s["success"] is bool(info["success"][copy])
            assert info_s["episode_length"] == int(info["episode_length"][copy])
            assert info_s["episode_return"] == float(info["episode_return"][copy])
            obs_s, _ = single.reset()
        else:
            assert info_s == {}
    assert episodes >= 1


def test_an_ended_episode_waits_for_reset():
    env = gym.make("recall/DelayedMatch-v0", delay=1)
    env.reset(seed=0)
    for _ in range(2):
        env.step(0)
    *_, terminated, _, info = env.step(0)
    assert terminated and info["episode_length"] == 3
    assert env.unwrapped.tensor_copy().t.tolist() == [3]  # the last step, not the next episode
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    obs, _ = env.reset()
    assert obs[0] == 0  # the cue phase of the next episode


def test_reset_mid_episode_starts_the_next_episode_like_a_batch():
    single = gym.make("recall/NBack-v0").unwrapped
    vec = envs.make_vec("recall/NBack-v0", 1)
    single.reset(seed=4)
    vec.reset(seed=4)
    for a in (0, 1, 1):
        single.step(a)
        vec.step(torch.tensor([a]))
    obs_s, _ = single.reset()
    obs_b, _ = vec.reset()
    np.testing.assert_array_equal(obs_b[0].numpy(), obs_s)
    assert single.batch.episode == int(vec.episode[0]) == 1


@pytest.mark.parametrize("action", [np.int64(2), np.array(2), np.array([2]), np.int32(2), 2])
def test_integer_actions_of_any_kind(action):
    env = gym.make("recall/DelayedMatch-v0", delay=0)
    env.reset(seed=0)
    env.step(0)
    answer = env.unwrapped.batch.answer
    *_, terminated, _, info = env.step(action)
    assert terminated and info["success"] is (answer == 2)


@pytest.mark.parametrize("action", [True, 2.0, np.array([1, 2]), "1"])
def test_non_integer_actions_are_refused(action):
    env = gym.make("recall/DelayedMatch-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="one integer"):
        env.step(action)


def test_the_python_backend_is_not_a_make_vec_option():
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['backend'\]"):
        envs.make_vec("recall/DelayedMatch-v0", 1, backend="python")
    with pytest.raises(ValueError, match="backend='python' is one copy"):
        envs.task_class("recall/DelayedMatch-v0")(num_envs=2, backend="python")


class PlainTorch(BatchedEnv):
    """A task written in plain torch (no python_rules): a single env of it is a batch of one."""

    env_id = "test/PlainTorch-v0"

    def _spaces(self):
        return gym.spaces.MultiDiscrete([4]), gym.spaces.Discrete(2)

    def _new_episode(self, mask, key):
        pass

    def _observe(self):
        return self.t[:, None].clone()

    def _transition(self, actions):
        done = self.t == 2
        return actions.float(), done, torch.zeros_like(done), done


def test_a_task_without_python_rules_runs_as_a_batch_of_one(monkeypatch):
    from envs import registration, single

    monkeypatch.setitem(registration.TASKS, PlainTorch.env_id, f"{__name__}:PlainTorch")
    env = single.RecallEnv(PlainTorch.env_id)
    assert env.batch.xp is not PY
    obs, _ = env.reset(seed=0)
    rewards = []
    for _ in range(3):
        obs, r, terminated, _, info = env.step(1)
        rewards.append(r)
    assert terminated and info["episode_length"] == 3 and obs.tolist() == [3]
    assert rewards == [1.0, 1.0, 1.0]
    assert env.reset()[0].tolist() == [0]
