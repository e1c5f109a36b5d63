"""agents.common.adam.Adam takes torch.optim.Adam's steps, shares its state layout, and keeps
torch._dynamo out of a training run's start-up."""

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from agents.common.adam import Adam

ROOT = Path(__file__).resolve().parents[1]


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.ModuleDict(dict(gru=nn.GRU(5, 8, batch_first=True), head=nn.Linear(8, 3), spare=nn.Linear(8, 2)))


def _backward(model: nn.Module, step: int) -> None:
    g = torch.Generator().manual_seed(100 + step)
    x = torch.randn(4, 6, 5, generator=g)
    out, _ = model["gru"](x)
    loss = model["head"](out).pow(2).mean()
    if step % 2:  # the spare head gets a gradient on odd steps only: its step count lags
        loss = loss + model["spare"](out).abs().mean()
    loss.backward()


def _train(model: nn.Module, opt, steps: range, lrs: dict[int, float] | None = None) -> None:
    for step in steps:
        for group in opt.param_groups:
            group["lr"] = (lrs or {}).get(step, group["lr"])
        opt.zero_grad(set_to_none=True)
        _backward(model, step)
        opt.step()


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_steps_equal_torch_adam_and_adamw_bit_for_bit(foreach, weight_decay):
    ours_model, torch_model = _model(), _model()
    ours = Adam(ours_model.parameters(), lr=3e-3, eps=1e-5, weight_decay=weight_decay)
    if weight_decay:
        ref = torch.optim.AdamW(torch_model.parameters(), lr=3e-3, eps=1e-5, weight_decay=weight_decay,
                                foreach=foreach)
    else:
        ref = torch.optim.Adam(torch_model.parameters(), lr=3e-3, eps=1e-5, foreach=foreach)
    lrs = {3: 1e-3, 5: 0.0, 6: 2e-3}  # an annealed rate, a zero one included
    _train(ours_model, ours, range(8), lrs)
    _train(torch_model, ref, range(8), lrs)
    assert not _same(_model(), ours_model), "the steps changed nothing"
    assert _same(ours_model, torch_model)
    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    assert ours_sd["state"].keys() == ref_sd["state"].keys()
    for i, s in ref_sd["state"].items():
        assert ours_sd["state"][i]["step"].dtype == s["step"].dtype
        assert all(torch.equal(ours_sd["state"][i][k], s[k]) for k in s), i
    assert {int(s["step"]) for s in ours_sd["state"].values()} == {8, 4}  # the spare head lags
    # torch's layout, key for key (foreach is the flag torch.optim was built with)
    assert {k: v for k, v in ours_sd["param_groups"][0].items() if k != "foreach"} == \
        {k: v for k, v in ref_sd["param_groups"][0].items() if k != "foreach"}


def test_state_dicts_load_across_both_ways():
    a, b, c = _model(), _model(), _model()
    ours = Adam(a.parameters(), lr=1e-3)
    _train(a, ours, range(3))
    # ours -> torch, then both go on
    b.load_state_dict(a.state_dict())
    ref = torch.optim.Adam(b.parameters(), lr=5.0)
    ref.load_state_dict(copy.deepcopy(ours.state_dict()))  # as from a file: torch's load aliases
    assert ref.param_groups[0]["lr"] == 1e-3  # the saved rate wins, as in torch
    _train(a, ours, range(3, 6))
    _train(b, ref, range(3, 6))
    assert _same(a, b)
    # torch -> ours
    c.load_state_dict(b.state_dict())
    again = Adam(c.parameters(), lr=5.0)
    again.load_state_dict(ref.state_dict())
    _train(b, ref, range(6, 8))
    _train(c, again, range(6, 8))
    assert _same(b, c)


def test_mismatched_state_is_refused_with_the_sizes():
    model = _model()
    opt = Adam(model.parameters())
    _train(model, opt, range(1))
    other = nn.Linear(8, 3)
    with pytest.raises(ValueError, match="another model"):
        Adam(other.parameters()).load_state_dict(opt.state_dict())
    reshaped = _model()
    reshaped["head"] = nn.Linear(8, 4)
    with pytest.raises(ValueError, match=r"shape \(3, 8\).*\(4, 8\)"):
        Adam(reshaped.parameters()).load_state_dict(opt.state_dict())
    sd = opt.state_dict()
    sd["param_groups"][0]["amsgrad"] = True
    with pytest.raises(ValueError, match="amsgrad"):
        Adam(model.parameters()).load_state_dict(sd)
    l2 = torch.optim.Adam(model.parameters(), weight_decay=0.1)  # L2 in the gradient, not AdamW's
    with pytest.raises(ValueError, match=r"weight_decay.*0.1 \(L2, not decoupled\)"):
        Adam(model.parameters()).load_state_dict(l2.state_dict())


@pytest.mark.parametrize("kwargs, match", [(dict(lr=-1.0), "lr=-1.0"), (dict(eps=-1e-8), "eps"),
                                           (dict(betas=(0.9, 1.0)), "betas"),
                                           (dict(weight_decay=-0.1), "weight_decay=-0.1")])
def test_bad_hyperparameters_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Adam(_model().parameters(), **kwargs)
    with pytest.raises(ValueError, match="empty"):
        Adam([])


def test_a_training_run_never_imports_torch_dynamo(tmp_path):
    """The start-up this class exists for: one PPO update of the default task, in a fresh process."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "agents.train", "total_steps=1", "eval.episodes=0",
         "eval.video_episodes=0", "progress=false", "checkpoint_every=0", f"runs_root={tmp_path}/runs",
         "algo.num_envs=8"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "agents.ppo.learner" in imported and "agents.common.adam" in imported
    assert "torch._dynamo" not in imported
