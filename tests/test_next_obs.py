"""Next-observation prediction (agents.ppo.next_obs, algo.next_obs_coef)."""

from __future__ import annotations

import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.common.checkpoint import load_checkpoint
from agents.common.config import compose
from agents.evaluation.evaluate import evaluate_checkpoint
from agents.ppo import trainer as train_mod
from agents.ppo.learner import PPO, PPOConfig
from agents.ppo.next_obs import NextObsHead
from agents.ppo.policy import Policy


def test_a_memory_core_learns_to_predict_a_sequence_it_must_remember():
    """obs[t + 1] repeats obs[t - 2]: the head on a GRU learns it; chance is ln(5) nats."""
    torch.manual_seed(0)
    space = gym.spaces.MultiDiscrete(np.array([5, 3]))
    policy = Policy(space, gym.spaces.Discrete(2), core="gru", predict_next_obs=True)
    opt = torch.optim.Adam(policy.parameters(), lr=1e-2)
    T, B = 12, 32
    starts = torch.zeros(T, B, dtype=torch.bool)
    starts[0] = True
    actions = torch.zeros(T, B, dtype=torch.int64)
    for _ in range(200):
        head = torch.randint(5, (3, B))
        sym = torch.cat([head, head.repeat(T // 3 - 1, 1)])  # period 3
        obs = torch.stack([sym, torch.ones_like(sym)], -1)
        loss = policy.evaluate_sequence(obs, policy.initial_state(B, "cpu"), starts, actions)[3]
        opt.zero_grad()
        loss.backward()
        opt.step()
    # Without memory, position 0 costs ln 5 a step (ln 5 / 2 per symbol); with it, only
    # the 2 steps before the first repeat do (2/11 of that). Half of ln 5 / 2 needs memory.
    assert float(loss) < 0.5 * math.log(5) / 2, float(loss)


def test_steps_whose_successor_starts_an_episode_are_left_out():
    head = NextObsHead(gym.spaces.Discrete(4, start=1), in_size=3)
    y = torch.randn(5, 2, 3)
    obs = torch.randint(1, 5, (5, 2))
    every_step_starts = torch.ones(5, 2, dtype=torch.bool)
    assert float(head.loss(y, obs, every_step_starts)) == 0.0
    starts = torch.zeros(5, 2, dtype=torch.bool)
    full = head.loss(y, obs, starts)
    logp = torch.log_softmax(head(y[:-1]), -1).squeeze(-2)  # [4, 2, 4]
    expected = -logp.gather(-1, (obs[1:] - 1).unsqueeze(-1)).mean()
    assert torch.allclose(full, expected)


def test_ids_beyond_a_positions_range_get_no_probability():
    head = NextObsHead(gym.spaces.MultiDiscrete(np.array([2, 7])), in_size=4)
    p = torch.softmax(head(torch.randn(3, 4)), -1)  # [3, 2, 7]
    assert torch.all(p[:, 0, 2:] == 0) and torch.allclose(p.sum(-1), torch.ones(3, 2))


def test_an_image_observation_is_refused_by_name():
    with pytest.raises(ValueError, match="Discrete or flat MultiDiscrete.*Box"):
        NextObsHead(gym.spaces.Box(0, 255, (8, 8, 3), np.uint8), in_size=4)


def test_the_coefficient_needs_the_head_and_a_fraction_in_range():
    policy = Policy(gym.spaces.Discrete(3), gym.spaces.Discrete(2))
    with pytest.raises(ValueError, match="next_obs_coef=0.5 needs a policy built with predict_next_obs"):
        PPO(policy, PPOConfig(next_obs_coef=0.5))
    with_head = Policy(gym.spaces.Discrete(3), gym.spaces.Discrete(2), predict_next_obs=True)
    with pytest.raises(ValueError, match=r"next_obs_fraction=0.0 must be in \(0, 1\]"):
        PPO(with_head, PPOConfig(next_obs_coef=0.5, next_obs_fraction=0.0))


def test_training_with_it_logs_the_loss_and_the_checkpoint_evaluates(tmp_path):
    cfg = compose([
        f"runs_root={tmp_path}", "curriculum=null", "env.delay=2", "algo.num_envs=16",
        "algo.num_steps=8", "algo.seq_len=8", "algo.num_minibatches=1", "total_steps=512",
        "algo.next_obs_coef=0.5", "algo.next_obs_fraction=0.5", "progress=false",
        "eval.episodes=32", "eval.num_envs=32", "eval.video_episodes=0", "threads=1",
    ])
    run_dir = Path(train_mod.run(cfg)["run_dir"])
    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    losses = [e.value for e in acc.Scalars("losses/next_obs_loss")]
    assert len(losses) == 4 and all(0 < v < 10 for v in losses), losses
    ckpt = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    assert ckpt["policy"]["predict_next_obs"] is True
    result = evaluate_checkpoint(str(run_dir), episodes=32, num_envs=32)
    assert result["episodes"] == 32
