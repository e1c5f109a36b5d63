"""agents.report on a real (tiny) sweep: the table, the figures, partial sweeps."""

from __future__ import annotations

import os
import shutil
import time

import matplotlib.pyplot as plt
import numpy as np
from torch.utils.tensorboard import SummaryWriter

from agents.common import report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURES = report.FIGURES


def test_report_prints_the_table_and_writes_the_figures(tiny_sweep, tmp_path, capsys):
    _, sweep, _ = tiny_sweep
    assert report.main([str(sweep), "--out", str(tmp_path / "out"), "--reps", "200"]) == 0
    text = capsys.readouterr().out
    assert "4 with results, 0 without, 0 not started (4 planned)." in text
    lines = text.splitlines()
    head = next(x for x in lines if x.startswith("| core (K)"))
    assert head == "| core (K) | DelayedMatch delay=2 (xi=4) | DelayedMatch delay=4 (xi=6) |"
    mlp = next(x for x in lines if x.startswith("| mlp (K=1)"))
    gru = next(x for x in lines if x.startswith("| gru (K=inf)"))
    # one seed per cell; the memoryless core is long-term-labelled on every task
    assert mlp.count("\u2020 n=1") == 2 and "\u2020" not in gru and gru.count("n=1") == 2
    assert (tmp_path / "out" / "report.md").read_text() == text
    assert "![horizon](horizon.png)" in text
    for name in FIGURES:
        path = tmp_path / "out" / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        img = plt.imread(path)
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300
        assert img[..., :3].std() > 0.05, f"{name} is blank"


def test_partial_sweep_lists_runs_without_results(tiny_sweep, tmp_path, capsys):
    _, sweep, _ = tiny_sweep
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    (copy / "core=gru,env.delay=4" / "results.json").unlink()  # as while it trains
    shutil.rmtree(copy / "core=gru,env.delay=2")  # as before its job starts
    stopped = copy / "core=mlp,env.delay=4"
    (stopped / "results.json").unlink()
    old = time.time() - 2 * report.RUNNING_WITHIN_S
    for path in stopped.rglob("*"):
        os.utime(path, (old, old))
    assert report.main([str(copy), "--reps", "100"]) == 0
    text = capsys.readouterr().out
    assert "1 with results, 2 without, 1 not started (4 planned)." in text
    assert f"- `{copy / 'core=gru,env.delay=4'}`: running" in text
    assert f"- `{stopped}`: failed or stopped" in text
    assert "| mlp (K=1) | 0." in text  # the finished runs still make the table
    assert all((copy / "report" / name).is_file() for name in FIGURES)


def test_markdown_elsewhere_links_the_figures(tiny_sweep, tmp_path, capsys):
    _, sweep, _ = tiny_sweep
    md = tmp_path / "docs" / "results.md"
    report.main([str(sweep), "--out", str(tmp_path / "docs" / "results"), "--md", str(md),
                 "--reps", "100"])
    assert "![heatmap](results/heatmap.png)" in md.read_text() == capsys.readouterr().out


def test_report_of_a_folder_without_runs(tmp_path, capsys):
    assert report.main([str(tmp_path)]) == 0
    assert "0 with results, 0 without" in capsys.readouterr().out


def test_learning_curve_counts_easier_curriculum_stages_as_zero(tmp_path):
    writer = SummaryWriter(str(tmp_path / "tb"))
    for step, (success, delay) in enumerate([(0.9, 4), (0.95, 8), (0.3, 16), (0.8, 16)]):
        writer.add_scalar("charts/success_rate", success, 100 * (step + 1))
        writer.add_scalar("curriculum/delay", delay, 100 * (step + 1))
    writer.close()
    row = {"path": str(tmp_path), "curriculum": {"knob": "delay", "values": [4, 8, 16]},
           "env_knobs": {"delay": 16}}
    steps, values = report.success_curve(row)
    assert steps.tolist() == [100, 200, 300, 400]
    assert np.allclose(values, [0.0, 0.0, 0.3, 0.8])
    steps, values = report.success_curve({**row, "curriculum": None})
    assert np.allclose(values, [0.9, 0.95, 0.3, 0.8])
