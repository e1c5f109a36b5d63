"""agents.collect: batched play written as a local Minari dataset, and read back."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agents.common.cli import env_config
from agents.common.config import make_env
from agents.dt.collect import (
    OraclePolicy,
    collect_episodes,
    load_dataset,
    write_dataset,
)

CFG = {"id": "recall/DelayedMatch-v0", "delay": 3, "num_symbols": 6, "num_choices": 3}


def _collect(episodes=40, epsilon=0.0, num_envs=8, seed=0, cfg=CFG):
    env = make_env(cfg, num_envs, "cpu", seed, final_observation=True)
    return env, collect_episodes(env, OraclePolicy(env), episodes, epsilon=epsilon, seed=seed)


def test_oracle_dataset_round_trip(tmp_path):
    env, buffers = _collect()
    assert len(buffers) == 40
    path = write_dataset(tmp_path, "dm-oracle-v0", buffers, dict(CFG), env, {"policy": "oracle"})
    dataset, cfg = load_dataset(tmp_path)  # the out dir with one dataset in it
    assert cfg == CFG
    assert dataset.total_episodes == 40 and dataset.total_steps == 40 * 5
    ep = dataset[7]
    assert ep.observations.shape == (6, 2 + 3)  # steps + 1: the final observation too
    assert ep.actions.shape == (5,)
    assert ep.rewards.tolist() == [0, 0, 0, 0, 1]  # the oracle always matches
    assert ep.terminations.tolist() == [False] * 4 + [True]
    assert not ep.truncations.any()
    assert ep.infos["decision"].tolist() == [False] * 4 + [True]
    # The cue (step 0) is the option the recorded choice picks.
    cue, options = ep.observations[0, 1], ep.observations[4, 2:]
    assert options[ep.actions[4]] == cue
    meta = dataset.storage.metadata
    assert json.loads(meta["recall_collect"])["policy"] == "oracle"
    single = dataset.recover_environment()
    assert single.unwrapped.batch.delay == 3 and single.unwrapped.batch.num_choices == 3
    assert load_dataset(path)[1] == CFG


def test_idle_steps_take_random_actions():
    """DelayedMatch's oracle answers at every step; before the choice the data must not leak it."""
    _, buffers = _collect(episodes=64)
    idle = np.concatenate([b["actions"][:-1] for b in buffers])
    answer = np.repeat([b["actions"][-1] for b in buffers], 4)
    agree = (idle == answer).mean()
    assert 0.2 < agree < 0.5  # chance is 1/3; copying the answer would give 1.0


def test_epsilon_one_is_chance():
    _, buffers = _collect(episodes=300, epsilon=1.0, num_envs=32)
    mean = np.mean([b["rewards"].sum() for b in buffers])
    assert 0.2 < mean < 0.47  # chance 1/3


def test_nback_episodes_are_whole():
    cfg = {"id": "recall/NBack-v0", "n": 2, "length": 10}
    _, buffers = _collect(episodes=10, num_envs=4, cfg=cfg)
    for b in buffers:
        assert len(b["actions"]) == 10 and b["terminations"][-1] and not b["terminations"][:-1].any()
        assert b["infos"]["decision"].tolist() == [False, False] + [True] * 8
        assert b["rewards"].sum() == pytest.approx(1.0)


def test_bad_input(tmp_path):
    env = make_env(CFG, 2, "cpu", 0, final_observation=True)
    with pytest.raises(ValueError, match="epsilon=2.0"):
        collect_episodes(env, OraclePolicy(env), 2, epsilon=2.0)
    with pytest.raises(ValueError, match="idle='never'.*random, policy"):
        collect_episodes(env, OraclePolicy(env), 2, idle="never")
    with pytest.raises(ValueError, match="episodes must be"):
        collect_episodes(env, OraclePolicy(env), 0)
    with pytest.raises(ValueError, match="unknown env 'nope'; accepted names"):
        env_config({}, "nope")
    with pytest.raises(FileNotFoundError, match="no Minari dataset"):
        load_dataset(tmp_path)
    _, buffers = _collect(episodes=2, num_envs=2)
    write_dataset(tmp_path, "a-v0", buffers, dict(CFG), env, {"policy": "oracle"})
    with pytest.raises(ValueError, match="already exists"):
        write_dataset(tmp_path, "a-v0", buffers, dict(CFG), env, {"policy": "oracle"})
