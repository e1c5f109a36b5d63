"""Checkpoint files: atomic writes, run-dir lookup, policy rebuild, space checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from agents import checkpoint as ck
from agents.config import compose, make_env
from agents.train import run

TINY = [
    "curriculum=null", "env.delay=2", "algo.num_envs=8", "algo.num_steps=8", "algo.seq_len=8",
    "algo.num_minibatches=1", "algo.update_epochs=1", "total_steps=64", "progress=false",
    "eval.episodes=0", "eval.video_episodes=0", "threads=1",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return run(compose([f"runs_root={root}", *TINY]))


def test_atomic_write_keeps_the_old_file_when_a_save_fails(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "latest.pt"
    ck.save_checkpoint(path, {"step": 1})
    real_save = torch.save

    def crash(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        f.write(b"half-written")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        ck.save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert ck.load_checkpoint(path)["step"] == 1
    ck.save_checkpoint(path, {"step": 3})
    assert ck.load_checkpoint(path)["step"] == 3
    assert sorted(p.name for p in path.parent.iterdir() if not p.name.startswith(".")) == [
        "latest.pt"
    ]


def test_checkpoint_holds_model_optimizer_config_rng_and_counters(trained):
    ckpt = ck.load_checkpoint(trained["run_dir"])  # a run dir resolves to its latest
    assert {"model", "optimizer", "config", "rng", "global_step", "update", "policy"} <= set(ckpt)
    assert ckpt["global_step"] == 64 and ckpt["update"] == 1
    assert ckpt["config"]["env"]["delay"] == 2
    policy = ck.policy_from_checkpoint(ckpt)
    env = make_env(ckpt["config"]["env"], 4, "cpu", 0, check_actions=False)
    ck.check_env_fits(policy, env, "recall/DelayedMatch-v0", "x")


def test_mismatched_env_is_a_clear_error(trained):
    ckpt = ck.load_checkpoint(trained["checkpoint"])
    policy = ck.policy_from_checkpoint(ckpt)
    env_cfg = dict(ckpt["config"]["env"], num_choices=3)
    env = make_env(env_cfg, 4, "cpu", 0, check_actions=False)
    with pytest.raises(ValueError) as err:
        ck.check_env_fits(policy, env, env_cfg["id"], trained["checkpoint"])
    msg = str(err.value)
    assert "observation space" in msg and "action space" in msg
    assert "Discrete(3)" in msg and "Discrete(4)" in msg


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint in run dir"):
        ck.resolve_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ck.resolve_checkpoint(Path(tmp_path) / "nope.pt")
