"""The rules of DelayedMatch."""

from __future__ import annotations

import pytest
import torch

import envs
from envs.delayed_match import CHOICE, CUE, DELAY


def test_episode_structure_and_rules():
    vec = envs.make_vec("recall/DelayedMatch-v0", 2048, delay=6, cue_steps=2, num_choices=3)
    obs, _ = vec.reset(seed=0)
    sample = obs[:, 1].clone()
    assert torch.all(obs[:, 0] == CUE) and torch.all(sample >= 1)
    for t in range(1, 9):
        obs, reward, term, _, _ = vec.step(torch.zeros(2048, dtype=torch.int64))
        assert torch.all(reward == 0) and not term.any(), "actions before the choice do nothing"
        if t < 2:
            assert torch.all(obs[:, 0] == CUE) and torch.equal(obs[:, 1], sample)
        elif t < 8:
            assert torch.all(obs[:, 0] == DELAY) and torch.all(obs[:, 2:] == 0)
    assert torch.all(obs[:, 0] == CHOICE) and torch.all(obs[:, 1] == 0)
    options = obs[:, 2:]
    # exactly one option equals the sample, all options distinct
    assert torch.all((options == sample[:, None]).sum(1) == 1)
    assert torch.all(options.sort(1).values.diff(dim=1) != 0)
    answer = (options == sample[:, None]).long().argmax(1)
    # the answer sits at each position about equally often
    counts = torch.bincount(answer, minlength=3).float() / 2048
    assert torch.all((counts - 1 / 3).abs() < 0.05)
    action = torch.where(torch.arange(2048) % 2 == 0, answer, (answer + 1) % 3)
    obs, reward, term, _, info = vec.step(action)
    assert torch.all(term) and torch.all(info["episode_length"] == 9)
    assert torch.equal(reward, (torch.arange(2048) % 2 == 0).float())
    assert torch.equal(info["success"], reward.bool())
    assert torch.all(obs[:, 0] == CUE), "the next episode starts at once"


def test_distractors_off_gives_blanks():
    vec = envs.make_vec("recall/DelayedMatch-v0", 64, delay=4, distractors=False)
    vec.reset(seed=0)
    obs, *_ = vec.step(torch.zeros(64, dtype=torch.int64))
    assert torch.all(obs[:, 1] == 0)


def test_distractors_are_random_symbols():
    vec = envs.make_vec("recall/DelayedMatch-v0", 4096, delay=4, num_symbols=8)
    vec.reset(seed=0)
    obs, *_ = vec.step(torch.zeros(4096, dtype=torch.int64))
    counts = torch.bincount(obs[:, 1], minlength=9)[1:].float() / 4096
    assert torch.all((counts - 1 / 8).abs() < 0.03)


def test_random_policy_is_at_chance():
    vec = envs.make_vec("recall/DelayedMatch-v0", 4096, delay=3, num_choices=4)
    vec.reset(seed=11)
    gen = torch.Generator().manual_seed(0)
    wins, episodes = 0.0, 0
    for _ in range(5 * 5):
        _, _, _, _, info = vec.step(torch.randint(0, 4, (4096,), generator=gen))
        wins += info["success"].sum().item()
        episodes += info["done"].sum().item()
    rate = wins / episodes
    # 5 episodes x 4096 copies: std of the rate ~ 0.003; allow 5 sigma
    assert episodes == 5 * 4096
    assert abs(rate - 0.25) < 0.016, rate


@pytest.mark.parametrize(
    "knob,value,accepted",
    [("delay", -1, "0..100000"), ("delay", 100_001, "0..100000"), ("num_choices", 9, "2..8"),
     ("num_symbols", 1, "2..256"), ("cue_steps", 0, "1..1000")],
)
def test_bad_knobs_name_value_and_range(knob, value, accepted):
    with pytest.raises(ValueError, match=rf"{knob}={value} is out of range; accepted: {accepted}"):
        envs.make_vec("recall/DelayedMatch-v0", 2, **{knob: value})


def test_long_delay_is_cheap():
    vec = envs.make_vec("recall/DelayedMatch-v0", 2, delay=100_000)
    obs, _ = vec.reset(seed=0)
    assert vec.choice_step == 100_001
