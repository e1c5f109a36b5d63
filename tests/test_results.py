"""results.json: the row a training run leaves behind for agents.report."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

from agents.common.config import compose
from agents.common.results import RESULTS, eval_modes, memory_type, read_results
from agents.ppo import trainer as train_mod

ROOT = Path(__file__).resolve().parent.parent
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


def _module(args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_decision_transformer_sweep_rows(tmp_path):
    """A multirun of agents.train_dt, plain DT against DT-Mem at context 2 on delay 2."""
    _module(["agents.collect", "env=delayed_match", "env.delay=2", "episodes=32",
             f"out={tmp_path / 'ds'}", "progress=false"], tmp_path)
    _module(["agents.train_dt", "-m", "memory=true,false", f"dataset={tmp_path / 'ds'}",
             "context=2", "train.updates=2", "train.batch_size=8", "model.d_model=16",
             "core.hidden_size=16", "eval.episodes=8", "eval.num_envs=8", "progress=false",
             f"runs_root={tmp_path / 'runs'}"], tmp_path)
    (sweep,) = (tmp_path / "runs" / "dt").iterdir()
    assert sorted(p.name for p in sweep.iterdir()) == ["memory=false", "memory=true", "multirun.yaml"]
    assert OmegaConf.load(sweep / "multirun.yaml").hydra.job.name == "train_dt"  # the command's
    plain = read_results(sweep / "memory=false" / RESULTS)
    dtmem = read_results(sweep / "memory=true" / RESULTS)
    assert plain["algo"] == dtmem["algo"] == "dt" and plain["env_steps"] is None
    assert (plain["core"], dtmem["core"]) == ("dt", "dt-mem")
    assert plain["updates"] == 2 and plain["eval"]["greedy"]["episodes"] == 8
    assert plain["memory_horizon"] == dtmem["memory_horizon"] == 4
    assert plain["context_length"] == 2 and plain["memory"] == "long-term"
    assert math.isinf(dtmem["context_length"]) and dtmem["memory"] == "short-term"
