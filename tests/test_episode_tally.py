"""EpisodeTally counts exactly N episodes, each copy its first quota[i]."""

import pytest
import torch

from agents.evaluation.episode_tally import EpisodeTally


def info(done, ret, success):
    done = torch.tensor(done)
    return {
        "done": done,
        "episode_return": torch.tensor(ret, dtype=torch.float32),
        "episode_length": torch.full((len(done),), 3),
        "success": torch.tensor(success),
    }


def test_quota_and_totals():
    tally = EpisodeTally(3, 2, "cpu")  # copy 0 counts 2 episodes, copy 1 counts 1
    assert tally.quota.tolist() == [2, 1]
    tally.add(info([True, True], [1.0, 0.5], [True, False]))
    assert not tally.complete()
    tally.add(info([False, True], [0.0, 9.0], [False, True]))  # copy 1 over its quota: ignored
    tally.add(info([True, False], [0.0, 0.0], [False, False]))
    assert tally.complete()
    assert tally.result() == {
        "success_rate": pytest.approx(1 / 3),
        "mean_return": pytest.approx(1.5 / 3),
        "mean_length": 3.0,
        "episodes": 3,
    }


def test_bad_episode_count_and_early_result():
    with pytest.raises(ValueError, match="episodes must be an int >= 1, got 0"):
        EpisodeTally(0, 4, "cpu")
    with pytest.raises(RuntimeError, match="0 of 5 episodes"):
        EpisodeTally(5, 2, "cpu").result()
