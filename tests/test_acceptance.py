"""benchmarks/acceptance.py: controls drop foreign core options; the table labels runs."""

from __future__ import annotations

from agents.common.config import compose
from agents.ppo import trainer as train_mod
from benchmarks.acceptance import core_overrides, table


def test_control_keeps_only_the_options_the_mlp_takes():
    over = core_overrides("hcam_associative_recall", "mlp")
    assert over[0] == "core=mlp" and "~core.chunk_size" in over and "~core.top_k" in over
    cfg = compose(["experiment=hcam_associative_recall", *over])
    assert set(cfg.core) == {"name", "hidden_size", "num_layers"}
    assert core_overrides("gru_tmaze", "mlp") == ["core=mlp"]


def test_table_labels_each_run_with_its_level_horizon_and_chance(tmp_path):
    summary = train_mod.run(compose([
        f"runs_root={tmp_path}", "env=tmaze", "env.length=5", "algo.num_envs=8",
        "algo.num_steps=12", "algo.seq_len=12", "algo.num_minibatches=1", "total_steps=96",
        "progress=false", "checkpoint_every=0", "eval.episodes=8", "eval.num_envs=8",
        "eval.video_episodes=0", "threads=1",
    ]))
    row = {"experiment": "gru_tmaze", "seed": 0, "wall_s": 6.0, "eval": summary["eval"]}
    failed = {"experiment": "gru_tmaze", "seed": 1, "command": "-m agents.train ...",
              "error": ["boom"]}
    text = table([row, failed])
    line = next(ln for ln in text.splitlines() if ln.startswith("| gru_tmaze"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:7] == ["gru_tmaze", "gru", "PassiveTMaze-v0 (length=5)", "6", "inf", "0.5", "1"]
    assert "failed: -m agents.train ...: ['boom']" in text
