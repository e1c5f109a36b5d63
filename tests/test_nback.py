"""The rules of NBack."""

from __future__ import annotations

import pytest
import torch

import envs


def test_answers_and_rewards_follow_the_stream():
    n, length, B = 3, 20, 1024
    vec = envs.make_vec("recall/NBack-v0", B, n=n, length=length)
    obs, _ = vec.reset(seed=4)
    stream = [obs[:, 0].clone()]
    gen = torch.Generator().manual_seed(1)
    total = torch.zeros(B)
    for t in range(length):
        assert torch.all(obs[:, 1] == int(t >= n))
        action = torch.randint(0, 2, (B,), generator=gen)
        obs, reward, term, _, info = vec.step(action)
        if t < n:
            assert torch.all(reward == 0)
        else:
            truth = (stream[t] == stream[t - n]).long()
            expected = torch.where(action == truth, 1.0, -1.0) / (length - n)
            torch.testing.assert_close(reward, expected)
        total += reward
        stream.append(obs[:, 0].clone())
        assert bool(term.all()) == (t == length - 1)
    torch.testing.assert_close(info["episode_return"], total)


def test_match_probability():
    vec = envs.make_vec("recall/NBack-v0", 4096, n=2, length=40, match_prob=0.3)
    vec.reset(seed=0)
    matches, due = 0, 0
    for t in range(39):
        if t >= 2:
            matches += vec.target().sum().item()
            due += 4096
        vec.step(vec.oracle_actions())
    assert abs(matches / due - 0.3) < 0.01


def test_success_needs_ninety_percent():
    n, length = 2, 22  # 20 answers: 18 right succeeds, 17 right fails
    for wrong, ok in [(2, True), (3, False)]:
        vec = envs.make_vec("recall/NBack-v0", 1, n=n, length=length)
        vec.reset(seed=0)
        for t in range(length):
            a = vec.oracle_actions()
            if n <= t < n + wrong:
                a = 1 - a
            _, _, term, _, info = vec.step(a)
        assert bool(term[0]) and bool(info["success"][0]) == ok


def test_random_policy_is_at_chance():
    vec = envs.make_vec("recall/NBack-v0", 4096, n=2, length=12)
    vec.reset(seed=3)
    gen = torch.Generator().manual_seed(0)
    returns = []
    for _ in range(36):
        _, _, _, _, info = vec.step(torch.randint(0, 2, (4096,), generator=gen))
        returns.append(info["episode_return"][info["done"]])
    r = torch.cat(returns)
    # per-episode return has std ~ 1/sqrt(10) ~ 0.32; mean over 12288 episodes: std ~ 0.003
    assert len(r) == 3 * 4096 and abs(r.mean().item()) < 0.015


@pytest.mark.parametrize(
    "knob,value,accepted",
    [("n", 0, "1..64"), ("n", 65, "1..64"), ("length", 2, "3..100000"), ("match_prob", 1.5, "0.0..1.0")],
)
def test_bad_knobs_name_value_and_range(knob, value, accepted):
    with pytest.raises(ValueError, match=rf"{knob}={value} is out of range; accepted: {accepted}"):
        envs.make_vec("recall/NBack-v0", 2, **{knob: value})
