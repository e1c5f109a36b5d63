"""Every task draws the agent's action apart from the right answer: green where it is scored
right, red where it is scored wrong; steps whose action the env ignores draw no mark."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import envs
from envs.render import ANSWER, PICK, WRONG

TASKS = [
    ("recall/DelayedMatch-v0", {"delay": 3}, True),
    ("recall/NBack-v0", {"length": 8}, True),
    ("recall/AssociativeRecall-v0", {"delay": 2}, True),
    ("recall/RepeatFirst-v0", {}, True),
    ("recall/RepeatPrevious-v0", {}, True),
    ("recall/CountRecall-v0", {}, True),
    ("recall/Autoencode-v0", {}, True),
    ("recall/PassiveTMaze-v0", {"length": 6}, True),
    ("recall/HiddenObjects-v0", {"delay": 2}, False),  # a wrong move may land on no box
    ("recall/Ballet-v0", {}, False),
]
IGNORED_AT_START = {"recall/DelayedMatch-v0", "recall/NBack-v0", "recall/AssociativeRecall-v0",
                    "recall/RepeatPrevious-v0", "recall/Autoencode-v0", "recall/HiddenObjects-v0",
                    "recall/Ballet-v0"}


def _matters(env) -> bool:
    matter = env.actions_matter()  # None: every action matters
    return matter is None or bool(matter[0])


def count(frame: np.ndarray, colour) -> int:
    return int((frame == np.asarray(colour, np.uint8)).all(-1).sum())


def _at_decision(env_id, knobs):
    """The env at the last step of an oracle episode (the step that scores it), and the
    oracle's action there."""
    env = envs.make_vec(env_id, 1, seed=0, **knobs)
    env.reset(seed=0)
    length = 0
    while True:
        _, _, te, tr, info = env.step(env.oracle_actions())
        length += 1
        if bool((te | tr)[0]):
            assert bool(info["success"][0])
            break
    env.reset(seed=0)
    for _ in range(length - 1):
        env.step(env.oracle_actions())
    assert _matters(env)
    return env, int(env.oracle_actions()[0])


@pytest.mark.parametrize("env_id,knobs,always_scored", TASKS)
def test_the_pick_is_green_when_right_and_red_when_wrong(env_id, knobs, always_scored):
    env, right = _at_decision(env_id, knobs)
    plain = env.render(0)
    good = env.render(0, action=right)
    assert count(good, WRONG) == 0
    assert count(good, ANSWER) > count(plain, ANSWER), "the right pick is drawn in green"
    wrong = (right + 1) % env.single_action_space.n
    bad = env.render(0, action=wrong)
    if always_scored:
        assert count(bad, WRONG) > 20, "the wrong pick is drawn in red"
        assert count(bad, ANSWER) == count(plain, ANSWER), "the answer keeps its own green mark"
    else:
        assert count(bad, WRONG) + count(bad, PICK) > 20, "the move is drawn"


@pytest.mark.parametrize("env_id,knobs,always_scored", TASKS)
def test_ignored_actions_are_marked_nowhere(env_id, knobs, always_scored):
    env = envs.make_vec(env_id, 1, seed=0, **knobs)
    env.reset(seed=0)
    ignored = env_id in IGNORED_AT_START
    assert _matters(env) is not ignored
    if ignored:
        assert np.array_equal(env.render(0, action=1), env.render(0))


def test_actions_matter_follows_the_phases():
    env = envs.make_vec("recall/DelayedMatch-v0", 2, seed=0, delay=2)
    env.reset()
    seen = []
    for _ in range(4):
        seen.append(env.actions_matter().tolist())
        env.step(torch.zeros(2, dtype=torch.int64))
    assert seen == [[False, False], [False, False], [False, False], [True, True]]
    nback = envs.make_vec("recall/NBack-v0", 1, seed=0, n=3, length=6)
    nback.reset()
    got = []
    for _ in range(6):
        got.append(_matters(nback))
        nback.step(torch.zeros(1, dtype=torch.int64))
    assert got == [False, False, False, True, True, True]


def test_bad_action_to_render_is_one_clear_error():
    env = envs.make_vec("recall/DelayedMatch-v0", 1, seed=0)
    env.reset()
    with pytest.raises(ValueError, match=r"action 7 is out of range; accepted: 0\.\.3"):
        env.render(0, action=7)


def test_minigrid_names_its_actions_and_draws_its_own_frame():
    env = envs.make_vec("MiniGrid-MemoryS7-v0", 1, seed=0)
    env.reset()
    assert env.action_names[:3] == ("left", "right", "forward")
    assert np.array_equal(env.render(0, action=2), env.render(0))
