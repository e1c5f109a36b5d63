"""Checkpoint files: atomic writes, run-dir lookup, policy rebuild, space checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from agents.common import checkpoint as ck
from agents.common.config import compose, make_env
from agents.ppo.trainer import run

TINY = [
    "curriculum=null", "env.delay=2", "algo.num_envs=8", "algo.num_steps=8", "algo.seq_len=8",
    "algo.num_minibatches=1", "algo.update_epochs=1", "total_steps=64", "progress=false",
    "eval.episodes=0", "eval.video_episodes=0", "threads=1",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return run(compose([f"runs_root={root}", *TINY]))


def _payload(step: int) -> dict:
    return {"config": {}, "model": {}, "global_step": step}


def test_atomic_write_keeps_the_old_file_when_a_save_fails(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "latest.pt"
    ck.save_checkpoint(path, _payload(1))
    real_save = torch.save

    def crash(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        f.write(b"half-written")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        ck.save_checkpoint(path, _payload(2))
    monkeypatch.undo()
    assert ck.load_checkpoint(path)["global_step"] == 1
    ck.save_checkpoint(path, _payload(3))
    assert ck.load_checkpoint(path)["global_step"] == 3
    assert ck.load_checkpoint(path.parent / "previous.pt")["global_step"] == 1
    assert sorted(p.name for p in path.parent.iterdir() if not p.name.startswith(".")) == [
        "latest.pt", "previous.pt"
    ]


DAMAGE = {
    "truncated": lambda data: data[: len(data) // 2],
    "empty": lambda data: b"",
    "garbage": lambda data: b"\x80\x04not a checkpoint at all",
    "other pickle": lambda data: __import__("pickle").dumps({"step": 1}),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_latest_falls_back_to_previous_with_one_warning(tmp_path, capsys, damage):
    path = tmp_path / "checkpoints" / "latest.pt"
    ck.save_checkpoint(path, _payload(1))
    ck.save_checkpoint(path, _payload(2))
    path.write_bytes(DAMAGE[damage](path.read_bytes()))
    ckpt = ck.load_checkpoint(tmp_path)
    ck.load_checkpoint(tmp_path)  # loading again (tools do) does not warn again
    assert ckpt["global_step"] == 1 and ckpt["_source"] == str(path.with_name("previous.pt"))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: checkpoint {path} is ")
    assert "previous.pt" in err[0]


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_neither_checkpoint_loading_is_one_error_naming_the_file(tmp_path, damage):
    path = tmp_path / "checkpoints" / "latest.pt"
    ck.save_checkpoint(path, _payload(1))
    ck.save_checkpoint(path, _payload(2))
    for p in (path, path.with_name("previous.pt")):
        p.write_bytes(DAMAGE[damage](p.read_bytes()))
    with pytest.raises(ck.CheckpointError) as err:
        ck.load_checkpoint(tmp_path)
    msg = str(err.value)
    assert str(path) in msg and "previous.pt" in msg and "\n" not in msg


def test_killed_between_the_renames_the_previous_checkpoint_is_taken(tmp_path):
    path = tmp_path / "checkpoints" / "latest.pt"
    ck.save_checkpoint(path, _payload(1))
    ck.save_checkpoint(path, _payload(2))
    path.unlink()  # what a kill between ``latest -> previous`` and ``tmp -> latest`` leaves
    assert ck.load_checkpoint(tmp_path)["global_step"] == 1


def test_resume_from_previous_keeps_it_until_a_good_latest_exists(tmp_path):
    root = tmp_path / "runs"
    first = run(compose([f"runs_root={root}", *TINY, "total_steps=128", "checkpoint_every=1"]))
    latest = Path(first["checkpoint"])
    latest.write_bytes(b"")
    # previous.pt holds update 1: saved twice at update 2 (periodic, final), the second
    # save does not rotate, so previous is always an earlier update than latest
    overrides = [f"resume={first['run_dir']}", "checkpoint_every=0"]
    second = run(compose(overrides), overrides=overrides)
    assert second["global_step"] == 128
    # the damaged latest was overwritten, not rotated over the good previous one
    assert ck.load_checkpoint(latest)["global_step"] == 128
    assert ck.load_checkpoint(latest.with_name("previous.pt"))["global_step"] == 64


def test_a_checkpoint_of_another_core_is_one_line_naming_both(trained, tmp_path):
    import shutil

    from omegaconf import OmegaConf

    run_dir = tmp_path / "copy"
    shutil.copytree(trained["run_dir"], run_dir)
    cfg = OmegaConf.load(run_dir / "config.yaml")
    cfg.core.name = "lstm"
    OmegaConf.save(cfg, run_dir / "config.yaml")
    with pytest.raises(ck.CheckpointError) as err:
        overrides = [f"resume={run_dir}", "total_steps=128"]  # one more update to do
        run(compose(overrides), overrides=overrides)
    msg = str(err.value)
    assert "\n" not in msg and "holds gru" in msg and "builds lstm" in msg


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
