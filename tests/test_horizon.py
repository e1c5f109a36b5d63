"""Cherepanov et al.'s labels: each task's memory horizon xi, each core's context K."""

from __future__ import annotations

import math

import pytest
import torch

import envs
from agents.dt.model import DecisionTransformer
from envs.registration import MINIGRID_IDS, TASKS
from memory_modules import CORES, make_core

# (env id, knobs, xi) worked out by hand from each task's rules (module docstrings).
HORIZONS = [
    ("recall/DelayedMatch-v0", {"delay": 16}, 18),
    ("recall/DelayedMatch-v0", {"delay": 0, "cue_steps": 3}, 2),
    ("recall/NBack-v0", {"n": 2}, 3),
    ("recall/NBack-v0", {"n": 5, "length": 40}, 6),
    ("recall/HiddenObjects-v0", {"delay": 30, "show_steps": 2}, 32),
    ("recall/Ballet-v0", {"num_dancers": 2, "delay": 16}, 2 * 32 - 12),
    ("recall/Ballet-v0", {"num_dancers": 8, "delay": 48}, 8 * 64 - 12),
    ("recall/PassiveTMaze-v0", {"length": 100}, 101),
    ("recall/AssociativeRecall-v0", {"num_pairs": 4, "num_queries": 2, "delay": 10}, 16),
    ("recall/RepeatFirst-v0", {"difficulty": "medium"}, 8 * 52 - 1),
    ("recall/RepeatPrevious-v0", {"difficulty": "easy"}, 4),
    ("recall/RepeatPrevious-v0", {"difficulty": "hard"}, 64),
    ("recall/CountRecall-v0", {"difficulty": "easy"}, 51),
    ("recall/Autoencode-v0", {"difficulty": "easy"}, 103),
    ("MiniGrid-MemoryS7-v0", {}, 6),
    ("MiniGrid-MemoryS13Random-v0", {}, 12),
]


@pytest.mark.parametrize("env_id,knobs,xi", HORIZONS)
def test_memory_horizon_from_knobs(env_id, knobs, xi):
    assert envs.make_vec(env_id, 1, **knobs).memory_horizon == xi


def test_every_task_states_its_horizon():
    for env_id in [*TASKS, *MINIGRID_IDS]:
        xi = envs.make_vec(env_id, 1).memory_horizon
        assert isinstance(xi, int) and xi >= 2, env_id  # every task needs some memory


@pytest.mark.parametrize("delay,cue_steps", [(0, 1), (5, 2), (12, 1)])
def test_delayed_match_horizon_is_last_cue_to_choice(delay, cue_steps):
    env = envs.make_vec("recall/DelayedMatch-v0", 4, delay=delay, cue_steps=cue_steps)
    obs, _ = env.reset(seed=1)
    sample, last_cue, t = obs[:, 1].clone(), None, 0
    while True:
        if torch.equal(obs[:, 1], sample) and (obs[:, 0] == 0).all():
            last_cue = t
        if (obs[:, 0] == 2).all():  # the choice: the step that needs the cue
            break
        obs, *_ = env.step(torch.zeros(4, dtype=torch.int64))
        t += 1
    assert t - last_cue + 1 == env.memory_horizon


def test_tmaze_horizon_is_cue_to_turn():
    env = envs.make_vec("recall/PassiveTMaze-v0", 2, length=7)
    env.reset(seed=0)
    done, steps = False, 0
    while not done:
        *_, term, trunc, info = env.step(env.oracle_actions())
        done, steps = bool((term | trunc).all()), steps + 1
    # the cue is seen at step 0 only; the turn that needs it is the episode's last step
    assert int(info["episode_length"][0]) == steps == env.memory_horizon


# (core, options, K)
CONTEXTS = [
    ("mlp", {}, 1),
    ("lstm", {}, math.inf),
    ("gru", {}, math.inf),
    ("rmc", {}, math.inf),
    ("dtmem", {}, math.inf),
    ("gtrxl", {"num_layers": 1, "window": 64}, 65),
    ("gtrxl", {"num_layers": 2, "window": 64}, 129),
    ("hcam", {"num_layers": 1, "chunk_size": 8, "max_chunks": 8}, 65),
    ("hcam", {"num_layers": 2, "chunk_size": 16, "max_chunks": 64}, 2049),
]


@pytest.mark.parametrize("core,options,K", CONTEXTS)
def test_context_length(core, options, K):
    assert make_core(core, 8, **options).context_length == K


def test_every_core_states_its_context():
    for core in CORES:
        K = make_core(core, 8).context_length
        assert K == math.inf or (isinstance(K, int) and K >= 1), core


def _reach(core, T: int, t: int, s: int) -> bool:
    """Whether the core's output at step t changes when only the input at step s < t does."""
    torch.manual_seed(0)
    x = torch.randn(T, 1, core.input_size)
    starts = torch.zeros(T, 1, dtype=torch.bool)
    starts[0] = True
    with torch.no_grad():
        y0, _ = core(x, core.initial_state(1, "cpu"), starts)
        x[s] += 1.0
        y1, _ = core(x, core.initial_state(1, "cpu"), starts)
    return not torch.equal(y0[t], y1[t])


@pytest.mark.parametrize("core,options", [
    ("mlp", {"hidden_size": 16}),
    ("gtrxl", {"hidden_size": 16, "num_heads": 2, "num_layers": 1, "window": 3}),
    ("gtrxl", {"hidden_size": 16, "num_heads": 2, "num_layers": 2, "window": 3}),
    # top_k = max_chunks: every stored chunk is read, so nothing hides behind the selection
    ("hcam", {"hidden_size": 16, "num_heads": 2, "num_layers": 1, "chunk_size": 2,
              "max_chunks": 2, "top_k": 2}),
])
def test_context_length_is_the_reach_of_a_step(core, options):
    """The output at step t depends on the input K - 1 steps back; for the sliding
    window (and no memory), on nothing further back."""
    torch.manual_seed(0)
    c = make_core(core, 4, **options).eval()
    K = c.context_length
    T = 3 * K + 4
    for t in range(K, T):
        assert _reach(c, T, t, t - K + 1), (t, K)
    if core != "hcam":  # HCAM's partly filled chunk reaches further at some steps
        for t in range(K, T):
            assert not _reach(c, T, t, t - K), (t, K)


def test_decision_transformer_context():
    import gymnasium as gym

    obs, act = gym.spaces.MultiDiscrete([3, 5]), gym.spaces.Discrete(3)
    assert DecisionTransformer(obs, act, context=8, memory=False).context_length == 8
    assert DecisionTransformer(obs, act, context=8, memory=True).context_length == math.inf
