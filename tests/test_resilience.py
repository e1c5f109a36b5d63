"""Runs that survive what clusters do: stop signals, kills, resumes, damaged files, bad starts.

Training is tiny everywhere (DelayedMatch delay 2, 8 envs x 8 steps, GRU 16). The
signal tests run the real CLI (``python -m agents.train``) in a subprocess; the
fault-injection test forks the test process instead (no interpreter start per
kill) and SIGKILLs the child at random moments and inside checkpoint writes.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from torch.utils.tensorboard import SummaryWriter

from agents.common.checkpoint import CHECKPOINT_DIR, LATEST, PREVIOUS, load_checkpoint
from agents.common.config import compose
from agents.common.signals import exit_status
from agents.evaluation.evaluate import main as evaluate_main
from agents.ppo import trainer as train_mod

ROOT = Path(__file__).resolve().parent.parent
SPU = 64  # steps per update: 8 envs x 8 steps
TINY = [
    "curriculum=null", "env.delay=2", "algo.num_envs=8", "algo.num_steps=8", "algo.seq_len=8",
    "algo.num_minibatches=2", "algo.update_epochs=2", "algo.anneal_lr=true", "core.hidden_size=16",
    "policy.hidden_size=16", "policy.head_hidden=16", "progress=false", "eval.episodes=0",
    "eval.video_episodes=0", "threads=1",
]
# Logged numbers that depend on the run only (charts/SPS depends on the clock).
COMPARED = ("losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/approx_kl",
            "losses/clipfrac", "losses/grad_norm", "losses/explained_variance",
            "charts/learning_rate", "charts/success_rate", "charts/episodic_return")


def _cfg(root: Path, *extra: str):
    return compose([f"runs_root={root}", *TINY, *extra])


def _resume(run_dir, *extra: str):
    overrides = [f"resume={run_dir}", *extra]
    return train_mod.run(compose(overrides), overrides=overrides)


def _logged(run_dir: Path) -> dict[str, dict[int, float]]:
    """Every scalar as TensorBoard shows it: the event files in the order they were
    written, where a resumed writer's purge (SessionLog START at step p) drops what the
    killed run had logged from step p on."""
    files = []
    for path in (run_dir / "tb").glob("events.out.tfevents.*"):
        events = list(EventFileLoader(str(path)).Load())
        if events:
            files.append((events[0].wall_time, events))
    out: dict[str, dict[int, float]] = {}
    for _, events in sorted(files, key=lambda f: f[0]):
        for ev in events:
            if ev.HasField("session_log") and ev.session_log.status == ev.session_log.START:
                for series in out.values():
                    for step in [s for s in series if s >= ev.step]:
                        del series[step]
            for v in ev.summary.value:
                if v.tag in COMPARED:
                    out.setdefault(v.tag, {})[ev.step] = v.tensor.float_val[0] if (
                        v.HasField("tensor")) else v.simple_value
    return out


def _assert_same_run(a: Path, b: Path) -> None:
    ka, kb = load_checkpoint(a), load_checkpoint(b)
    assert ka["update"] == kb["update"]
    for name, value in ka["model"].items():
        assert torch.equal(value, kb["model"][name]), f"weights differ: {name}"
    for sa, sb in zip(ka["optimizer"]["state"].values(), kb["optimizer"]["state"].values(),
                      strict=True):
        assert all(torch.equal(sa[k], sb[k]) for k in sa), "optimizer state differs"
    la, lb = _logged(a), _logged(b)
    assert set(la) == set(COMPARED) and la == lb


def _straight(root: Path, updates: int) -> Path:
    cfg = _cfg(root, f"total_steps={updates * SPU}", "checkpoint_every=0")
    return Path(train_mod.run(cfg)["run_dir"])


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """8 updates in one go: what every stopped and resumed run must reproduce."""
    return _straight(tmp_path_factory.mktemp("straight"), 8)


def _signal_at(monkeypatch, update: int, signum: int = signal.SIGTERM) -> None:
    """Send ``signum`` to this process while update ``update`` logs (inside the iteration)."""
    real_log = train_mod.Trainer._log

    def log_then_signal(self, *args):
        real_log(self, *args)
        if self.update == update:
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(train_mod.Trainer, "_log", log_then_signal)


# ------------------------------------------------------------------------ exact resume
def test_stop_at_half_and_resume_is_bit_identical_to_a_straight_run(tmp_path, monkeypatch,
                                                                    straight, capsys):
    _signal_at(monkeypatch, 4)
    first = train_mod.run(_cfg(tmp_path, "total_steps=512", "checkpoint_every=0"))
    assert first["interrupted"] and first["exit_status"] == 128 + signal.SIGTERM
    assert load_checkpoint(first["run_dir"])["update"] == 4
    assert f"resume={first['run_dir']}" in capsys.readouterr().err
    monkeypatch.undo()
    second = _resume(first["run_dir"])
    assert second["global_step"] == 512 and not second["interrupted"]
    _assert_same_run(straight, Path(first["run_dir"]))


def test_an_adapted_entropy_bonus_resumes_where_it_stopped(tmp_path, monkeypatch):
    """algo.target_entropy makes the bonus part of the run's state: a stopped and resumed
    run ends with the bonus, weights and curves of one that never stopped."""
    target = ["algo.target_entropy=0.3", "algo.ent_coef_lr=0.2"]
    whole = Path(train_mod.run(_cfg(tmp_path / "straight", "total_steps=384",
                                    "checkpoint_every=0", *target))["run_dir"])
    _signal_at(monkeypatch, 3)
    first = train_mod.run(_cfg(tmp_path / "stopped", "total_steps=384", "checkpoint_every=0",
                               *target))
    monkeypatch.undo()
    assert load_checkpoint(first["run_dir"])["ent_coef"] < 0.01  # the entropy starts at ln 2
    _resume(first["run_dir"])
    assert load_checkpoint(first["run_dir"])["ent_coef"] == load_checkpoint(whole)["ent_coef"]
    _assert_same_run(whole, Path(first["run_dir"]))


def test_return_statistics_resume_where_they_stopped(tmp_path, monkeypatch):
    """algo.normalize_returns keeps running statistics of the returns: a stopped and
    resumed run ends with the statistics, weights and curves of one that never stopped."""
    flag = ["algo.normalize_returns=true"]
    whole = Path(train_mod.run(_cfg(tmp_path / "straight", "total_steps=384",
                                    "checkpoint_every=0", *flag))["run_dir"])
    _signal_at(monkeypatch, 3)
    first = train_mod.run(_cfg(tmp_path / "stopped", "total_steps=384", "checkpoint_every=0", *flag))
    monkeypatch.undo()
    stats = load_checkpoint(first["run_dir"])["return_norm"]
    assert stats["stats.count"] > 0 and stats["stats.var"] != 1.0
    _resume(first["run_dir"])
    for key, value in load_checkpoint(whole)["return_norm"].items():
        torch.testing.assert_close(load_checkpoint(first["run_dir"])["return_norm"][key], value)
    _assert_same_run(whole, Path(first["run_dir"]))


def _train_child(overrides: list[str]) -> None:
    torch.set_num_threads(1)
    resume = [o for o in overrides if o.startswith("resume=")]
    if resume:
        _resume(resume[0].split("=", 1)[1])
    else:
        train_mod.run(compose(overrides))


def _the_run(root: Path) -> Path | None:
    found = [d for d in root.glob("k/*") if (d / "config.yaml").is_file()]
    return found[0] if found else None


def test_sigkill_at_random_moments_then_resume_ends_bit_identical(tmp_path):
    """12 SIGKILLs: half of them the moment the n-th checkpoint write of a try begins,
    the others at a random moment (in start-up, or a little after a checkpoint); each
    time the run resumes, and it ends as the run that was never killed."""
    updates = 24
    reference = _straight(tmp_path / "straight", updates)
    ctx = multiprocessing.get_context("fork")
    rnd = random.Random(14)
    root = tmp_path / "runs"
    fresh = [f"runs_root={root}", *TINY, f"total_steps={updates * SPU}", "checkpoint_every=1",
             "name=k"]
    kills = inside_writes = 0
    for attempt in range(80):
        run_dir = _the_run(root)
        tmp = None if run_dir is None else run_dir / CHECKPOINT_DIR / f".{LATEST}.tmp"
        if tmp is not None:
            tmp.unlink(missing_ok=True)  # a killed write's leftover: garbage, and it would
            # read as the next write beginning
        child = ctx.Process(target=_train_child,
                            args=([f"resume={run_dir}"] if run_dir else fresh,))
        child.start()
        if kills >= 12:  # enough: let it finish
            child.join(120)
            assert child.exitcode == 0, f"the last resume failed (exit {child.exitcode})"
            break
        inside = attempt % 2 == 0
        writes = rnd.randint(1, 3) if inside else rnd.randint(0, 2)
        seen, writing = 0, False
        deadline = time.monotonic() + 30
        while child.is_alive() and time.monotonic() < deadline:
            if tmp is None and (run_dir := _the_run(root)) is not None:
                tmp = run_dir / CHECKPOINT_DIR / f".{LATEST}.tmp"
            now = tmp is not None and tmp.exists()
            seen += now and not writing
            writing = now
            if seen >= writes and (writing or not inside):
                break
        if not inside:
            time.sleep(rnd.uniform(0.0, 0.03))
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        if child.exitcode == -signal.SIGKILL:
            kills += 1
            inside_writes += tmp is not None and tmp.exists()
    else:
        pytest.fail("the killed run never finished")
    assert inside_writes >= 1, "no kill landed inside a checkpoint write"
    assert len([d for d in root.glob("k/*") if (d / "config.yaml").is_file()]) == 1
    _assert_same_run(reference, _the_run(root))


# ----------------------------------------------------------------------------- signals
def _start_cli(root: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "agents.train", f"runs_root={root}", *TINY, "name=sig",
           "total_steps=100000000", "checkpoint_every=1", *extra]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_for_checkpoint(proc: subprocess.Popen, root: Path) -> Path:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = list(root.glob(f"sig/*/{CHECKPOINT_DIR}/{LATEST}"))
        if found:
            return found[0].parent.parent
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    proc.kill()
    pytest.fail("no checkpoint within 60 s")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1,
                                    signal.SIGINT], ids=lambda s: signal.Signals(s).name)
def test_stop_signal_saves_a_whole_update_and_exits_128_plus_signum(tmp_path, signum):
    proc = _start_cli(tmp_path)
    run_dir = _wait_for_checkpoint(proc, tmp_path)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == exit_status(signum) == 128 + signum, err
    assert f"resume={run_dir}" in err and "Traceback" not in err
    ckpt = load_checkpoint(run_dir)
    # saved between updates: Adam has taken exactly (minibatches x epochs) steps per update
    steps = {int(s["step"]) for s in ckpt["optimizer"]["state"].values()}
    assert steps == {4 * ckpt["update"]}, (steps, ckpt["update"])
    more = _resume(run_dir, f"total_steps={(ckpt['update'] + 1) * SPU}")
    assert more["global_step"] == ckpt["global_step"] + SPU and not more["interrupted"]


def test_a_second_signal_exits_at_once_and_keeps_the_last_checkpoint(tmp_path):
    proc = _start_cli(tmp_path)
    run_dir = _wait_for_checkpoint(proc, tmp_path)
    tmp = run_dir / CHECKPOINT_DIR / f".{LATEST}.tmp"
    for _ in range(100):  # freeze it outside a checkpoint write (no temporary file)
        proc.send_signal(signal.SIGSTOP)
        time.sleep(0.01)
        if not tmp.exists():
            break
        proc.send_signal(signal.SIGCONT)
    before = (run_dir / CHECKPOINT_DIR / LATEST).read_bytes()
    proc.send_signal(signal.SIGTERM)  # both wait until it runs again: the second one exits
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (128 + signal.SIGINT, 128 + signal.SIGTERM), err
    assert "exiting now" in err and "Traceback" not in err
    assert (run_dir / CHECKPOINT_DIR / LATEST).read_bytes() == before


# -------------------------------------------------------------------------- lr schedule
def _lr(run_dir) -> dict[int, float]:
    return _logged(Path(run_dir))["charts/learning_rate"]


def test_more_total_steps_replans_the_lr_from_the_current_rate(tmp_path):
    first = train_mod.run(_cfg(tmp_path, "total_steps=256"))
    before = _lr(first["run_dir"])
    second = _resume(first["run_dir"], "total_steps=512")
    assert second["global_step"] == 512
    lr = _lr(first["run_dir"])
    steps = sorted(lr)
    assert [lr[s] for s in steps[:4]] == [before[s] for s in steps[:4]]
    rates = [lr[s] for s in steps]
    assert rates == sorted(rates, reverse=True), f"the rate went up: {rates}"
    assert rates[4] <= rates[3] and rates[-1] > 0
    assert load_checkpoint(first["run_dir"])["lr_schedule"]["end"] == 8


def test_resuming_a_finished_run_changes_nothing(tmp_path, capsys):
    first = train_mod.run(_cfg(tmp_path, "total_steps=128", "eval.episodes=8", "eval.num_envs=8"))
    run_dir = Path(first["run_dir"])
    files = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    capsys.readouterr()
    again = _resume(run_dir)
    assert again["complete"] and again["global_step"] == 128
    out = capsys.readouterr()
    assert "is complete" in out.err and out.out == ""  # no evaluation printed
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == files


def test_a_run_stopped_in_its_last_update_is_evaluated_on_resume(tmp_path, monkeypatch):
    _signal_at(monkeypatch, 2)
    first = train_mod.run(_cfg(tmp_path, "total_steps=128", "eval.episodes=8", "eval.num_envs=8"))
    assert first["interrupted"] and "eval" not in first
    monkeypatch.undo()
    second = _resume(first["run_dir"])  # nothing left to train: only the end of the run
    assert second["global_step"] == 128 and second["eval"]["episodes"] == 8
    assert _resume(first["run_dir"])["complete"]


def test_a_run_killed_before_its_first_checkpoint_resumes_from_the_start(tmp_path, straight):
    """What such a run leaves: its config, and events logged before the kill."""
    cfg = _cfg(tmp_path, "total_steps=512", "checkpoint_every=0")
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    run_dir = tmp_path / "run" / "killed"
    run_dir.mkdir(parents=True)
    cfg.run_dir = str(run_dir)
    OmegaConf.save(cfg, run_dir / "config.yaml")
    with SummaryWriter(str(run_dir / "tb")) as w:
        w.add_scalar("losses/policy_loss", 123.0, SPU)
    _resume(run_dir)
    _assert_same_run(straight, run_dir)


# ---------------------------------------------------------------------- failed starts
@pytest.mark.parametrize("bad", ["env.delay=2.5", "seed=4294967296", "algo.num_envs=true"])
def test_a_failed_start_leaves_no_run_folder(tmp_path, bad):
    with pytest.raises(ValueError):
        train_mod.run(_cfg(tmp_path / "runs", bad))
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_one_line_with_the_fix(tmp_path):
    res = subprocess.run([sys.executable, "-m", "agents.train", f"runs_root={tmp_path}",
                          *TINY, "device=cuda"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: device=cuda")
    assert "CUDA build" in lines[0] and "device=cpu" in lines[0]
    assert not list(tmp_path.iterdir())


def test_evaluate_on_damaged_checkpoints_is_one_error_line(tmp_path, capsys):
    ckpt_dir = tmp_path / CHECKPOINT_DIR
    ckpt_dir.mkdir()
    (ckpt_dir / LATEST).write_bytes(b"garbage")
    assert evaluate_main([f"checkpoint={tmp_path}", "episodes=4"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: checkpoint ") and str(ckpt_dir) in err[0]
    (ckpt_dir / PREVIOUS).write_bytes(b"")
    assert evaluate_main([f"checkpoint={tmp_path}", "episodes=4"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "previous" in err[0] and "empty" in err[0]


def test_dt_training_stops_between_updates_on_a_signal(tmp_path, monkeypatch):
    from test_dt import tiny_cfg

    from agents.dt.trainer import DTTrainer

    cfg = tiny_cfg(tmp_path, updates=50)
    real_lr = DTTrainer._lr

    def lr_then_signal(self):  # called as update 3 begins: it is finished, then saved
        if self.update == 2:
            os.kill(os.getpid(), signal.SIGUSR1)
        return real_lr(self)

    monkeypatch.setattr(DTTrainer, "_lr", lr_then_signal)
    (tmp_path / "run").mkdir()
    summary = DTTrainer(cfg, tmp_path / "run").train()
    assert summary["interrupted"] and summary["exit_status"] == 128 + signal.SIGUSR1
    ckpt = load_checkpoint(summary["checkpoint"])
    assert ckpt["update"] == 3
    assert {int(s["step"]) for s in ckpt["optimizer"]["state"].values()} == {3}


# ------------------------------------------------------------- one error line per CLI
def _one_error_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    return lines[0]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_train_resume_from_damaged_checkpoints_is_one_error_line(tmp_path):
    run_dir = Path(train_mod.run(_cfg(tmp_path, "total_steps=64"))["run_dir"])
    for name in (LATEST, PREVIOUS):
        (run_dir / CHECKPOINT_DIR / name).write_bytes(b"\x00" * 10)
    res = _cli("agents.train", f"resume={run_dir}", "total_steps=128")
    assert res.returncode == 1
    line = _one_error_line(res.stderr)
    assert str(run_dir / CHECKPOINT_DIR / LATEST) in line and PREVIOUS in line


def test_train_dt_failed_start_is_one_error_line_and_no_folder(tmp_path):
    res = _cli("agents.train_dt", f"dataset={tmp_path / 'missing'}", f"runs_root={tmp_path / 'r'}",
               "progress=false")
    assert res.returncode == 1
    _one_error_line(res.stderr)
    assert not (tmp_path / "r").exists()


def test_record_collect_and_sf_enjoy_report_expected_errors_in_one_line(tmp_path, capsys):
    from agents import collect, record, sf_enjoy  # the commands (python -m agents.<name>)

    (tmp_path / CHECKPOINT_DIR).mkdir()
    (tmp_path / CHECKPOINT_DIR / LATEST).write_bytes(b"garbage")
    assert record.main([f"checkpoint={tmp_path}", f"out={tmp_path / 'x.mp4'}"]) == 1
    assert "cannot be loaded" in _one_error_line(capsys.readouterr().err)
    assert collect.main(["env=delayed_match", "episodes=4", f"out={tmp_path / 'd'}",
                         "device=gpu"]) == 1
    assert "device='gpu' is not a device" in _one_error_line(capsys.readouterr().err)
    assert sf_enjoy.main(["--experiment", "none", "--train_dir", str(tmp_path)]) == 1
    assert "no config.json for experiment" in _one_error_line(capsys.readouterr().err)


def test_an_unknown_config_name_or_key_is_one_line():
    from agents.common.cli import check_group_choices, check_hydra_args

    check_group_choices(["core=gru,lstm", "experiment=null", "seed=3"], ("core", "experiment"))
    with pytest.raises(ValueError, match=r"^core=bogus: no such config in configs/core/; "
                                         r"accepted: .*gru.*lstm"):
        check_group_choices(["core=gru,bogus"], ("core", "experiment"))
    check_hydra_args(["core=lstm", "+extra=1", "seed=3"], "config", ("core",))
    for bad, says in (["core.bogus=1"], "Could not override 'core.bogus'"), (["seed=[1"], "[1"):
        with pytest.raises(ValueError) as err:
            check_hydra_args(bad, "config", ("core",))
        assert says in str(err.value) and "\n" not in str(err.value)
