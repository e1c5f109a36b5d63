"""The asymmetric critic (policy.oracle_critic): the value reads the env's oracle action, the actor never."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from agents.common.checkpoint import load_checkpoint
from agents.common.config import compose
from agents.evaluation.evaluate import evaluate_checkpoint
from agents.ppo import trainer as train_mod
from agents.ppo.policy import Policy


def _policy(**kw):
    torch.manual_seed(0)
    return Policy(gym.spaces.MultiDiscrete(np.array([3, 5])), gym.spaces.Discrete(4), **kw)


def test_the_hint_moves_the_value_and_never_the_action():
    policy = _policy(oracle_critic=True)
    obs = torch.randint(0, 3, (6, 2))
    state = policy.initial_state(6, "cpu")
    starts = torch.ones(6, dtype=torch.bool)
    values, logps = [], []
    for hint in (None, torch.zeros(6, dtype=torch.int64), torch.full((6,), 3)):
        _, logp, value, _ = policy.act(obs, state, starts, deterministic=True, hint=hint)
        y, _ = policy._step(obs, state, starts, None, None)
        logps.append(policy.heads(y, hint)[0])
        values.append(value)
    assert all(torch.equal(logps[0], lp) for lp in logps[1:]), "the actor must not read the hint"
    assert not torch.allclose(values[1], values[2]) and not torch.allclose(values[0], values[1])


def test_a_sequence_with_hints_gives_what_acting_with_them_gave():
    policy = _policy(oracle_critic=True)
    T, B = 5, 3
    obs = torch.randint(0, 3, (T, B, 2))
    hints = torch.randint(0, 4, (T, B))
    starts = torch.zeros(T, B, dtype=torch.bool)
    starts[0] = True
    state = policy.initial_state(B, "cpu")
    acted = []
    with torch.no_grad():
        s = state
        for t in range(T):
            action, _, value, s = policy.act(obs[t], s, starts[t], hint=hints[t])
            acted.append(value)
        _, _, seq_value = policy.evaluate_sequence(obs, state, starts, torch.zeros(T, B), None, None, hints)
    assert torch.allclose(torch.stack(acted), seq_value, atol=1e-5)


def test_a_policy_without_it_keeps_its_critic_shape():
    assert _policy().critic.in_features == 128
    assert _policy(oracle_critic=True).critic[0].in_features == 128 + 5  # core output + hint


def test_training_with_it_learns_and_the_checkpoint_evaluates_without_hints(tmp_path):
    cfg = compose([
        f"runs_root={tmp_path}", "curriculum=null", "env.delay=2", "env.num_symbols=4",
        "env.num_choices=2", "algo.num_envs=64", "algo.num_steps=16", "algo.seq_len=16",
        "total_steps=30_000", "policy.oracle_critic=true", "progress=false",
        "eval.episodes=256", "eval.num_envs=256", "eval.video_episodes=0", "threads=1",
    ])
    summary = train_mod.run(cfg)
    ckpt = load_checkpoint(Path(summary["run_dir"]))
    assert ckpt["policy"]["oracle_critic"] is True
    # The actor learns from the critic's advantages (chance 0.5); evaluation gives no hint.
    assert summary["eval"]["success_rate"] >= 0.8, summary["eval"]
    result = evaluate_checkpoint(summary["run_dir"], episodes=64, num_envs=64)
    assert result["episodes"] == 64
