"""The rules of Ballet."""

from __future__ import annotations

import pytest
import torch

import envs
from envs.ballet import (
    AGENT,
    CENTRE,
    DANCE_STEPS,
    DANCER,
    HIDDEN,
    NUM_COLOURS,
    NUM_IDS,
    SIZE,
    dance_offsets,
    sprite_table,
)

ID = "recall/Ballet-v0"


def test_thirteen_distinct_dances_near_the_spot():
    d = dance_offsets()
    assert d.shape == (13, DANCE_STEPS)
    assert len({tuple(row) for row in d.tolist()}) == 13
    shown = d[d != HIDDEN]
    near = {dr * SIZE + dc for dr in (-1, 0, 1) for dc in (-1, 0, 1)}
    assert set(shown.tolist()) <= near  # the spot or one of the 8 cells around it
    assert torch.all(d.eq(HIDDEN).sum(1) < DANCE_STEPS)


def test_sprites_are_all_different():
    flat = sprite_table().reshape(sprite_table().shape[0], -1)
    # the plain agent (id 2) is drawn as the agent showing token 0; every other pair differs
    assert torch.equal(flat[AGENT], flat[NUM_IDS])
    rows = [tuple(row) for i, row in enumerate(flat.tolist()) if i != AGENT]
    assert len(set(rows)) == len(rows)


@pytest.mark.parametrize("k,delay", [(4, 16), (2, 48)])
def test_watch_phase_shows_each_dance_in_turn(k, delay):
    n = 128
    vec = envs.make_vec(ID, n, num_dancers=k, delay=delay)
    obs, _ = vec.reset(seed=4)
    offsets = dance_offsets()
    home = vec._spot_flat[vec.spot]
    look = vec.look
    # distinct shapes and distinct colours in every room
    shape, colour = (look - DANCER) // NUM_COLOURS, (look - DANCER) % NUM_COLOURS
    for x in (shape, colour):
        assert torch.all(x.sort(1).values.diff(dim=1) > 0)
    gen = torch.Generator().manual_seed(0)
    for t in range(vec.watch_steps):
        cells, token = obs[:, : SIZE * SIZE], obs[:, -1]
        assert torch.all(token == 0) and torch.all(cells[:, CENTRE] == AGENT)
        assert torch.all(vec.pos == CENTRE), "actions are ignored while watching"
        slot, beat = divmod(t, DANCE_STEPS + delay)
        for j in range(k):
            where = (cells == look[:, j : j + 1]).long()
            count = where.sum(1)
            cell = where.argmax(1)
            if j == slot and beat < DANCE_STEPS:
                off = offsets[vec.dance[:, j], beat]
                hidden = off == HIDDEN
                assert torch.all(count == (~hidden).long())
                assert torch.all((cell == home[:, j] + off)[~hidden])
            else:
                assert torch.all(count == 1) and torch.all(cell == home[:, j])
        obs, r, term, trunc, _ = vec.step(torch.randint(0, 8, (n,), generator=gen))
        assert not (term | trunc).any() and torch.all(r == 0)
    # the instruction names one of the dances performed: the target's
    token = obs[:, -1]
    assert torch.all(token >= 1)
    assert torch.equal(token - 1, vec.dance.gather(1, vec.target[:, None]).squeeze(1))
    assert torch.all((vec.dance == (token - 1)[:, None]).sum(1) == 1)
    # every dancer a different dance
    assert torch.all(vec.dance.sort(1).values.diff(dim=1) > 0)


def test_reward_only_for_the_named_dancer():
    n, k = 512, 8
    vec = envs.make_vec(ID, n, num_dancers=k, delay=16)
    vec.reset(seed=9)
    wrong = torch.arange(n) % 2 == 1
    goal = torch.where(wrong, (vec.target + 1 + torch.arange(n) % (k - 1)) % k, vec.target)
    done = torch.zeros(n, dtype=torch.bool)
    reward = torch.zeros(n)
    success = torch.zeros(n, dtype=torch.bool)
    for _ in range(vec.watch_steps + 12):
        _, r, term, trunc, info = vec.step(vec.path_actions(goal))
        assert not trunc.any()
        newly = term & ~done
        reward[newly], success[newly] = r[newly], info["success"][newly]
        assert torch.all(info["episode_length"][newly] <= vec.watch_steps + 3)
        done |= term
    assert done.all()
    assert torch.equal(reward, (~wrong).float()) and torch.equal(success, ~wrong)


@pytest.mark.parametrize("delay,limit", [(16, 320), (48, 1024)])
def test_time_limit_truncates(delay, limit):
    vec = envs.make_vec(ID, 4, num_dancers=2, delay=delay)
    vec.reset(seed=0)
    for t in range(limit):
        # NE then SW: back and forth between the centre and a cell no dancer holds
        _, r, term, trunc, info = vec.step(torch.full((4,), 1 if t % 2 == 0 else 5))
        assert not term.any() and torch.all(r == 0)
        assert bool(trunc.all()) == (t == limit - 1)
    assert torch.all(info["episode_length"] == limit)


def test_walls_block_and_moves_wait_for_the_instruction():
    vec = envs.make_vec(ID, 64, num_dancers=8, delay=16)
    vec.reset(seed=0)
    for _ in range(vec.watch_steps):
        vec.step(torch.full((64,), 1))
    assert torch.all(vec.pos == CENTRE)
    # NE to (4, 6), then N to the top row past no spot, then N into the wall
    for a in (1, 0, 0, 0, 0, 0):
        _, r, term, trunc, _ = vec.step(torch.full((64,), a))
        assert not (term | trunc).any() and torch.all(r == 0)
    assert torch.all(vec.pos == 1 * SIZE + 6)


def test_random_dancer_is_at_chance():
    n, k = 2048, 4
    vec = envs.make_vec(ID, n, num_dancers=k, delay=16)
    vec.reset(seed=21)
    pick = (torch.arange(n) * 2654435761 % 1000003) % k
    wins = episodes = 0
    for _ in range(vec.watch_steps + 6):
        _, _, _, _, info = vec.step(vec.path_actions(pick))
        wins += int(info["success"].sum())
        episodes += int(info["done"].sum())
    assert episodes == n
    # std of the rate ~ 0.0096; allow 5 sigma
    assert abs(wins / episodes - 1 / k) < 0.048, wins / episodes


def test_pixels_draw_the_symbolic_view():
    sym = envs.make_vec(ID, 8, num_dancers=8, delay=16)
    pix = envs.make_vec(ID, 8, num_dancers=8, delay=16, pixels=True)
    o_s, _ = sym.reset(seed=3)
    o_p, _ = pix.reset(seed=3)
    sprites = sprite_table()
    for _ in range(sym.watch_steps + 2):
        assert o_p.shape == (8, 99, 99, 3) and o_p.dtype == torch.uint8
        cells = o_s[:, : SIZE * SIZE].clone()
        cells[:, CENTRE] = NUM_IDS + o_s[:, -1]
        want = sprites[cells].reshape(8, SIZE, SIZE, 9, 9, 3).permute(0, 1, 3, 2, 4, 5)
        assert torch.equal(o_p, want.reshape(8, 99, 99, 3))
        act = sym.oracle_actions()
        o_s, *_ = sym.step(act)
        o_p, *_ = pix.step(act)
    assert pix.observation_space.contains(o_p.numpy())


def test_egocentric_view_moves_with_the_agent():
    vec = envs.make_vec(ID, 4, num_dancers=2, delay=16)
    vec.reset(seed=0)
    for _ in range(vec.watch_steps):
        obs, *_ = vec.step(torch.zeros(4, dtype=torch.int64))
    before = obs[:, : SIZE * SIZE].reshape(4, SIZE, SIZE)
    # step W (action 6) unless a dancer is there: then E (action 2)
    west_taken = (vec._spot_flat[vec.spot] == CENTRE - 1).any(1)
    obs, _, term, *_ = vec.step(torch.where(west_taken, 2, 6))
    assert not term.any()
    after = obs[:, : SIZE * SIZE].reshape(4, SIZE, SIZE)
    moved = 0
    for i in range(4):
        if bool(west_taken[i]):
            continue
        moved += 1
        # the room shifted one column right in the view; the new left column is outside: wall
        assert torch.all(after[i, :, 0] == 1)
        a, b = after[i, :, 1:].clone(), before[i, :, :-1].clone()
        for m in (a, b):  # the agent's old and new cells
            m[SIZE // 2, SIZE // 2 - 1 : SIZE // 2 + 1] = -1
        assert torch.equal(a, b)
    assert moved > 0


def test_render_marks_the_answer():
    vec = envs.make_vec(ID, 2, num_dancers=4, delay=16)
    vec.reset(seed=0)
    frame = vec.render_frame(0)
    for _ in range(vec.watch_steps):
        vec.step(torch.zeros(2, dtype=torch.int64))
    with_answer, without = vec.render_frame(0, True), vec.render_frame(0, False)
    assert with_answer.shape == without.shape == frame.shape
    assert (with_answer != without).any()


@pytest.mark.parametrize(
    "knob,value,accepted",
    [("num_dancers", 3, "2, 4, 8"), ("num_dancers", 16, "2, 4, 8"), ("delay", 20, "16, 48"),
     ("delay", 0, "16, 48")],
)
def test_bad_levels_name_value_and_accepted(knob, value, accepted):
    with pytest.raises(ValueError, match=rf"{knob}={value} is not a Ballet level; accepted: {accepted}"):
        envs.make_vec(ID, 2, **{knob: value})


def test_bad_pixels_raises():
    with pytest.raises(ValueError, match="pixels='yes' must be True or False"):
        envs.make_vec(ID, 2, pixels="yes")
