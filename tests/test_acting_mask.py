"""Steps whose action the task ignores (``env.actions_matter()``), and PPO leaving them out."""

from __future__ import annotations

import pytest
import torch
from test_env_contract import small

import envs
from agents.ppo.learner import PPO, PPOConfig

IGNORING = ["recall/HiddenObjects-v0", "recall/Ballet-v0", "recall/DelayedMatch-v0",
            "recall/AssociativeRecall-v0", "recall/NBack-v0", "recall/RepeatPrevious-v0",
            "recall/Autoencode-v0"]


@pytest.mark.parametrize("env_id", IGNORING)
def test_where_actions_do_not_matter_every_action_leads_to_the_same_step(env_id):
    knobs = small(env_id)
    n_actions = envs.make_vec(env_id, 1, **knobs).single_action_space.n
    env = envs.make_vec(env_id, 64, seed=2, **knobs)
    env.reset()
    gen = torch.Generator().manual_seed(0)
    ignored = mattered = 0
    for _ in range(100):
        matter = env.actions_matter()
        assert matter.dtype == torch.bool and matter.shape == (64,)
        saved = env.state_dict()
        outcomes = []
        for a in range(n_actions):
            env.load_state_dict(saved)
            obs, rew, term, trunc, _ = env.step(torch.full((64,), a))
            outcomes.append((obs.clone(), rew.clone(), term.clone(), trunc.clone()))
        ref = outcomes[0]
        for out in outcomes[1:]:
            for x, y in zip(ref, out, strict=True):
                same = (x == y).reshape(64, -1).all(1)
                assert same[~matter].all(), f"an ignored action changed a step of {env_id}"
        ignored += int((~matter).sum())
        mattered += int(matter.sum())
        env.load_state_dict(saved)
        env.step(torch.randint(n_actions, (64,), generator=gen))
    assert ignored > 0 and mattered > 0


def test_tasks_where_every_action_counts_say_none():
    env = envs.make_vec("recall/PassiveTMaze-v0", 4, length=5)
    env.reset()
    assert env.actions_matter() is None


class _Logits(torch.nn.Module):
    """A stand-in policy head whose log-probs are free parameters, one per step."""

    def __init__(self, L, N, A):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.zeros(L, N, A))

    def evaluate_sequence(self, obs, state, starts, actions, prev_a, prev_r):
        dist = torch.distributions.Categorical(logits=self.logits)
        return dist.log_prob(actions), dist.entropy(), torch.zeros(actions.shape)


def _minibatch(L=6, N=4, A=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    acting = torch.rand(L, N, generator=g) < 0.5
    acting[0, 0] = True
    return dict(obs=None, state=None, starts=torch.zeros(L, N, dtype=torch.bool),
                actions=torch.randint(A, (L, N), generator=g), acting=acting,
                prev_actions=torch.zeros(L, N, dtype=torch.int64), prev_rewards=torch.zeros(L, N),
                logprobs=torch.full((L, N), -torch.log(torch.tensor(3.0))),
                advantages=torch.randn(L, N, generator=g), returns=torch.zeros(L, N),
                values=torch.zeros(L, N))


@pytest.mark.parametrize("mask", [True, False])
def test_masked_steps_get_no_policy_gradient(mask):
    mb = _minibatch()
    policy = _Logits(6, 4, 3)
    ppo = PPO(policy, PPOConfig(mask_ignored_actions=mask, ent_coef=0.01))
    loss, _ = ppo.loss(mb)
    loss.backward()
    grad = policy.logits.grad.abs().sum(-1)
    assert (grad[mb["acting"]] > 0).all()
    if mask:
        assert (grad[~mb["acting"]] == 0).all()
    else:
        assert (grad[~mb["acting"]] > 0).all()


def test_training_with_the_mask_learns_delayed_match(short_delayed_match):
    """DelayedMatch ignores every action before the choice; with those steps left out of the
    policy loss, a short run still learns the match (chance 0.5)."""
    assert short_delayed_match("algo.mask_ignored_actions=true") > 0.8
