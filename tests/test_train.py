"""Training end to end: learning, TensorBoard, checkpoints, resume, Ctrl-C, NaN, evaluate CLI."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.common.checkpoint import load_checkpoint
from agents.common.config import compose
from agents.evaluation.evaluate import evaluate_checkpoint
from agents.ppo import trainer as train_mod
from agents.ppo.learner import PPO

ROOT = Path(__file__).resolve().parent.parent

TINY = [
    "curriculum=null", "env.delay=2", "algo.num_envs=16", "algo.num_steps=8", "algo.seq_len=8",
    "algo.num_minibatches=1", "algo.update_epochs=1", "total_steps=256", "progress=false",
    "eval.episodes=32", "eval.num_envs=32", "eval.video_episodes=0", "threads=1",
]

SCALARS = [
    "charts/episodic_return", "charts/success_rate", "charts/episode_length", "charts/SPS",
    "charts/learning_rate", "losses/policy_loss", "losses/value_loss", "losses/entropy",
    "losses/approx_kl", "losses/clipfrac", "losses/explained_variance", "losses/grad_norm",
]


def _tiny(tmp_path, *extra):
    return compose([f"runs_root={tmp_path}", *TINY, *extra])


def _scalars(run_dir: Path) -> dict[str, list]:
    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    return {tag: acc.Scalars(tag) for tag in acc.Tags()["scalars"]}


@pytest.mark.parametrize("algo", [
    ["algo=ppo", "algo.num_minibatches=2"],  # 4 epochs
    ["algo=ppo_one_epoch"],  # 1 epoch x 8 minibatches, as the GRU acceptance experiments
], ids=["ppo", "ppo_one_epoch"])
def test_short_training_beats_chance(tmp_path, algo):
    """GRU on DelayedMatch (delay 2, 2 choices: chance 0.5) (it is solved by about 30k steps)."""
    cfg = compose([
        f"runs_root={tmp_path}", "curriculum=null", "env.delay=2", "env.num_symbols=4",
        "env.num_choices=2", *algo,
        "algo.num_envs=64", "algo.num_steps=16", "algo.seq_len=16",
        "algo.learning_rate=3e-3", "total_steps=40_000", "progress=false",
        "checkpoint_every=0", "eval.episodes=512", "eval.video_episodes=0", "threads=1",
    ])
    summary = train_mod.run(cfg)
    assert summary["eval"]["episodes"] == 512
    assert summary["eval"]["success_rate"] >= 0.8, summary["eval"]


def test_run_dir_tensorboard_and_checkpoint(tmp_path, capsys):
    summary = train_mod.run(_tiny(tmp_path, "name=tiny", "video_every=2"))
    run_dir = Path(summary["run_dir"])
    assert run_dir.parent == tmp_path / "tiny"
    assert (run_dir / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / "latest.pt").is_file()
    assert not list(run_dir.rglob("*.tmp")), "no temporary files left behind"
    scalars = _scalars(run_dir)
    missing = [t for t in SCALARS if t not in scalars]
    assert not missing, f"TensorBoard lacks {missing}; has {sorted(scalars)}"
    assert [e.step for e in scalars["charts/SPS"]] == [128, 256]
    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    assert "eval/video" in acc.Tags()["images"], "an evaluation video every video_every updates"
    # the evaluation's JSON line is the last thing printed
    line = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(line)
    assert result["episodes"] == 32 and 0.0 <= result["success_rate"] <= 1.0


def test_ctrl_c_saves_then_resume_continues_the_same_run(tmp_path, monkeypatch):
    real_log = train_mod.Trainer._log

    def log_then_interrupt(self, *args):
        real_log(self, *args)
        if self.update == 2:  # Ctrl-C inside update 2: it is finished, then saved
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(train_mod.Trainer, "_log", log_then_interrupt)
    cfg = _tiny(tmp_path, "total_steps=512", "checkpoint_every=0", "algo.anneal_lr=true")
    first = train_mod.run(cfg)
    assert first["interrupted"]
    ckpt = load_checkpoint(first["run_dir"])
    assert (ckpt["update"], ckpt["global_step"]) == (2, 256)
    monkeypatch.setattr(train_mod.Trainer, "_log", real_log)

    cfg = compose([f"resume={first['run_dir']}"])
    second = train_mod.run(cfg, overrides=[f"resume={first['run_dir']}"])
    assert second["run_dir"] == first["run_dir"]
    assert second["global_step"] == 512
    assert load_checkpoint(first["run_dir"])["update"] == 4
    # one TensorBoard run, its steps continuing, the lr schedule going on from update 2
    tb_dirs = {p.parent for p in Path(first["run_dir"]).rglob("events.out.tfevents.*")}
    assert tb_dirs == {Path(first["run_dir"]) / "tb"}
    scalars = _scalars(Path(first["run_dir"]))
    assert sorted({e.step for e in scalars["charts/SPS"]}) == [128, 256, 384, 512]
    lr = {e.step: e.value for e in scalars["charts/learning_rate"]}
    base = float(_tiny(tmp_path).algo.learning_rate)
    assert lr[384] == pytest.approx(base * (1 - 2 / 4), rel=1e-5), lr

    result = evaluate_checkpoint(first["run_dir"], episodes=64, num_envs=32)
    assert result["episodes"] == 64 and result["global_step"] == 512
    assert result["env"] == "recall/DelayedMatch-v0" and result["core"] == "gru"


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real_loss = PPO.loss
    calls = {"n": 0}

    def poisoned(self, mb):
        calls["n"] += 1
        loss, stats = real_loss(self, mb)
        if calls["n"] >= 3:  # one minibatch per update: updates 1 and 2 are fine
            loss = loss * float("nan")
            stats["loss"] = loss.detach()
        return loss, stats

    monkeypatch.setattr(PPO, "loss", poisoned)
    cfg = _tiny(tmp_path, "total_steps=1024", "checkpoint_every=1")
    with pytest.raises(train_mod.NonFiniteLossError, match="non-finite loss.*update 3.*last good"):
        train_mod.run(cfg)
    run_dir = next(tmp_path.glob("run/*"))
    ckpt = load_checkpoint(run_dir)
    assert ckpt["update"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_evaluate_cli_prints_one_json_line_and_rejects_a_mismatched_env(tmp_path):
    summary = train_mod.run(_tiny(tmp_path, "eval.episodes=0"))
    ckpt = Path(summary["checkpoint"])
    cmd = [sys.executable, "-m", "agents.evaluate", f"checkpoint={ckpt}", "episodes=40",
           "num_envs=16"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["episodes"] == 40
    assert {"success_rate", "mean_return", "env", "core"} <= set(result)
    assert math.isfinite(result["mean_return"])

    bad = subprocess.run(cmd + ["env=nback"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode != 0
    assert "recall/NBack-v0" in bad.stderr and "DelayedMatch" in bad.stderr, bad.stderr
    assert "observation space" in bad.stderr and "Traceback" not in bad.stderr


def test_curriculum_advances_on_success_and_is_checkpointed(tmp_path, capsys):
    cfg = _tiny(tmp_path, "total_steps=384", "eval.episodes=0", "env.delay=3",
                "curriculum={knob: delay, values: [1, 2, 3], threshold: 0.0}")
    summary = train_mod.run(cfg)
    ckpt = load_checkpoint(summary["run_dir"])
    assert ckpt["curriculum_stage"] == 2
    steps = {e.step: e.value for e in _scalars(Path(summary["run_dir"]))["curriculum/delay"]}
    assert steps == {128: 1.0, 256: 2.0, 384: 3.0}
    assert "curriculum: delay=3 (stage 3/3)" in capsys.readouterr().err


def test_curriculum_rejects_unknown_knobs_and_a_wrong_end(tmp_path):
    cfg = _tiny(tmp_path, "curriculum={knob: nope, values: [1]}")
    with pytest.raises(ValueError, match="curriculum knob 'nope' is not an env option"):
        train_mod.run(cfg)
    cfg = _tiny(tmp_path, "env.delay=32", "curriculum={knob: delay, values: [4, 8]}")
    with pytest.raises(ValueError, match="ends at 8 but env.delay=32"):
        train_mod.run(cfg)


def test_curriculum_rejects_knobs_that_change_the_spaces(tmp_path):
    cfg = _tiny(tmp_path, "env.num_choices=4", "curriculum={knob: num_choices, values: [2, 4]}")
    with pytest.raises(ValueError, match="num_choices=4 changes the env.s spaces"):
        train_mod.run(cfg)


def test_final_evaluation_reports_greedy_and_sampled(tmp_path):
    summary = train_mod.run(_tiny(tmp_path))
    ev = summary["eval"]
    for mode in ("greedy", "sampled"):
        assert ev[mode]["episodes"] == 32 and 0.0 <= ev[mode]["success_rate"] <= 1.0
    assert ev["success_rate"] == ev["greedy"]["success_rate"]
    tags = set(_scalars(Path(summary["run_dir"])))
    assert {"eval/greedy_success_rate", "eval/sampled_success_rate",
            "eval/greedy_mean_return", "eval/sampled_mean_return"} <= tags
    only = evaluate_checkpoint(summary["run_dir"], episodes=16, num_envs=16, deterministic=False)
    assert "sampled" in only and "greedy" not in only
    with pytest.raises(ValueError, match="deterministic='yes'"):
        evaluate_checkpoint(summary["run_dir"], episodes=16, num_envs=16, deterministic="yes")


def test_eval_every_logs_curves_and_leaves_training_unchanged(tmp_path):
    plain = train_mod.run(_tiny(tmp_path / "a", "total_steps=512"))
    evald = train_mod.run(_tiny(tmp_path / "b", "total_steps=512", "eval_every=2",
                                "eval.during_episodes=16"))
    scalars = _scalars(Path(evald["run_dir"]))
    # updates 2 and 4, then the final evaluation at the same step as update 4
    assert [e.step for e in scalars["eval/greedy_success_rate"]][:2] == [256, 512]
    assert "eval/sampled_mean_return" in scalars
    a = load_checkpoint(plain["run_dir"])["model"]
    b = load_checkpoint(evald["run_dir"])["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_eval_every_seconds_evaluates_by_training_time_and_logs_its_cost(tmp_path):
    # A tiny interval: an evaluation after every update (4 updates), greedy only.
    run = train_mod.run(_tiny(tmp_path, "total_steps=512", "eval_every_seconds=1e-6",
                              "eval.during_episodes=8", "eval.deterministic=true", "eval.episodes=0"))
    scalars = _scalars(Path(run["run_dir"]))
    assert [e.step for e in scalars["eval/greedy_success_rate"]] == [128, 256, 384, 512]
    assert "eval/sampled_success_rate" not in scalars
    assert all(e.value > 0 for e in scalars["eval/seconds"])
    with pytest.raises(ValueError, match="eval_every_seconds=-1 must be >= 0"):
        train_mod.run(_tiny(tmp_path / "bad", "eval_every_seconds=-1"))


def test_eval_snapshots_play_each_update_at_its_own_time_and_leave_training_unchanged(tmp_path):
    """eval.snapshots: an evaluation every 2 updates also plays the update before it, logged
    at that update's step and wall-clock time (before the evaluation that played it)."""
    plain = train_mod.run(_tiny(tmp_path / "a", "total_steps=512", "eval.episodes=0"))
    snap = train_mod.run(_tiny(tmp_path / "b", "total_steps=512", "eval_every=2", "eval.snapshots=true",
                               "eval.during_episodes=8", "eval.deterministic=true", "eval.episodes=0"))
    scalars = _scalars(Path(snap["run_dir"]))
    greedy, seconds = scalars["eval/greedy_success_rate"], scalars["eval/seconds"]
    assert [e.step for e in greedy] == [128, 256, 384, 512]  # every update
    assert [e.step for e in seconds] == [256, 512]  # two pauses, each timing both plays
    walls = {e.step: e.wall_time for e in greedy}
    sps = {e.step: e.wall_time for e in scalars["charts/SPS"]}
    # a snapshot's time is its update's (logged right after it), before the evaluation's
    assert walls[128] <= sps[256] <= walls[256] and walls[384] <= sps[512] <= walls[512]
    a = load_checkpoint(plain["run_dir"])["model"]
    b = load_checkpoint(snap["run_dir"])["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_curriculum_over_several_knobs_at_once(tmp_path, capsys):
    cfg = _tiny(tmp_path, "total_steps=384", "eval.episodes=0", "env.delay=3", "env.num_choices=3",
                "curriculum={stages: [{delay: 1, cue_steps: 2}, {delay: 2}, {}], threshold: 0.0}")
    summary = train_mod.run(cfg)
    assert load_checkpoint(summary["run_dir"])["curriculum_stage"] == 2
    scalars = _scalars(Path(summary["run_dir"]))
    assert {e.step: e.value for e in scalars["curriculum/stage"]} == {128: 1.0, 256: 2.0, 384: 3.0}
    assert {e.step: e.value for e in scalars["curriculum/delay"]} == {128: 1.0, 256: 2.0, 384: 3.0}
    # a knob a stage leaves out is at the env config's own value
    assert {e.step: e.value for e in scalars["curriculum/cue_steps"]} == {128: 2.0, 256: 1.0,
                                                                          384: 1.0}
    assert "curriculum: the task itself (stage 3/3)" in capsys.readouterr().err
    row = json.loads((Path(summary["run_dir"]) / "results.json").read_text())
    assert row["curriculum_value"] == 3


def test_curriculum_of_stages_must_end_at_the_task(tmp_path):
    cfg = _tiny(tmp_path, "env.delay=3", "curriculum={stages: [{delay: 1}, {delay: 2}]}")
    with pytest.raises(ValueError, match="ends at 2 but env.delay=3"):
        train_mod.run(cfg)
    cfg = _tiny(tmp_path, "curriculum={stages: [{nope: 1}, {}]}")
    with pytest.raises(ValueError, match="curriculum knob 'nope' is not an env option"):
        train_mod.run(cfg)


def test_curriculum_over_minigrid_rooms_moves_the_env_id_with_the_room(tmp_path):
    """MiniGrid's env id is made from its room (``id: MiniGrid-Memory${.room}-v0``): a stage
    that sets the room trains in that room, and the last stage is the room asked for."""
    from agents.ppo.curriculum import Curriculum
    from envs.minigrid_memory import MiniGridMemory

    cfg = compose(["env=minigrid_memory", "env.room=S11"])
    cur = Curriculum({"stages": [{"room": "S7"}, {"room": "S9"}, {}], "threshold": 0.9}, cfg.env)
    assert cur.env_cfg()["id"] == "MiniGrid-MemoryS7-v0"
    assert cur.knob_values() == {"room": "S7"}
    assert not cur.advance(0.5) and cur.advance(0.95)
    assert cur.env_cfg()["id"] == "MiniGrid-MemoryS9-v0"
    assert cur.advance(1.0) and cur.env_cfg()["id"] == "MiniGrid-MemoryS11-v0"
    cur.check_spaces(MiniGridMemory("MiniGrid-MemoryS11-v0", num_envs=1))
    # and through the trainer: a run that starts in S7 ends in S11 (threshold 0: a stage an update)
    tiny = [o for o in TINY if not o.startswith("env.")]
    run = compose([f"runs_root={tmp_path}", *tiny, "env=minigrid_memory", "env.room=S11",
                   "total_steps=384", "eval.episodes=0",
                   "curriculum={stages: [{room: S7}, {room: S9}, {}], threshold: 0.0}"])
    summary = train_mod.run(run)
    assert load_checkpoint(summary["run_dir"])["curriculum_stage"] == 2
    assert load_checkpoint(summary["run_dir"])["env_id"] == "MiniGrid-MemoryS11-v0"


@pytest.mark.parametrize("via_hydra", [False, True])
def test_a_plain_run_is_composed_once_and_hydra_flags_go_to_hydra(monkeypatch, tmp_path, via_hydra):
    """`agents.train key=value ...` starts the job from the config its pre-check composed
    (Hydra would compose it twice more); a Hydra flag or hydra.* override goes through
    @hydra.main."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from hydra.types import RunMode
    from omegaconf import read_write

    from agents.common.cli import single_run
    from agents.common.config import CONFIG_DIR
    from agents.common.sweep import in_multirun

    loads, seen = [], {}
    real_load = ConfigLoaderImpl.load_configuration

    def counting_load(self, *args, **kwargs):
        loads.append(1)
        return real_load(self, *args, **kwargs)

    def fake_run(cfg, overrides):
        seen.update(cfg=cfg, overrides=overrides, multirun=in_multirun())
        return {"interrupted": False}

    assert single_run(["seed=7", "hydra.job.chdir=true"], compose(["seed=7"], return_hydra_config=True)) is None
    extra = ("--config-path", str(CONFIG_DIR)) if via_hydra else ()  # in-process, Hydra needs the path
    state = Singleton.get_state()  # @hydra.main leaves its singletons behind
    stale = compose([], return_hydra_config=True)  # as an earlier in-process multirun leaves it
    with read_write(stale.hydra):
        stale.hydra.mode = RunMode.MULTIRUN
    HydraConfig.instance().set_config(stale)
    assert in_multirun()
    monkeypatch.setattr(ConfigLoaderImpl, "load_configuration", counting_load)
    monkeypatch.setattr(train_mod, "run", fake_run)
    monkeypatch.setattr(sys, "argv", ["agents.train", "env=nback", "seed=7", f"runs_root={tmp_path}", *extra])
    try:
        train_mod.main()
    finally:
        Singleton.set_state(state)
        GlobalHydra.instance().clear()
    assert seen["cfg"].seed == 7 and seen["cfg"].env.id == "recall/NBack-v0" and "hydra" not in seen["cfg"]
    assert seen["overrides"] == ["env=nback", "seed=7", f"runs_root={tmp_path}"]
    assert seen["multirun"] is False
    assert len(loads) == (2 if via_hydra else 1)  # Hydra composes twice; the pre-check skips flags
