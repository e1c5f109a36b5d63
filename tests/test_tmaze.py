"""The rules of PassiveTMaze (Ni et al. 2023)."""

from __future__ import annotations

import pytest
import torch

import envs
from envs.tmaze import DOWN, LEFT, RIGHT, UP

ID = "recall/PassiveTMaze-v0"


def const(action: int, n: int) -> torch.Tensor:
    return torch.full((n,), action, dtype=torch.int64)


def test_cue_only_at_first_step_and_oracle_return_is_one():
    L, B = 7, 1024
    vec = envs.make_vec(ID, B, length=L)
    obs, _ = vec.reset(seed=0)
    cue = obs[:, 1].clone()
    assert torch.all(obs[:, 0] == 0) and torch.all((cue == 0) | (cue == 2))
    assert abs((cue == 2).float().mean().item() - 0.5) < 0.06, "both arms about equally often"
    for t in range(L):
        obs, reward, term, trunc, _ = vec.step(vec.oracle_actions())
        assert torch.all(reward == 0) and not term.any() and not trunc.any()
        if t < L - 1:
            assert torch.all(obs == torch.tensor([0, 1])), "corridor: nothing to see"
    assert torch.all(obs == torch.tensor([1, 1])), "at the junction, in the middle"
    obs, reward, term, trunc, info = vec.step(vec.oracle_actions())
    assert torch.all(term) and not trunc.any(), "the end of the horizon is terminal, as in the paper"
    assert torch.all(info["episode_length"] == L + 1)
    assert torch.all(info["success"]) and torch.all(info["episode_return"] == 1.0)
    assert torch.all(obs[:, 1] != 1), "the next episode shows its cue at once"


def test_penalty_for_each_step_behind_schedule():
    L = 4
    vec = envs.make_vec(ID, 2, length=L)
    vec.reset(seed=0)
    # copy 0 waits one step (left into the wall) then runs; copy 1 runs.
    rewards = []
    for t in range(L):
        a = torch.tensor([LEFT if t == 0 else RIGHT, RIGHT])
        _, r, *_ = vec.step(a)
        rewards.append(r)
        assert int(vec.x[1]) == t + 1 and int(vec.x[0]) == t
    rewards = torch.stack(rewards, 1)
    torch.testing.assert_close(rewards[0], torch.full((L,), -1 / L))
    torch.testing.assert_close(rewards[1], torch.zeros(L))
    # copy 0 is one cell short of the junction at the last step: no goal, return -1
    _, r, term, _, info = vec.step(torch.tensor([UP, UP]))
    assert bool(term.all()) and float(r[0]) == 0.0
    assert float(info["episode_return"][0]) == pytest.approx(-1.0)


def test_walls_keep_the_agent_in_place():
    L = 3
    vec = envs.make_vec(ID, 1, length=L)
    vec.reset(seed=0)
    for a in (UP, DOWN, LEFT):
        vec.step(const(a, 1))
        assert int(vec.x[0]) == 0 and int(vec.y[0]) == 0, "no arms before the junction"
    # the junction is first reached at the last step; past it is a wall
    vec = envs.make_vec(ID, 1, length=L, final_observation=True)
    vec.reset(seed=0)
    for _ in range(L):
        vec.step(const(RIGHT, 1))
    _, r, term, _, info = vec.step(const(RIGHT, 1))
    assert bool(term[0]) and float(r[0]) == 0.0 and not bool(info["success"][0])
    assert info["final_observation"][0].tolist() == [1, 1]


def test_reward_names_the_cued_arm():
    L, B = 3, 512
    vec = envs.make_vec(ID, B, length=L)
    obs, _ = vec.reset(seed=1)
    up = obs[:, 1] == 2
    for _ in range(L):
        vec.step(const(RIGHT, B))
    _, r, _, _, info = vec.step(const(UP, B))
    assert torch.equal(r, up.float()) and torch.equal(info["success"], up)


def test_memoryless_policy_is_at_chance():
    L, B = 5, 4096
    vec = envs.make_vec(ID, B, length=L)
    vec.reset(seed=2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(L):
        vec.step(const(RIGHT, B))
    turn = torch.where(torch.rand(B, generator=gen) < 0.5, UP, DOWN)
    _, _, _, _, info = vec.step(turn)
    rate = info["success"].float().mean().item()
    assert abs(rate - vec.chance) < 5 * (0.25 / B) ** 0.5  # 5 sigma


def test_uniform_random_policy_success_rate():
    # length 1: success needs RIGHT at step 1 (p 1/4), then the cued arm (p 1/4).
    B = 8192
    vec = envs.make_vec(ID, B, length=1)
    vec.reset(seed=3)
    gen = torch.Generator().manual_seed(1)
    wins = 0.0
    for _ in range(2 * 4):
        _, _, _, _, info = vec.step(torch.randint(0, 4, (B,), generator=gen))
        wins += info["success"].sum().item()
    rate, p = wins / (4 * B), 1 / 16
    assert abs(rate - p) < 5 * (p * (1 - p) / (4 * B)) ** 0.5


def test_long_corridor_works():
    vec = envs.make_vec(ID, 3, length=5000)
    vec.reset(seed=0)
    for _ in range(5000):
        _, _, term, _, _ = vec.step(vec.oracle_actions())
    assert not term.any()
    _, _, term, _, info = vec.step(vec.oracle_actions())
    assert torch.all(term) and torch.all(info["success"])


def test_render_marks_cued_arm():
    vec = envs.make_vec(ID, 2, length=12)
    vec.reset(seed=0)
    frame = vec.render(0)
    hidden = vec.render_frame(0, show_answer=False)
    assert frame.shape == hidden.shape and (frame != hidden).any()


@pytest.mark.parametrize("value", [0, 5001, 2.5, True])
def test_bad_length_names_value_and_range(value):
    with pytest.raises(ValueError, match=rf"length={value!r} is out of range; accepted: 1..5000"):
        envs.make_vec(ID, 2, length=value)
