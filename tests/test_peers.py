"""benchmarks/peers.py: time to the greedy bar, for real, on tiny runs of each framework."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmarks import peers

ROOT = peers.ROOT


def test_time_to_bar_leaves_out_the_evaluations():
    # (wall time, env steps, greedy metric, seconds the evaluation took), launched at 100
    evals = [(110.0, 1000, 0.2, 1.0), (121.0, 2000, 0.95, 1.0), (132.0, 3000, 0.5, 1.0)]
    res = peers.time_to_bar(evals, launched=100.0, bar=0.9)
    assert res["solved"] and res["solve_s"] == 21.0 - 2.0 and res["solve_wall_s"] == 21.0
    assert res["steps_at_solve"] == 2000 and res["best"] == 0.95 and res["last"] == 0.5
    assert res["evals"] == 3 and res["sps"] == round(3000 / (32.0 - 3.0))
    assert not peers.time_to_bar(evals, 100.0, 0.96)["solved"]
    assert peers.time_to_bar([], 100.0, 0.9) == {"solved": False, "evals": 0}


def test_time_to_bar_of_a_snapshot_counts_only_the_evaluations_before_it():
    # Evaluations paused training 1 s at 110 and 2 s at 123 (the second also played the
    # snapshot taken at 117 before the current weights): the snapshot's training time
    # leaves out only the first pause.
    evals = [(110.0, 1000, 0.2, 1.0), (117.0, 1500, 0.95, 0.0), (123.0, 2000, 0.97, 2.0)]
    res = peers.time_to_bar(evals, launched=100.0, bar=0.9)
    assert res["solve_s"] == 17.0 - 1.0 and res["steps_at_solve"] == 1500
    assert res["train_s"] == 23.0 - 3.0


def test_tasks_are_the_committed_recipes_at_their_levels():
    dm = peers.task_spec("delayed_match")
    assert dm["experiment"] == "gru_delayed_match" and dm["knobs"]["delay"] == 32
    assert (dm["core"], dm["hidden"], dm["metric"]) == ("gru", 128, "success")
    rp = peers.task_spec("repeat_previous")
    assert rp["knobs"] == {"difficulty": "easy"} and rp["metric"] == "return" and rp["gamma"] == 0.5
    ar = peers.task_spec("associative_recall")
    assert (ar["core"], ar["hidden"], ar["core_kwargs"]["max_chunks"]) == ("hcam", 64, 4)
    ho = peers.task_spec("hidden_objects")
    assert ho["experiment"] == "gru_hidden_objects" and ho["env_id"] == "recall/HiddenObjects-v0"
    mg = peers.task_spec("minigrid_memory")
    assert mg["experiment"] == "gru_minigrid_memory" and mg["env_id"] == "MiniGrid-MemoryS7-v0"
    assert peers.unsupported("sf", mg) is None and peers.unsupported("sb3", mg) is None
    assert peers.unsupported("sf", {**mg, "env_id": "MiniGrid-Empty-5x5-v0"}).startswith("unsupported")
    with pytest.raises(ValueError, match="unknown task 'pong'; accepted: delayed_match"):
        peers.task_spec("pong")


def _row(fw, solved, solve_s=None, status=None, minutes=10):
    return {"framework": fw, "task": "nback", "seed": 0, "env": "recall/NBack-v0", "knobs": {"n": 2},
            "core": "gru", "hidden": 128, "metric": "success", "bar": 0.9, "max_minutes": minutes,
            "solved": solved, "solve_s": solve_s, "commit": "abc",
            "status": status or ("solved" if solved else f"not solved in {minutes} min")}


def test_the_table_gives_the_best_peer_ratio_and_the_target():
    text = peers.render([_row("recall", True, 20.0), _row("sf", True, 80.0), _row("sb3", False)])
    assert "| 4.0x | yes |" in text and "20 s (gru 128, 1/1)" in text
    text = peers.render([_row("recall", True, 100.0), _row("sf", True, 250.0)])
    assert "| 2.5x | no |" in text
    # no peer solved within its cap: the ratio is a lower bound, cap / recall-rl's time
    text = peers.render([_row("recall", True, 100.0), _row("sf", False, minutes=10)])
    assert "| > 6.0x | yes |" in text
    text = peers.render([_row("recall", False), _row("sf", True, 50.0)])
    assert "no (recall-rl not solved)" in text
    # a peer that crashed is no lower bound: no ratio, and the cell says it failed
    crashed = _row("sf", False, status="failed: no evaluation logged (exit 1): Ratio is 0.5")
    text = peers.render([_row("recall", True, 4.0), crashed])
    assert "| failed |" in text and "| - | - |" in text and "> " not in text.split("\n\n")[0]
    text = peers.render([_row("recall", True, 4.0), _row("sf", True, 16.0), crashed])
    assert "16 s (gru 128, 1/1, 1 failed)" in text and "| 4.0x | yes |" in text


@pytest.mark.parametrize("fw, sf_core, snapshots", [
    ("recall", "recall", False), ("recall", "recall", True), ("sb3", "recall", True),
    ("sf", "recall", False), ("sf", "own", True)])
def test_each_framework_run_stops_at_the_bar(tmp_path, fw, sf_core, snapshots):
    # A bar every evaluation meets (POPGym returns lie in [-1, 1]): the run must stop at
    # its first greedy evaluation, long before the cap, and say so in its row. With
    # snapshots, the first evaluation plays the earlier updates' weights first, and the
    # first of those already meets the bar.
    a = peers.build_parser().parse_args(["--bar", "-1", "--max-minutes", "3", "--eval-every-seconds",
                                         "3" if snapshots else "1", "--eval-episodes", "8", "--sf-core", sf_core,
                                         *(["--snapshots"] if snapshots else [])])
    row = peers.run_one(fw, peers.task_spec("repeat_previous"), 0, a, tmp_path)
    assert row["status"] == "solved", (tmp_path / f"{fw}_repeat_previous_s0" / "stdout.txt").read_text()[-2000:]
    assert row["evals"] >= 1 and 0 < row["solve_s"] <= row["solve_wall_s"] < row["wall_s"] < 120
    assert row["steps_at_solve"] > 0 and row["metric"] == "return"
    assert row["core"] == {"recall": "gru", "sb3": "lstm", "sf": "gru" if sf_core == "recall" else "sf_gru"}[fw]
    evals = peers.Curves(str(tmp_path / f"{fw}_repeat_previous_s0")).evals("return")
    if snapshots:  # solved at a snapshot: an update before the first evaluation's pause
        assert row.get("snapshots") and evals[0][3] == 0.0  # no pause logged with it
        # and before any pause, so no evaluation time is left out of it
        assert row["steps_at_solve"] == evals[0][1] and row["solve_s"] == row["solve_wall_s"]


def test_recall_overrides_reach_the_trainer_and_the_row(tmp_path):
    a = peers.build_parser().parse_args(["--recall-overrides", "algo.num_envs=64"])
    cmd = peers._recall_cmd(peers.task_spec("repeat_previous"), a, 0, tmp_path)
    assert cmd[-1] == "algo.num_envs=64" and "experiment=gru_repeat_previous" in cmd


def test_sf_own_core_on_a_recipe_it_lacks_is_a_row_not_a_crash(tmp_path):
    # AssociativeRecall's recipe is HCAM: sample-factory has no core of that kind.
    a = peers.build_parser().parse_args(["--sf-core", "own"])
    row = peers.run_one("sf", peers.task_spec("associative_recall"), 0, a, tmp_path)
    assert row["status"] == ("unsupported: --sf-core own: sample-factory has no core of the "
                             "recipe's kind 'hcam'; accepted: gru, lstm") and not row["solved"]


def test_main_appends_one_json_line_per_run_and_prints_the_table(tmp_path, monkeypatch):
    out = tmp_path / "solve.jsonl"
    argv = ["--tasks", "minigrid_memory", "--frameworks", "sf", "--out", str(out)]
    # a framework that cannot run a task gets its row without a launch
    monkeypatch.setattr(peers, "unsupported", lambda fw, spec: "unsupported: not in this test")
    assert peers.main(argv) == 0 and peers.main(argv) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 2 and rows[0]["status"].startswith("unsupported")
    assert peers.main([*argv, "--table-only"]) == 0


@pytest.mark.parametrize("flag, value, accepted", [("--max-minutes", "0", "> 0"),
                                                   ("--bar", "1.5", "-1 to 1")])
def test_bad_settings_are_one_line(flag, value, accepted):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.peers", flag, value], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert proc.stderr.strip() == f"error: {flag} {value} is not accepted; accepted: {accepted}"


def test_sf_flags_reach_the_worker_and_win_over_the_scripts_own(tmp_path):
    from agents.integrations.sf_train import parse_cfg

    a = peers.build_parser().parse_args(["--sf-flags", "normalize_input=False", "rollout=64"])
    spec = peers.task_spec("repeat_previous")
    cmd = peers._worker_cmd("sf", spec, a, 0, tmp_path)
    assert cmd[-3:] == ["--sf-flags", "normalize_input=False", "rollout=64"]
    assert "--sf-flags" not in peers._worker_cmd("sb3", spec, a, 0, tmp_path)
    worker = peers.build_parser().parse_args(cmd[3:])
    worker.logdir = str(tmp_path)
    cfg = parse_cfg(peers.sf_argv(spec, 0, worker))
    assert cfg.normalize_input is False and cfg.rollout == 64  # the recipe's rollout is 102
    assert parse_cfg(peers.sf_argv(spec, 0, peers.build_parser().parse_args([]))).normalize_input is True


def test_each_invocation_logs_into_its_own_folder(tmp_path):
    # Two sweeps started in the same second beside each other once shared a folder (and
    # their evaluation event files): each invocation gets a fresh one, named for its --out.
    out = tmp_path / "probe.jsonl"
    first, second = peers.new_workdir(out), peers.new_workdir(out)
    assert first != second and first.is_dir() and second.is_dir()
    assert first.parent == tmp_path and first.name.startswith("logs_probe_")
