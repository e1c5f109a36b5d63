"""The rules of AssociativeRecall."""

from __future__ import annotations

import pytest
import torch

import envs
from envs.associative_recall import DELAY, PAIRS, QUERY

ID = "recall/AssociativeRecall-v0"


def test_episode_structure_and_rewards():
    P, Q, D, V, B = 5, 3, 4, 12, 2048
    vec = envs.make_vec(ID, B, num_pairs=P, num_queries=Q, delay=D, vocab_size=V)
    obs, _ = vec.reset(seed=0)
    keys, values = [], []
    zero = torch.zeros(B, dtype=torch.int64)
    for t in range(P + D):
        if t < P:
            assert torch.all(obs[:, 0] == PAIRS)
            keys.append(obs[:, 1].clone())
            values.append(obs[:, 2].clone())
        else:
            assert torch.all(obs[:, 0] == DELAY) and torch.all(obs[:, 1:] == 0)
        obs, reward, term, *_ = vec.step(zero)
        assert torch.all(reward == 0) and not term.any(), "actions before the queries do nothing"
    keys, values = torch.stack(keys, 1), torch.stack(values, 1)
    tokens = torch.cat([keys, values], 1)
    assert torch.all((tokens >= 1) & (tokens <= V))
    assert torch.all(tokens.sort(1).values.diff(dim=1) != 0), "keys and values all distinct"
    asked = []
    gen = torch.Generator().manual_seed(0)
    for q in range(Q):
        assert torch.all(obs[:, 0] == QUERY) and torch.all(obs[:, 2] == 0)
        hit = keys == obs[:, 1:2]
        assert torch.all(hit.sum(1) == 1), "each query is one of the shown keys"
        pair = hit.long().argmax(1)
        asked.append(pair)
        truth = values.gather(1, pair[:, None]).squeeze(1)
        right = torch.rand(B, generator=gen) < 0.5
        action = torch.where(right, truth - 1, truth % V)  # truth % V names truth + 1 (wraps)
        obs, reward, term, _, info = vec.step(action)
        torch.testing.assert_close(reward, right.float() / Q)
        assert bool(term.all()) == (q == Q - 1)
    asked = torch.stack(asked, 1)
    assert torch.all(asked.sort(1).values.diff(dim=1) != 0), "queries are distinct keys"
    assert torch.all(info["episode_length"] == P + D + Q)


def test_success_needs_every_answer():
    vec = envs.make_vec(ID, 3, num_pairs=2, num_queries=2, delay=0)
    vec.reset(seed=0)
    vec.step(vec.oracle_actions())
    vec.step(vec.oracle_actions())
    a = vec.oracle_actions()
    vec.step(torch.stack([a[0], (a[1] + 1) % 16, a[2]]))
    a = vec.oracle_actions()
    _, _, term, _, info = vec.step(torch.stack([a[0], a[1], (a[2] + 1) % 16]))
    assert bool(term.all())
    assert info["success"].tolist() == [True, False, False]
    torch.testing.assert_close(info["episode_return"], torch.tensor([1.0, 0.5, 0.5]))


def test_tokens_are_spread_over_the_vocabulary():
    V, B = 16, 4096
    vec = envs.make_vec(ID, B, vocab_size=V)
    vec.reset(seed=4)
    counts = torch.bincount(torch.cat([vec.keys, vec.values], 1).flatten(), minlength=V + 1)[1:]
    freq = counts.float() / counts.sum()
    assert torch.all((freq - 1 / V).abs() < 0.006)
    # the queried pair is uniform over positions
    pos = torch.bincount(vec.order[:, 0], minlength=4).float() / B
    assert torch.all((pos - 0.25).abs() < 0.03)


def test_random_policy_is_at_chance():
    V, B = 8, 4096
    vec = envs.make_vec(ID, B, num_pairs=3, num_queries=3, delay=1, vocab_size=V)
    vec.reset(seed=5)
    gen = torch.Generator().manual_seed(0)
    rets = []
    for _ in range(7 * 4):
        _, _, _, _, info = vec.step(torch.randint(0, V, (B,), generator=gen))
        rets.append(info["episode_return"][info["done"]])
    r = torch.cat(rets)
    # return = right answers / 3, right ~ Binomial(3, 1/8): std of the mean over 16384 ~ 0.0015
    assert len(r) == 4 * B
    assert abs(r.mean().item() - vec.chance) < 0.008


@pytest.mark.parametrize(
    "knobs,message",
    [({"num_pairs": 0}, "num_pairs=0 is out of range; accepted: 1..64"),
     ({"num_pairs": 4, "num_queries": 5}, "num_queries=5 is out of range; accepted: 1..4"),
     ({"num_pairs": 9, "vocab_size": 16}, "vocab_size=16 is out of range; accepted: 18..256"),
     ({"vocab_size": 257}, "vocab_size=257 is out of range; accepted: 8..256"),
     ({"delay": -1}, r"delay=-1 is out of range; accepted: 0..100000")],
)
def test_bad_knobs_name_value_and_range(knobs, message):
    with pytest.raises(ValueError, match=message):
        envs.make_vec(ID, 2, **knobs)
