"""``policy.symbols=onehot``: symbols one-hot, normalised by ``RunningNorm``.

The statistics equal the pooled mean and variance of every batch trained on, move only
in a training forward with gradients on (never while acting or evaluating), travel in
checkpoints, and are the same on every rank of a distributed run (tests/test_distributed.py).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
from agents.common.config import compose, make_policy, policy_spec
from agents.common.encoders import (
    ConvTrunk,
    FlatTrunk,
    GridEncoder,
    RunningNorm,
    SymbolEncoder,
    make_encoder,
)
from agents.common.multi_hot import multi_hot_mlp, one_hot


def test_statistics_are_the_pooled_moments_of_every_training_batch():
    torch.manual_seed(0)
    norm = RunningNorm(3).train()
    batches = [torch.randn(n, 3) * torch.tensor([1.0, 3.0, 0.1]) + torch.tensor([2.0, -1.0, 0.5])
               for n in (7, 50, 1)]
    norm.eval()  # before any training batch: the identity, clipped to +-5
    torch.testing.assert_close(norm(torch.tensor([[9.0, -0.5, 2.0]])), torch.tensor([[5.0, -0.5, 2.0]]))
    norm.train()
    for b in batches:
        norm(b)
    pooled = torch.cat(batches)
    torch.testing.assert_close(norm.mean, pooled.mean(0))
    torch.testing.assert_close(norm.var, pooled.var(0, unbiased=False), rtol=1e-4, atol=1e-6)
    assert norm.count.item() == 58
    out = norm(pooled)  # normalised: zero mean, unit variance per feature (one more update)
    torch.testing.assert_close(out.mean(0), torch.zeros(3), atol=0.05, rtol=0)
    torch.testing.assert_close(out.std(0, unbiased=False), torch.ones(3), atol=0.05, rtol=0)


def test_acting_and_evaluation_read_the_statistics_and_never_move_them():
    norm = RunningNorm(2).train()
    norm(torch.tensor([[0.0, 1.0], [2.0, 3.0]]))
    before = {k: v.clone() for k, v in norm.state_dict().items()}
    with torch.no_grad():  # acting in the rollout
        acted = norm(torch.tensor([[100.0, -100.0]]))
    norm.eval()  # evaluation
    evaluated = norm(torch.tensor([[100.0, -100.0]]))
    for k, v in norm.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert torch.equal(acted, evaluated) and torch.equal(acted, torch.tensor([[5.0, -5.0]]))


def test_a_rare_symbol_stands_out_and_the_policy_keeps_its_statistics():
    env = envs.make_vec("MiniGrid-MemoryS7-v0", 4)
    spec = policy_spec(compose(["env=minigrid_memory", "policy.symbols=onehot"]), env)
    policy = make_policy(spec)
    enc = policy.encoder
    assert isinstance(enc, GridEncoder) and not hasattr(enc, "embed")  # no embedding table
    obs, _ = env.reset()
    view = obs.shape[1:]
    ids = enc.num_ids
    assert enc.norm.mean.shape == (int(np.prod(view[:2])) * ids,)
    batch = obs.repeat(64, 1, 1, 1)  # 256 views
    rare = batch.clone()
    rare[0].view(-1, view[-1])[0, 0] = 6  # one copy sees a ball (object id 6) in a corner
    policy.train()
    enc(rare)  # a training forward: the statistics learn that the ball is rare there
    hot = torch.nn.functional.one_hot(rare.long() + enc.offsets, ids).sum(-2).flatten(1).float()
    z = (hot - enc.norm.mean) * torch.rsqrt(enc.norm.var + enc.norm.eps)  # as read when acting
    ball = (0 * ids) + 6  # the first cell's object channel starts at offset 0
    assert z[0, ball] > 7 and abs(z[1, ball]) < 0.2  # (1 - p) / sqrt(p (1 - p)) = 16 for p = 1/256
    state = policy.state_dict()
    assert torch.equal(state["encoder.norm.mean"], enc.norm.mean) and state["encoder.norm.count"] == 256
    again = make_policy(spec)
    again.load_state_dict(state)  # a checkpoint restores them
    assert torch.equal(again.encoder.norm.var, enc.norm.var)


def test_a_short_minigrid_run_trains_with_it(tmp_path):
    from agents.ppo.trainer import run

    overrides = ["experiment=gru_minigrid_memory", "policy.symbols=onehot", "algo.num_envs=16",
                 "total_steps=4096", f"runs_root={tmp_path}", "progress=false", "eval.episodes=8",
                 "eval.num_envs=8", "eval.video_episodes=0"]
    summary = run(compose(overrides), overrides)
    ckpt = torch.load(next((tmp_path).rglob("latest.pt")), weights_only=False)
    epochs = ckpt["config"]["algo"]["update_epochs"]  # each epoch's minibatches count each step once
    assert ckpt["model"]["encoder.norm.count"].item() == epochs * summary["global_step"]
    assert ckpt["config"]["policy"]["symbols"] == "onehot"


@pytest.mark.parametrize("bad", ["onehots", "mlp"])
def test_an_unknown_symbol_input_names_the_accepted_ones(bad):
    with pytest.raises(ValueError, match=f"symbols='{bad}' is not one of embed, onehot"):
        make_encoder(gym.spaces.Discrete(3), symbols=bad)
    with pytest.raises(ValueError, match=f"symbols='{bad}' is not one of embed, onehot"):
        GridEncoder(np.full((3, 3, 2), 4), 0, 8, 8, 16, "mlp", 1, bad)


def test_every_symbol_encoder_reads_the_normalised_one_hot():
    """Symbols (NBack, DelayedMatch), a Discrete, a grid through the CNN, and Ballet's
    view-plus-token: each position's value is one input column, none is looked up."""
    sym = make_encoder(gym.spaces.MultiDiscrete([3, 5], start=[1, 0]), hidden_size=8, symbols="onehot")
    assert isinstance(sym, SymbolEncoder) and not hasattr(sym, "embed") and sym.norm.mean.shape == (8,)
    sym.eval()  # identity before any update: the MLP reads the raw multi-hot
    x = torch.tensor([[1, 0], [3, 4]])
    hot = torch.tensor([[1.0, 0, 0, 1, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0, 0, 1]])
    torch.testing.assert_close(sym(x), sym.mlp(hot))
    disc = make_encoder(gym.spaces.Discrete(4, start=2), symbols="onehot").eval()
    assert disc.output_size == 4
    torch.testing.assert_close(disc(torch.tensor([2, 5])), torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 1]]),
                               atol=1e-4, rtol=0)
    grid = make_encoder(gym.spaces.MultiDiscrete(np.full((5, 5, 2), [3, 2])), grid_trunk="cnn",
                        cnn_channels=4, hidden_size=8, symbols="onehot")
    assert isinstance(grid.trunk, ConvTrunk) and grid(torch.zeros(2, 5, 5, 2, dtype=torch.long)).shape == (2, 8)
    env = envs.make_vec("recall/Ballet-v0", 2)
    spec = policy_spec(compose(["env=ballet", "policy.symbols=onehot"]), env)
    policy = make_policy(spec)
    norms = [m for m in policy.encoder.modules() if isinstance(m, RunningNorm)]
    assert len(norms) == 2 and not any(isinstance(m, torch.nn.Embedding) for m in policy.encoder.modules())
    obs, _ = env.reset()
    assert policy.encoder(obs).shape[0] == 2


def test_the_minigrid_recipes_take_the_input_and_update_they_were_measured_with():
    # gru_minigrid_memory_s11 builds on gru_minigrid_memory: the S7 recipe's one-hot input
    # must not leak into S11's, whose acceptance ran with the embedded cells and the CNN.
    # Nor its update: 32-step rollouts, 4 epochs x 4 minibatches.
    s7, s11 = compose(["experiment=gru_minigrid_memory"]), compose(["experiment=gru_minigrid_memory_s11"])
    assert (s7.policy.symbols, s7.policy.grid_trunk) == ("onehot", "mlp")
    assert (s11.policy.symbols, s11.policy.grid_trunk) == ("embed", "cnn")
    update = ("num_steps", "seq_len", "update_epochs", "num_minibatches")
    assert tuple(s7.algo[k] for k in update) == (32, 32, 4, 4)
    assert tuple(s11.algo[k] for k in update) == (128, 128, 2, 16)


def _trained_norm(width: int, seed: int) -> RunningNorm:
    """Statistics of a few skewed multi-hot batches: some features rare enough to clip."""
    g = torch.Generator().manual_seed(seed)
    norm = RunningNorm(width).train()
    for _ in range(3):
        norm(one_hot(torch.multinomial(torch.linspace(0.01, 1, width).expand(64, width), 5,
                                       generator=g), width))
    return norm


def _grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.grad.clone() for k, p in module.named_parameters()}


@pytest.mark.parametrize("layers", [0, 1, 2])
def test_the_multi_hot_product_is_the_normalised_one_hot_through_the_mlp(layers):
    """The gathered first layer (``multi_hot_mlp``) against the one-hot built and
    normalised: same outputs, same gradients, same statistics after a training step,
    clipped features included."""
    from copy import deepcopy

    torch.manual_seed(layers)
    width = 40
    norm = _trained_norm(width, layers)
    mods, size = [], width
    for _ in range(layers):
        mods += [torch.nn.Linear(size, 16), torch.nn.ReLU()]
        size = 16
    mlp = torch.nn.Sequential(*mods)
    assert (norm.levels()[1] == norm.clip).any()  # a rare feature's 1 is clipped
    index = torch.stack([torch.randperm(width)[:6] for _ in range(32)])  # distinct per row
    ref_norm, ref_mlp = deepcopy(norm), deepcopy(mlp)
    out = multi_hot_mlp(index, norm, mlp)
    ref = ref_mlp(ref_norm(one_hot(index, width)))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for k, v in norm.state_dict().items():  # the training forward moved both alike
        torch.testing.assert_close(v, ref_norm.state_dict()[k], rtol=1e-6, atol=0)
    assert norm.count.item() == 3 * 64 + 32
    if layers:
        weights = torch.randn_like(out)
        (out * weights).sum().backward()
        (ref * weights).sum().backward()
        for k, g in _grads(mlp).items():
            torch.testing.assert_close(g, _grads(ref_mlp)[k], rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # acting: the statistics stay
        before = norm.mean.clone()
        multi_hot_mlp(index, norm, mlp)
    assert torch.equal(norm.mean, before)


def test_the_minigrid_view_through_the_mlp_trunk_is_the_normalised_one_hot():
    """GridEncoder's (cell, symbol) features, gathered, equal the one-hot of the view built
    and normalised (the recipe's ``symbols=onehot`` with ``grid_trunk=mlp``)."""
    from copy import deepcopy

    env = envs.make_vec("MiniGrid-MemoryS7-v0", 8, seed=3)
    enc = make_policy(policy_spec(compose(["experiment=gru_minigrid_memory"]), env)).encoder
    assert isinstance(enc, GridEncoder) and isinstance(enc.trunk, FlatTrunk)
    obs, _ = env.reset()
    views = [obs]
    for _ in range(5):
        obs = env.step(torch.randint(0, 3, (8,)))[0]
        views.append(obs)
    batch = torch.cat(views)
    enc.train()
    enc(batch[:16])  # statistics that are not the identity
    ref = deepcopy(enc)
    out = enc(batch)
    hot = one_hot(batch.long() + ref.offsets, ref.num_ids).flatten(1)
    expected = ref.trunk(ref.norm(hot))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(enc.norm.var, ref.norm.var, rtol=1e-6, atol=0)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    (expected * weights).sum().backward()
    for k, g in _grads(enc).items():  # sums of ~50 terms in another order: float32 rounding
        torch.testing.assert_close(g, _grads(ref)[k], rtol=1e-5, atol=1e-6 * g.abs().max().item())
