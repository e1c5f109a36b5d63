"""Rollout storage, GAE, sequence chunks, the PPO update, and truncation bootstrapping."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from agents.common.config import compose
from agents.ppo.learner import PPO, PPOConfig
from agents.ppo.policy import Policy
from agents.ppo.return_norm import ReturnNorm
from agents.ppo.rollout import Rollout
from agents.ppo.trainer import Trainer
from envs import registration
from envs.batched import BatchedEnv


def _reference_gae(rewards, values, dones, last_value, gamma, lam):
    T = len(rewards)
    adv = np.zeros_like(rewards)
    last = np.zeros_like(last_value)
    for t in reversed(range(T)):
        next_value = last_value if t == T - 1 else values[t + 1]
        nonterminal = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_value * nonterminal - values[t]
        last = delta + gamma * lam * nonterminal * last
        adv[t] = last
    return adv


def _filled_rollout(T=16, B=5, L=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.zeros(B, 2, dtype=torch.int64)
    state = {"h": torch.zeros(B, 1, 3)}
    ro = Rollout(T, B, L, obs, state, "cpu")
    for t in range(T):
        ro.store_state(t, {"h": torch.full((B, 1, 3), float(t))})
        o = torch.stack([torch.full((B,), t), torch.arange(B)], 1)
        ro.store_step(t, o, torch.rand(B, generator=g) < 0.2, torch.zeros(B, dtype=torch.int64),
                      torch.zeros(B), torch.randint(0, 3, (B,), generator=g),
                      torch.randn(B, generator=g), torch.randn(B, generator=g))
        ro.store_outcome(t, torch.randn(B, generator=g), torch.rand(B, generator=g) < 0.2)
    return ro


def test_gae_matches_reference():
    ro = _filled_rollout()
    last = torch.randn(5)
    ro.compute_gae(last, 0.97, 0.9)
    ref = _reference_gae(ro.rewards.numpy(), ro.values.numpy(), ro.dones.float().numpy(),
                         last.numpy(), 0.97, 0.9)
    np.testing.assert_allclose(ro.advantages.numpy(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ro.returns, ro.advantages + ro.values)


def test_normalised_returns_keep_the_advantages_and_scale_the_targets():
    """algo.normalize_returns: values stored on the head's scale give the advantages of
    the task's scale; the targets and stored values come out under statistics that now
    include this rollout's returns."""
    raw = _filled_rollout()
    raw.rewards.mul_(0.02)  # a POPGym-sized reward: +-1/N a step
    raw.values.mul_(0.05)
    last = torch.randn(5) * 0.05
    norm = ReturnNorm()
    norm.stats.mean.fill_(0.1)
    norm.stats.var.fill_(0.01)
    norm.stats.count.fill_(100.0)
    scaled = _filled_rollout()
    scaled.rewards.copy_(raw.rewards)
    scaled.values.copy_(norm.normalize(raw.values))  # what the head said
    norm.returns(scaled, norm.normalize(last), 0.97, 0.9)
    raw.compute_gae(last, 0.97, 0.9)
    torch.testing.assert_close(scaled.advantages, raw.advantages)
    assert norm.stats.count == 100 + raw.returns.numel()
    torch.testing.assert_close(norm.denormalize(scaled.returns), raw.returns)
    torch.testing.assert_close(norm.denormalize(scaled.values), raw.values)
    # a fresh one learns this rollout's moments: the targets have mean 0 and std 1
    fresh = ReturnNorm()
    again = _filled_rollout()
    again.rewards.copy_(raw.rewards)
    again.values.copy_(raw.values)
    fresh.returns(again, last, 0.97, 0.9)
    assert abs(float(again.returns.mean())) < 1e-4
    var = float(raw.returns.var(unbiased=False))
    assert float(fresh.stats.var) == pytest.approx(var, rel=1e-4)
    # std 1 up to the eps under the root
    assert float(again.returns.std(unbiased=False)) == pytest.approx((var / (var + 1e-5)) ** 0.5, rel=1e-4)


def test_sequences_are_chunks_with_their_stored_state():
    T, B, L = 16, 5, 4
    ro = _filled_rollout(T, B, L)
    data = ro.sequences()
    assert data["obs"].shape == (L, (T // L) * B, 2)
    for c in range(T // L):
        for b in range(B):
            seq = c * B + b
            assert torch.equal(data["obs"][:, seq], ro.obs[c * L : (c + 1) * L, b])
            assert torch.equal(data["actions"][:, seq], ro.actions[c * L : (c + 1) * L, b])
            # the state stored before step c * L (our fake states are filled with t)
            assert torch.all(data["state"]["h"][seq] == c * L)


def test_rollout_rejects_seq_len_not_dividing():
    with pytest.raises(ValueError, match="multiple of seq_len"):
        Rollout(10, 2, 4, torch.zeros(2, 1), {"h": torch.zeros(2, 1)}, "cpu")


def _acted_rollout(policy, T, B, L):
    """A rollout of ``policy`` acting on random observations (reward: action == obs[0])."""
    obs = torch.randint(0, 3, (B, 2))
    ro = Rollout(T, B, L, obs, policy.initial_state(B, "cpu"), "cpu")
    state = policy.initial_state(B, "cpu")
    starts = torch.ones(B, dtype=torch.bool)
    with torch.no_grad():
        for t in range(T):
            ro.store_state(t, state)
            o = torch.randint(0, 3, (B, 2))
            a, lp, v, state = policy.act(o, state, starts)
            ro.store_step(t, o, starts, torch.zeros_like(a), torch.zeros(B), a, lp, v)
            done = torch.rand(B) < 0.1
            ro.store_outcome(t, (a == o[:, 0]).float(), done)
            starts = done
    ro.compute_gae(torch.zeros(B), 0.99, 0.95)
    return ro


@pytest.mark.parametrize("core, precision", [
    ("gru", "float32"),
    # algo.precision=bfloat16 (tests/test_precision.py): every core trains under autocast
    *((core, "bfloat16") for core in ("gru", "lstm", "gtrxl", "hcam", "rmc", "mlp")),
])
def test_ppo_update_returns_finite_stats_and_moves_weights(core, precision):
    torch.manual_seed(0)
    T, B, L = 16, 8, 8
    policy = Policy(gym.spaces.MultiDiscrete([3, 5]), gym.spaces.Discrete(3), core=core)
    ppo = PPO(policy, PPOConfig(num_envs=B, num_steps=T, seq_len=L, num_minibatches=2,
                                update_epochs=2, precision=precision))
    ro = _acted_rollout(policy, T, B, L)
    before = [p.detach().clone() for p in policy.parameters()]
    stats = ppo.update(ro)
    assert set(stats) >= {"pg_loss", "v_loss", "entropy", "approx_kl", "clipfrac", "grad_norm"}
    assert all(torch.isfinite(v) for v in stats.values())
    assert all(p.dtype == torch.float32 for p in policy.parameters())
    assert any(not torch.equal(b, p) for b, p in zip(before, policy.parameters(), strict=True))


def test_bfloat16_precision_reaches_the_loss():
    """precision=bfloat16 puts PPO.loss under autocast: the loss is the float32 one up to
    bfloat16's rounding, not exactly it (tests/test_precision.py)."""
    from agents.ppo.learner import _select

    torch.manual_seed(0)
    policy = Policy(gym.spaces.MultiDiscrete([3, 5]), gym.spaces.Discrete(3), core="gru")
    ro = _acted_rollout(policy, 16, 8, 8)
    data = ro.sequences()
    mb = _select(data, torch.arange(data["starts"].shape[1]))
    losses = {p: PPO(policy, PPOConfig(num_envs=8, num_steps=16, seq_len=8, precision=p)).loss(mb)[0]
              for p in ("float32", "bfloat16")}
    assert losses["bfloat16"].dtype == torch.float32
    assert not torch.equal(losses["bfloat16"], losses["float32"])
    torch.testing.assert_close(losses["bfloat16"], losses["float32"], rtol=0, atol=1e-2)


@pytest.mark.parametrize("target, direction", [(0.2, -1), (5.0, +1), (None, 0)])
def test_the_entropy_bonus_moves_toward_its_target(target, direction):
    """A fresh policy's entropy is about ln 3 = 1.1: a target below it shrinks the bonus, one
    above it (here out of reach) grows it; without a target the bonus stays put."""
    torch.manual_seed(0)
    T, B, L = 16, 8, 8
    policy = Policy(gym.spaces.MultiDiscrete([3, 5]), gym.spaces.Discrete(3), core="gru")
    ppo = PPO(policy, PPOConfig(num_envs=B, num_steps=T, seq_len=L, num_minibatches=2,
                                update_epochs=2, ent_coef=0.01, target_entropy=target,
                                ent_coef_lr=0.2))
    stats = ppo.update(_acted_rollout(policy, T, B, L))
    coef = float(ppo.ent_coef)
    if direction == 0:
        assert coef == pytest.approx(0.01, rel=1e-6)
    else:
        gap = (target - float(stats["entropy"])) * direction
        assert gap > 0.5
        # four minibatches, each a step of 0.2 * gap in log space
        assert (coef - 0.01) * direction > 0
        assert abs(np.log(coef / 0.01)) == pytest.approx(4 * 0.2 * gap, rel=0.2)


def test_an_entropy_target_needs_a_bonus_to_start_from():
    policy = Policy(gym.spaces.MultiDiscrete([3]), gym.spaces.Discrete(2), core="mlp")
    with pytest.raises(ValueError, match="target_entropy=0.5 needs ent_coef > 0"):
        PPO(policy, PPOConfig(num_envs=4, num_steps=8, seq_len=8, num_minibatches=1,
                              ent_coef=0.0, target_entropy=0.5))


def test_lr_annealing():
    policy = Policy(gym.spaces.MultiDiscrete([3]), gym.spaces.Discrete(2), core="mlp")
    ppo = PPO(policy, PPOConfig(num_envs=4, num_steps=8, seq_len=8, num_minibatches=1,
                                learning_rate=1e-3))
    assert ppo.set_progress(0.0) == pytest.approx(1e-3)
    assert ppo.set_progress(0.75) == pytest.approx(2.5e-4)
    assert ppo.optimizer.param_groups[0]["lr"] == pytest.approx(2.5e-4)


def test_config_validation():
    with pytest.raises(ValueError, match="num_minibatches"):
        PPOConfig(num_envs=6, num_steps=8, seq_len=8, num_minibatches=4).validate()


# ------------------------------------------------------------- truncation bootstrapping
class Treadmill(BatchedEnv):
    """Reward 1 every step, forever; a time limit cuts episodes after ``limit`` steps.

    The true value of every state is 1 / (1 - gamma): the limit is not a terminal state.
    """

    env_id = "test/Treadmill-v0"
    can_truncate = True

    def __init__(self, num_envs=1, device="cpu", seed=0, *, limit: int = 3, **kwargs):
        self.limit = limit
        super().__init__(num_envs, device, seed, **kwargs)

    def _spaces(self):
        return gym.spaces.MultiDiscrete([self.limit + 1]), gym.spaces.Discrete(2)

    def _new_episode(self, mask, key):
        pass

    def _observe(self):
        return self.t[:, None].clone()

    def _transition(self, actions):
        truncated = self.t == self.limit - 1
        ones = torch.ones(self.num_envs, device=self.device)
        return ones, torch.zeros_like(truncated), truncated, truncated


@pytest.fixture
def treadmill(monkeypatch):
    monkeypatch.setitem(registration.TASKS, Treadmill.env_id, f"{__name__}:Treadmill")


@pytest.mark.parametrize("normalize_returns", [False, True])
def test_truncated_episodes_bootstrap_from_the_final_observation(treadmill, tmp_path, normalize_returns):
    gamma = 0.5
    cfg = compose([
        f"runs_root={tmp_path}", "curriculum=null", "algo.num_envs=16", "algo.num_steps=12", "algo.seq_len=12",
        "algo.num_minibatches=1", "algo.update_epochs=4", f"algo.gamma={gamma}",
        "algo.learning_rate=1e-2", "algo.anneal_lr=false", "total_steps=7680",
        "progress=false", "eval.episodes=0", "eval.video_episodes=0", "checkpoint_every=0",
        "core=mlp", f"algo.normalize_returns={normalize_returns}",
    ])
    cfg.env = OmegaConf.create({"id": Treadmill.env_id, "limit": 3})
    (tmp_path / "run").mkdir()
    trainer = Trainer(cfg, tmp_path / "run", None)
    trainer.train()
    policy = trainer.policy
    obs = torch.arange(3)[:, None]
    with torch.no_grad():
        v = trainer.ppo.task_value(
            policy.value(obs, policy.initial_state(3, "cpu"), torch.ones(3, dtype=torch.bool)))
    # With bootstrapping every state is worth 1 / (1 - gamma) = 2; without it the last
    # step of an episode would be worth 1.
    torch.testing.assert_close(v, torch.full((3,), 2.0), atol=0.25, rtol=0)
