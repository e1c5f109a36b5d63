"""results.json: the row a training run leaves behind for agents.report."""

from __future__ import annotations

import json
import math

from agents import train as train_mod
from agents.config import compose
from agents.results import RESULTS, eval_modes, memory_type, read_results

TINY = ["algo.num_envs=8", "algo.num_steps=16", "algo.seq_len=16", "algo.num_minibatches=1",
        "algo.update_epochs=1", "total_steps=256", "progress=false", "eval.episodes=16",
        "eval.num_envs=16", "eval.video_episodes=0", "threads=1"]


def test_row_of_a_run_with_a_windowed_core_and_a_curriculum(tmp_path):
    # GTrXL with one layer over 2 cached steps reaches K = 3 steps; delay 4 needs xi = 6
    cfg = compose([f"runs_root={tmp_path}", *TINY, "core=gtrxl", "core.window=2",
                   "core.num_layers=1", "core.hidden_size=16", "core.num_heads=2",
                   "env.delay=4", "curriculum={knob: delay, values: [2, 4], threshold: 2.0}",
                   "seed=5"])
    summary = train_mod.run(cfg)
    path = tmp_path / "run"
    (run_dir,) = path.iterdir()
    row = read_results(run_dir / RESULTS)
    assert json.loads((run_dir / RESULTS).read_text())["context_length"] == 3
    assert row["run_dir"] == summary["run_dir"] == str(run_dir)
    assert row["env"] == "recall/DelayedMatch-v0" and row["env_knobs"]["delay"] == 4
    assert row["core"] == "gtrxl" and row["core_options"]["window"] == 2
    assert 0 < row["core_params"] < row["policy_params"]
    assert row["seed"] == 5 and row["env_steps"] == 256 == row["budget_steps"]
    assert row["updates"] == 2 and row["wall_time_s"] > 0 and row["resumed"] is False
    # the threshold is out of reach: training ended in the curriculum's first stage
    assert row["curriculum"]["values"] == [2, 4] and row["curriculum_value"] == 2
    greedy = row["eval"]["greedy"]
    assert greedy["episodes"] == 16 and greedy["success_rate"] == summary["eval"]["success_rate"]
    assert row["memory_horizon"] == 6 and row["context_length"] == 3
    assert row["memory"] == "long-term" and row["chance"] == 0.25


def test_recurrent_cores_have_unbounded_context_in_the_row(tmp_path):
    cfg = compose([f"runs_root={tmp_path}", *TINY, "core=gru", "core.hidden_size=16",
                   "env=nback", "curriculum=null", "eval.episodes=0"])
    train_mod.run(cfg)
    (run_dir,) = (tmp_path / "run").iterdir()
    text = (run_dir / RESULTS).read_text()
    assert '"context_length": "inf"' in text  # JSON has no infinity
    row = read_results(run_dir / RESULTS)
    assert math.isinf(row["context_length"]) and row["memory"] == "short-term"
    assert row["memory_horizon"] == 3 and row["eval"] == {} and row["curriculum"] is None


def test_eval_modes_reads_both_result_shapes():
    old = {"success_rate": 0.5, "mean_return": 0.5, "episodes": 8, "env": "e", "run_dir": "r"}
    assert eval_modes(old) == {"greedy": {"success_rate": 0.5, "mean_return": 0.5, "episodes": 8}}
    mode = {"success_rate": 1.0, "mean_return": 1.0, "episodes": 4, "mean_length": 3.0}
    new = {"greedy": mode, "sampled": {**mode, "success_rate": 0.75}, "env": "e", "core": "c"}
    assert eval_modes(new) == {"greedy": mode, "sampled": {**mode, "success_rate": 0.75}}
    assert eval_modes(None) == {}
    assert memory_type(18, float("inf")) == "short-term"
    assert memory_type(18, 18) == "short-term" and memory_type(19, 18) == "long-term"
