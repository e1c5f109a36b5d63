"""The rules of POPGym's card tasks, checked against POPGym itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import envs

popgym = pytest.importorskip("popgym.envs")

LEVELS = ("easy", "medium", "hard")
POPGYM_CLASS = {
    ("recall/RepeatFirst-v0", "easy"): "RepeatFirstEasy",
    ("recall/RepeatFirst-v0", "medium"): "RepeatFirstMedium",
    ("recall/RepeatFirst-v0", "hard"): "RepeatFirstHard",
    ("recall/RepeatPrevious-v0", "easy"): "RepeatPreviousEasy",
    ("recall/RepeatPrevious-v0", "medium"): "RepeatPreviousMedium",
    ("recall/RepeatPrevious-v0", "hard"): "RepeatPreviousHard",
    ("recall/CountRecall-v0", "easy"): "CountRecallEasy",
    ("recall/CountRecall-v0", "medium"): "CountRecallMedium",
    ("recall/CountRecall-v0", "hard"): "CountRecallHard",
    ("recall/Autoencode-v0", "easy"): "AutoencodeEasy",
    ("recall/Autoencode-v0", "medium"): "AutoencodeMedium",
    ("recall/Autoencode-v0", "hard"): "AutoencodeHard",
}


def dealt_order(deck, categories: np.ndarray) -> np.ndarray:
    """The categories of a reset POPGym deck in the order it deals them (from the end)."""
    return categories[deck.idx[::-1]]


def popgym_cards(env_id: str, ref) -> np.ndarray:
    """The card sequence a freshly reset POPGym env will deal, in our set_cards layout."""
    if env_id == "recall/CountRecall-v0":
        values = dealt_order(ref.value_deck, ref.deck_idx_type)
        queries = dealt_order(ref.query_deck, ref.deck_idx_type)
        return np.stack([values, queries])
    return dealt_order(ref.deck, ref.deck.suits_idx)


def as_flat(obs) -> np.ndarray:
    return np.asarray(obs, dtype=np.int64).reshape(-1)


@pytest.mark.parametrize("env_id,level", list(POPGYM_CLASS))
def test_rewards_equal_popgym_for_the_same_cards(env_id, level):
    """Same cards, same actions: POPGym's reward, termination and observations, step by step."""
    ref = getattr(popgym, POPGYM_CLASS[(env_id, level)])()
    episodes = 3
    for episode in range(episodes):
        ref_obs, _ = ref.reset(seed=100 + episode)
        cards = popgym_cards(env_id, ref)
        ours = envs.make_vec(env_id, 1, difficulty=level)
        ours.reset(seed=0)
        ours.set_cards(torch.as_tensor(cards[..., : ours.num_deals])[None])
        obs = ours._observe()
        gen = np.random.default_rng(episode)
        n_actions = ours.single_action_space.n
        steps, ret = 0, 0.0
        while True:
            np.testing.assert_array_equal(obs[0].numpy(), as_flat(ref_obs))
            # Mix right answers with random ones so both reward signs are compared.
            right = int(ours.oracle_actions()[0])
            action = right if gen.random() < 0.5 else int(gen.integers(n_actions))
            ref_obs, ref_r, ref_term, ref_trunc, _ = ref.step(action)
            obs, r, term, trunc, info = ours.step(torch.tensor([action]))
            steps += 1
            ret += ref_r
            assert float(r[0]) == pytest.approx(ref_r, abs=1e-7), f"step {steps}"
            assert bool(term[0]) == ref_term and bool(trunc[0]) == ref_trunc
            if ref_term:
                break
        assert steps == ref.max_episode_length == ours.episode_steps
        assert float(info["episode_return"][0]) == pytest.approx(ret, abs=1e-5)


@pytest.mark.parametrize("env_id", ["recall/RepeatFirst-v0", "recall/RepeatPrevious-v0",
                                    "recall/CountRecall-v0", "recall/Autoencode-v0"])
@pytest.mark.parametrize("level", LEVELS)
def test_oracle_scores_one_and_random_policy_is_at_chance(env_id, level):
    B = 512
    vec = envs.make_vec(env_id, B, difficulty=level)
    vec.reset(seed=2)
    for _ in range(vec.episode_steps):
        _, _, _, _, info = vec.step(vec.oracle_actions())
    assert bool(info["done"].all()) and bool(info["success"].all())
    torch.testing.assert_close(info["episode_return"], torch.ones(B), atol=1e-4, rtol=0)

    gen = torch.Generator().manual_seed(0)
    vec.reset(seed=3)
    n = vec.single_action_space.n
    for _ in range(vec.episode_steps):
        _, _, _, _, info = vec.step(torch.randint(0, n, (B,), generator=gen))
    r = info["episode_return"]
    assert bool(info["done"].all()) and not bool(info["success"].any())
    # each answer is +-scale, right with p = 1/n: the return's std is
    # 2 sqrt(p (1 - p) / answers) <= 0.14; its mean over 512 episodes lies within 5 sigma.
    p, answers = 1.0 / n, vec.num_answers
    sigma = 2 * (p * (1 - p) / answers) ** 0.5 / B**0.5
    assert abs(r.mean().item() - vec.chance) < 5 * sigma + 1e-6
    assert vec.chance == pytest.approx(2 * p - 1)


@pytest.mark.parametrize("level", LEVELS)
def test_decks_hold_popgyms_cards(level):
    """Over an Autoencode episode every card of the deck is dealt: 13 per suit and deck."""
    vec = envs.make_vec("recall/Autoencode-v0", 256, difficulty=level)
    vec.reset(seed=5)
    N = vec.num_deals
    for _ in range(N - 1):
        vec.step(vec.oracle_actions())
    counts = torch.nn.functional.one_hot(vec.cards, 4).sum(1)
    assert torch.all(counts == N // 4)
    # the first card's suit is uniform over the copies (4 sigma for 256 copies)
    first = torch.bincount(vec.cards[:, 0], minlength=4).float() / 256
    assert torch.all((first - 0.25).abs() < 4 * (0.25 * 0.75 / 256) ** 0.5)


def test_count_recall_counts_the_queried_category():
    vec = envs.make_vec("recall/CountRecall-v0", 64, difficulty="medium")
    obs, _ = vec.reset(seed=1)
    seen = torch.zeros(64, 4, dtype=torch.int64)
    for _ in range(20):
        seen[torch.arange(64), obs[:, 0]] += 1
        truth = seen[torch.arange(64), obs[:, 1]]
        assert torch.equal(vec.oracle_actions(), truth)
        obs, reward, *_ = vec.step(truth)
        assert torch.all(reward > 0)


def test_autoencode_phases():
    vec = envs.make_vec("recall/Autoencode-v0", 8)
    obs, _ = vec.reset(seed=0)
    shown = []
    for _ in range(51):
        assert torch.all(obs[:, 0] == 1)
        shown.append(obs[:, 1].clone())
        obs, reward, *_ = vec.step(torch.zeros(8, dtype=torch.int64))
        assert torch.all(reward == 0), "watching earns nothing"
    shown.append(obs[:, 1].clone())
    assert torch.all(obs[:, 0] == 0), "the last card is shown in play mode"
    for j in range(52):
        obs, reward, term, _, _ = vec.step(shown[51 - j])
        torch.testing.assert_close(reward, torch.full((8,), 1 / 52))
        assert bool(term.all()) == (j == 51)
        if j < 51:
            assert torch.all(obs == 0)


def test_set_cards_affects_one_episode_only():
    vec = envs.make_vec("recall/RepeatFirst-v0", 4)
    vec.reset(seed=0)
    cards = torch.zeros(4, 51, dtype=torch.int64)
    cards[:, 13:26], cards[:, 26:39], cards[:, 39:] = 1, 2, 3
    vec.set_cards(cards)
    seen = []
    for _ in range(51):
        obs, *_ = vec.step(vec.oracle_actions())
        seen.append(obs[:, 0].clone())
    assert torch.equal(torch.stack(seen[:50], 1), cards[:, 1:])
    # the next episode is random again: a shuffled deck is not sorted
    later = [seen[-1]]
    for _ in range(20):
        obs, *_ = vec.step(vec.oracle_actions())
        later.append(obs[:, 0].clone())
    assert not torch.all(torch.stack(later, 1).diff(dim=1) >= 0)


@pytest.mark.parametrize(
    "cards,match",
    [(torch.zeros(2, 50, dtype=torch.int64), r"shape \(2, 51\)"),
     (torch.full((2, 51), 4), r"0..3"),
     (torch.zeros(2, 51, dtype=torch.int64), "at most 13")],
)
def test_set_cards_rejects_bad_decks(cards, match):
    vec = envs.make_vec("recall/RepeatFirst-v0", 2)
    with pytest.raises(ValueError, match=match):
        vec.set_cards(cards)


@pytest.mark.parametrize("env_id", ["recall/RepeatFirst-v0", "recall/CountRecall-v0"])
def test_bad_difficulty_names_value_and_accepted(env_id):
    with pytest.raises(ValueError, match="difficulty='extreme' .*accepted: easy, medium, hard"):
        envs.make_vec(env_id, 2, difficulty="extreme")
