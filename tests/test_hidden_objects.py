"""The rules of HiddenObjects."""

from __future__ import annotations

from collections import deque

import pytest
import torch

import envs
from envs.hidden_objects import AGENT, BOX, DELAY, QUERY, RIGHT, SHOW, WALL

ID = "recall/HiddenObjects-v0"


def kinds_in_view(obs, view):
    cells = obs[:, : view * view]
    return cells > BOX


def noop(n):
    return torch.zeros(n, dtype=torch.int64)


def test_show_then_cover_then_cue():
    n, k = 512, 3
    vec = envs.make_vec(ID, n, size=9, show_steps=2, delay=3, num_objects=k)
    obs, _ = vec.reset(seed=0)
    assert torch.all(obs[:, 25] == SHOW) and torch.all(obs[:, 26] == 0)
    assert torch.all(obs[:, 12] == AGENT)
    # every object lies in the first view, each kind once, no boxes yet
    seen = kinds_in_view(obs, 5)
    assert torch.all(seen.sum(1) == k) and torch.all((obs[:, :25] == BOX).sum(1) == 0)
    kinds = torch.sort(torch.where(seen, obs[:, :25] - BOX, 0), dim=1).values[:, -k:]
    assert torch.all(kinds.diff(dim=1) > 0)
    start = vec.pos.clone()
    obs, r, term, trunc, _ = vec.step(torch.full((n,), RIGHT))
    assert torch.equal(vec.pos, start), "the agent is held still while the objects show"
    assert torch.all(obs[:, 25] == SHOW)
    obs, *_ = vec.step(noop(n))
    # covered: the same cells now hold identical boxes, no kind visible
    assert torch.all(obs[:, 25] == DELAY) and torch.all(obs[:, 26] == 0)
    assert torch.equal(obs[:, :25] == BOX, seen) and not kinds_in_view(obs, 5).any()
    for _ in range(3):
        assert torch.all(obs[:, 25] == DELAY)
        obs, r, term, trunc, _ = vec.step(noop(n))
        assert not (term | trunc).any() and torch.all(r == 0)
    assert torch.all(obs[:, 25] == QUERY)
    cue = obs[:, 26]
    # the cue names one of the kinds shown
    assert torch.all((kinds == cue[:, None]).sum(1) == 1)


def test_reward_only_for_the_right_box():
    n, k = 1024, 4
    vec = envs.make_vec(ID, n, num_objects=k, delay=2)
    vec.reset(seed=3)
    idx = (vec.obj_pos == vec.target_pos[:, None]).long().argmax(1)
    wrong = torch.arange(n) % 2 == 1
    goal_idx = torch.where(wrong, (idx + 1) % k, idx)
    goal = vec.obj_pos.gather(1, goal_idx[:, None]).squeeze(1)
    done = torch.zeros(n, dtype=torch.bool)
    reward = torch.zeros(n)
    success = torch.zeros(n, dtype=torch.bool)
    for _ in range(vec.query_end):
        act = torch.where(vec.phase() == QUERY, vec.path_actions(goal), 0)
        _, r, term, trunc, info = vec.step(torch.where(done, 0, act))
        assert not trunc[~done].any()
        newly = term & ~done
        reward[newly], success[newly] = r[newly], info["success"][newly]
        done |= term
    assert done.all()
    assert torch.equal(reward, (~wrong).float())
    assert torch.equal(success, ~wrong)


def test_boxes_block_before_the_query():
    n = 256
    vec = envs.make_vec(ID, n, delay=20, show_steps=1)
    vec.reset(seed=1)
    vec.step(noop(n))
    for _ in range(19):
        before = vec.pos.clone()
        _, r, term, trunc, _ = vec.step(vec.path_actions(vec.target_pos))
        assert not (term | trunc).any() and torch.all(r == 0)
        assert torch.all(vec.pos != vec.target_pos)
    # the walk has reached the box and keeps bumping into it
    assert torch.equal(vec.pos, before)


def bfs_length(vec, i):
    s = vec.size
    layout = vec.layout[i].tolist()
    goal, start = int(vec.target_pos[i]), int(vec.pos[i])
    dist = {start: 0}
    q = deque([start])
    while q:
        p = q.popleft()
        if p == goal:
            return dist[p]
        for d in (-s, 1, s, -1):
            nxt = p + d
            if nxt not in dist and (layout[nxt] == 0 or nxt == goal):
                dist[nxt] = dist[p] + 1
                q.append(nxt)
    raise AssertionError("goal unreachable")


@pytest.mark.parametrize("size,k", [(7, 8), (9, 3), (15, 8)])
def test_oracle_walks_a_shortest_path_from_anywhere(size, k):
    n = 512
    vec = envs.make_vec(ID, n, size=size, num_objects=k, delay=12, show_steps=1)
    vec.reset(seed=size)
    gen = torch.Generator().manual_seed(size)
    for _ in range(13):  # wander at random through the show and delay phases
        vec.step(torch.randint(0, 5, (n,), generator=gen))
    assert torch.all(vec.phase() == QUERY)
    shortest = torch.tensor([bfs_length(vec, i) for i in range(n)])
    assert shortest.max() > 0
    steps = torch.zeros(n, dtype=torch.int64)
    done = torch.zeros(n, dtype=torch.bool)
    for _ in range(2 * size):
        _, r, term, trunc, info = vec.step(vec.oracle_actions())
        steps += (~done).long()
        assert torch.all(info["success"][term & ~done])
        done |= term
    assert done.all()
    assert torch.equal(steps, shortest)


def test_random_box_is_at_chance():
    n, k = 2048, 3
    vec = envs.make_vec(ID, n, num_objects=k, delay=0, show_steps=1)
    vec.reset(seed=11)
    wins, episodes = 0, 0
    pick = torch.zeros(n, dtype=torch.int64)
    for _ in range(40):
        # a fresh random box for each episode, from outside the env's randomness
        ep = vec.episode
        pick = (ep * 7919 + torch.arange(n) * 104729 + (ep * torch.arange(n)) % 13) % k
        goal = vec.obj_pos.gather(1, pick[:, None]).squeeze(1)
        act = torch.where(vec.phase() == QUERY, vec.path_actions(goal), 0)
        _, _, _, _, info = vec.step(act)
        wins += int(info["success"].sum())
        episodes += int(info["done"].sum())
    rate = wins / episodes
    # >= 4 * 2048 episodes: std of the rate < 0.0052; allow 5 sigma
    assert episodes >= 4 * n
    assert abs(rate - 1 / k) < 0.026, rate


def test_random_actions_find_the_right_box_at_chance():
    n, k = 2048, 2
    vec = envs.make_vec(ID, n, size=7, num_objects=k, delay=0, show_steps=1)
    vec.reset(seed=5)
    gen = torch.Generator().manual_seed(1)
    hits, wins = 0, 0
    for _ in range(40):
        _, _, term, _, info = vec.step(torch.randint(0, 5, (n,), generator=gen))
        hits += int(term.sum())
        wins += int(info["success"].sum())
    assert hits > 1000
    assert abs(wins / hits - 1 / k) < 5 * (0.25 / hits) ** 0.5, (wins, hits)


def test_time_limit_truncates_with_zero():
    vec = envs.make_vec(ID, 8, show_steps=2, delay=3, query_steps=20, size=9)
    vec.reset(seed=0)
    for t in range(25):
        _, r, term, trunc, info = vec.step(noop(8))
        assert not term.any() and torch.all(r == 0)
        assert bool(trunc.all()) == (t == 24)
    assert torch.all(info["episode_length"] == 25) and not info["success"].any()


def test_full_view_shows_the_room_and_the_agent():
    vec = envs.make_vec(ID, 16, size=11, full_view=True, num_objects=5)
    obs, _ = vec.reset(seed=2)
    assert obs.shape == (16, 121 + 2)
    cells = obs[:, :121].reshape(16, 11, 11)
    assert torch.all(cells[:, 0, :] == WALL) and torch.all(cells[:, :, -1] == WALL)
    assert torch.all((cells == AGENT).sum((1, 2)) == 1)
    assert torch.all((cells > BOX).sum((1, 2)) == 5)
    assert vec.observation_space.contains(obs.numpy())


def test_render_marks_the_answer_in_the_query():
    vec = envs.make_vec(ID, 2, delay=0, show_steps=1)
    vec.reset(seed=0)
    vec.step(noop(2))
    with_answer = vec.render_frame(0, show_answer=True)
    without = vec.render_frame(0, show_answer=False)
    assert with_answer.shape == without.shape and (with_answer != without).any()


@pytest.mark.parametrize(
    "knob,value,accepted",
    [("size", 6, "7..15"), ("size", 16, "7..15"), ("view", 3, "5..15"), ("view", 17, "5..15"),
     ("num_objects", 0, "1..8"), ("num_objects", 9, "1..8"), ("num_kinds", 2, "3..16"),
     ("show_steps", 0, "1..1000"), ("delay", -1, "0..100000"), ("query_steps", 17, "18..100000")],
)
def test_bad_knobs_name_value_and_range(knob, value, accepted):
    with pytest.raises(ValueError, match=rf"{knob}={value} is out of range; accepted: {accepted}"):
        envs.make_vec(ID, 2, **{knob: value})


def test_even_view_and_bad_full_view_raise():
    with pytest.raises(ValueError, match="view=6 must be odd"):
        envs.make_vec(ID, 2, view=6)
    with pytest.raises(ValueError, match="full_view=1 must be True or False"):
        envs.make_vec(ID, 2, full_view=1)
