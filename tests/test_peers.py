"""benchmarks/peers.py reads each framework's own TensorBoard curves (real event files here)."""

from __future__ import annotations

import pytest
from torch.utils.tensorboard import SummaryWriter

from benchmarks.peers import success_curve, summarize


def _write(logdir, points, stages=None):
    w = SummaryWriter(logdir)
    for i, (step, value) in enumerate(points):
        w.add_scalar("charts/success_rate", value, step, walltime=100.0 + i)
        if stages is not None:
            w.add_scalar("curriculum/delay", stages[i], step, walltime=100.0 + i)
    w.close()


def test_success_before_the_last_curriculum_stage_counts_as_zero(tmp_path):
    _write(str(tmp_path), [(1000, 0.96), (2000, 0.97), (3000, 0.5), (4000, 0.99)],
           stages=[4, 16, 32, 32])
    curve = success_curve("recall", "delayed_match", str(tmp_path))
    assert [v for _, _, v in curve] == pytest.approx([0.0, 0.0, 0.5, 0.99])
    res = summarize(curve, launched=90.0, target=0.95)
    assert res["to_target"] == 13.0  # the 4th point: wall 103, launched at 90
    assert res["final"] == pytest.approx(0.99) and res["steps"] == 4000
    assert res["sps"] == (4000 - 1000) / 3.0


def test_without_a_curriculum_the_curve_is_as_logged(tmp_path):
    _write(str(tmp_path), [(100, 0.2), (200, 0.96)])
    curve = success_curve("recall", "nback", str(tmp_path))
    assert [v for _, _, v in curve] == pytest.approx([0.2, 0.96])
    assert summarize(curve, launched=100.0, target=0.95, budget=0.5)["to_target"] is None
