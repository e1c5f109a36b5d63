"""algo.precision=bfloat16: the training pass under torch.autocast, the recurrences and the
heads in float32 (memory_modules/precision.py, agents/ppo/learner.py)."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch
from torch import nn

from agents.ppo.learner import PPOConfig
from agents.ppo.policy import Policy
from memory_modules.gru_sequence import gru_sequence
from memory_modules.lstm_sequence import lstm_sequence

T, B, D, H = 12, 6, 40, 48


def _inputs(rnn_cls, seed=0):
    torch.manual_seed(seed)
    rnn = rnn_cls(D, H)
    x = torch.randn(T, B, D, requires_grad=True)
    h0 = torch.randn(B, H, requires_grad=True)
    keep = torch.ones(T, B, 1)
    keep[[0, 5, 9], [1, 0, 3]] = 0
    weights = [rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0]
    return x, h0, keep, weights


def _run(rnn_cls, lowp: bool):
    x, h0, keep, weights = _inputs(rnn_cls)
    w = torch.randn(T, B, H, generator=torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=lowp):
        if rnn_cls is nn.GRU:
            out = gru_sequence(x, h0, keep, *weights)
        else:
            out, _ = lstm_sequence(x, h0, torch.zeros_like(h0), keep, *weights)
    (out * w).sum().backward()
    return out, [x.grad, h0.grad, *(p.grad for p in weights)]


@pytest.mark.parametrize("rnn_cls", [nn.GRU, nn.LSTM], ids=["gru", "lstm"])
def test_sequences_under_autocast_stay_float32_and_close(rnn_cls):
    """Under autocast the output and every gradient are float32, within bfloat16's rounding
    of the float32 result, and not equal to it (the large products did run in bfloat16)."""
    out, grads = _run(rnn_cls, lowp=True)
    ref_out, ref_grads = _run(rnn_cls, lowp=False)
    assert out.dtype == torch.float32
    assert not torch.equal(out, ref_out)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=3e-2)
    for name, g, r in zip(["x", "h0", "w_ih", "w_hh", "b_ih", "b_hh"], grads, ref_grads, strict=True):
        assert g.dtype == torch.float32, name
        scale = r.abs().max()
        torch.testing.assert_close(g, r, rtol=0, atol=3e-2 * float(scale), msg=name)


@pytest.mark.parametrize("predict_next_obs", [False, True])
def test_the_heads_stay_float32_under_autocast(predict_next_obs):
    """The log-probabilities, entropy, value (and the next-observation loss) come out float32
    under autocast, within bfloat16's rounding of the float32 pass."""
    torch.manual_seed(0)
    policy = Policy(gym.spaces.MultiDiscrete([3, 5]), gym.spaces.Discrete(3), core="gru",
                    predict_next_obs=predict_next_obs)
    obs = torch.randint(0, 3, (T, B, 2))
    starts = torch.zeros(T, B, dtype=torch.bool)
    actions = torch.randint(0, 3, (T, B))
    state = policy.initial_state(B, "cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = policy.evaluate_sequence(obs, state, starts, actions)
    ref = policy.evaluate_sequence(obs, state, starts, actions)
    assert len(out) == 3 + predict_next_obs
    for got, want in zip(out, ref, strict=True):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=0, atol=2e-2)


def test_precision_is_checked():
    with pytest.raises(ValueError, match="precision='float16'; accepted: float32, bfloat16"):
        PPOConfig(precision="float16").validate()


def test_training_in_bfloat16_learns_delayed_match(short_delayed_match):
    """A short DelayedMatch run with the training pass in bfloat16 learns the match (chance 0.5)."""
    assert short_delayed_match("algo.precision=bfloat16") > 0.8


@pytest.mark.parametrize("core", ["gru", "lstm"])
@pytest.mark.parametrize("path", ["padded", "packed", "scan"])
def test_every_sequence_path_keeps_the_recurrence_float32(core, path):
    """Under autocast each layout of the LSTM/GRU cores (memory_modules/rnn.py) returns
    float32 outputs and state, within bfloat16's rounding of the float32 run."""
    from memory_modules import make_core

    torch.manual_seed(0)
    rnn = make_core(core, D, hidden_size=H)
    rnn.sequence_path = path
    x = torch.randn(T, B, D)
    starts = torch.zeros(T, B, dtype=torch.bool)
    starts[[0, 4, 7], [0, 2, 5]] = True  # episodes start inside: each path cuts them its way
    state = rnn.initial_state(B, "cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, new = rnn(x, state, starts)
    y_ref, new_ref = rnn(x, state, starts)
    assert y.dtype == torch.float32 and all(v.dtype == torch.float32 for v in new.values())
    torch.testing.assert_close(y, y_ref, rtol=0, atol=3e-2)
    for k in new:
        torch.testing.assert_close(new[k], new_ref[k], rtol=0, atol=3e-2)
