"""Env state for exact resume, and the arguments every task checks alike."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch
from test_env_contract import small

import envs
from envs import rng

IDS = list(envs.ENV_IDS)
MINIGRID = "MiniGrid-MemoryS7-v0"


def _random_steps(env, gen: torch.Generator, steps: int):
    n = env.single_action_space.n
    return [env.step(torch.randint(n, (env.num_envs,), generator=gen)) for _ in range(steps)]


@pytest.mark.parametrize("env_id", [*IDS, MINIGRID])
def test_loaded_state_continues_every_copy_exactly(env_id):
    knobs = small(env_id)
    a = envs.make_vec(env_id, 4, seed=3, **knobs)
    a.reset()
    _random_steps(a, torch.Generator().manual_seed(0), 9)
    b = envs.make_vec(env_id, 4, seed=99, **knobs)  # another seed: the state brings its own
    b.load_state_dict(a.state_dict())
    ga, gb = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for sa, sb in zip(_random_steps(a, ga, 200), _random_steps(b, gb, 200), strict=True):
        obs_a, rew_a, term_a, trunc_a, info_a = sa
        obs_b, rew_b, term_b, trunc_b, info_b = sb
        assert torch.equal(obs_a, obs_b) and torch.equal(rew_a, rew_b)
        assert torch.equal(term_a, term_b) and torch.equal(trunc_a, trunc_b)
        assert torch.equal(info_a["episode_return"], info_b["episode_return"])


@pytest.mark.parametrize("env_id", [*IDS, MINIGRID])
def test_work_skipped_on_the_cpu_changes_nothing(env_id, monkeypatch):
    """On the CPU, ``xp.maybe`` asks whether any copy needs a piece of work (a new episode,
    a deal) and the step skips it where none does; every step's results equal those of a
    batch that does all the work every step, as on an accelerator."""
    knobs = small(env_id)
    lazy, eager = (envs.make_vec(env_id, 8, seed=5, **knobs) for _ in range(2))
    monkeypatch.setattr(eager.xp, "maybe", lambda mask: True)
    assert lazy.xp.maybe(torch.zeros(8, dtype=torch.bool)) is False
    for env in (lazy, eager):
        env.reset()
    ga, gb = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    ends = 0
    for sa, sb in zip(_random_steps(lazy, ga, 150), _random_steps(eager, gb, 150), strict=True):
        for a, b in zip(sa[:4], sb[:4], strict=True):
            assert torch.equal(a, b)
        for key in ("episode_return", "episode_length", "success", "done"):
            assert torch.equal(sa[4][key], sb[4][key]), key
        ends += int(sa[4]["done"].sum())
    assert ends > 0  # episodes ended (and began) along the way
    assert torch.equal(lazy.episode_key, eager.episode_key)


@pytest.mark.parametrize("other", [
    ("recall/DelayedMatch-v0", 5, {"delay": 5}),  # other num_envs
    ("recall/NBack-v0", 4, {}),  # other task
    ("recall/DelayedMatch-v0", 4, {"delay": 5, "num_choices": 3}),  # other knobs and shapes
], ids=["num_envs", "task", "knobs"])
def test_state_of_another_env_is_refused(other):
    source = envs.make_vec("recall/DelayedMatch-v0", 4, delay=5)
    source.reset()
    env_id, n, knobs = other
    target = envs.make_vec(env_id, n, **knobs)
    with pytest.raises(ValueError, match="env state does not fit this env"):
        target.load_state_dict(source.state_dict())


# --------------------------------------------------------------------- validation
FLOAT_KNOBS = [
    ("recall/DelayedMatch-v0", "delay", 2.0),
    ("recall/NBack-v0", "n", 2.0),
    ("recall/HiddenObjects-v0", "delay", 4.0),
    ("recall/Ballet-v0", "num_dancers", 2.0),
    ("recall/Ballet-v0", "delay", 16.0),
    ("recall/PassiveTMaze-v0", "length", 6.0),
    ("recall/AssociativeRecall-v0", "num_pairs", 2.0),
    ("recall/Ballet-v0", "num_dancers", True),
    ("recall/DelayedMatch-v0", "num_choices", True),
    ("recall/RepeatFirst-v0", "difficulty", 1),
]


@pytest.mark.parametrize("env_id,knob,value", FLOAT_KNOBS)
def test_integer_knobs_refuse_floats_and_bools(env_id, knob, value):
    with pytest.raises(ValueError, match=rf"{knob}={value!r}"):
        envs.make_vec(env_id, 2, **{knob: value})


@pytest.mark.parametrize("env_id", [*IDS, MINIGRID])
@pytest.mark.parametrize("num_envs", [True, 2.0, 0, "2"])
def test_num_envs_is_a_positive_int(env_id, num_envs):
    with pytest.raises(ValueError, match="num_envs must be an int >= 1"):
        envs.make_vec(env_id, num_envs)


@pytest.mark.parametrize("seed", [rng.SEED_LIMIT, 2**64, 2**64 + 1, -1, True, 1.0])
def test_seeds_beyond_what_the_keys_hold_are_refused(seed):
    with pytest.raises(ValueError, match=r"seed=.* is out of range; accepted: an int in 0\.\.4294967295"):
        envs.make_vec("recall/DelayedMatch-v0", 2, seed=seed)
    env = envs.make_vec("recall/DelayedMatch-v0", 2)
    with pytest.raises(ValueError, match="seed="):
        env.reset(seed=seed)


def test_every_seed_below_the_limit_has_episodes_of_its_own():
    """The limit is where keys begin to alias: 2**32 played seed 1's episodes."""
    copies = torch.arange(4)
    assert not torch.equal(rng.copy_keys(rng.SEED_LIMIT - 1, copies), rng.copy_keys(0, copies))
    assert torch.equal(rng.copy_keys(rng.SEED_LIMIT, copies), rng.copy_keys(1, copies))
    envs.make_vec("recall/DelayedMatch-v0", 2, seed=rng.SEED_LIMIT - 1).reset()


@pytest.mark.parametrize("kwargs,name", [
    ({"check_actions": 1}, "check_actions"),
    ({"check_actions": "no"}, "check_actions"),
    ({"final_observation": 1}, "final_observation"),
])
def test_bool_arguments_are_bools(kwargs, name):
    with pytest.raises(ValueError, match=rf"{name}=.* must be True or False"):
        envs.make_vec("recall/DelayedMatch-v0", 2, **kwargs)


@pytest.mark.parametrize("first_copy", [2**63 - 1, rng.COPY_LIMIT, -1, True, 1.5])
def test_first_copy_out_of_range_is_a_clear_error(first_copy):
    with pytest.raises(ValueError, match=r"first_copy=.* is out of range; accepted: 0\.\."):
        envs.make_vec("recall/DelayedMatch-v0", 2, first_copy=first_copy)
    with pytest.raises(ValueError, match="first_copy"):
        gym.make("recall/DelayedMatch-v0", copy_index=first_copy)


def test_the_last_copies_below_the_limit_are_fine():
    env = envs.make_vec("recall/DelayedMatch-v0", 2, first_copy=rng.COPY_LIMIT - 2)
    env.reset()
    env.step(torch.zeros(2, dtype=torch.int64))
