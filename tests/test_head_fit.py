"""benchmarks/head_fit.py: the supervised fit of Ballet's instruction-step move, tiny."""

from __future__ import annotations

import pytest

from benchmarks import head_fit


def test_labels_head_for_a_dancer_the_view_shows():
    obs, label = head_fit.episodes(64, seed=0)
    assert (obs[:, -1] > 0).all()  # the instruction is showing
    assert label.shape == (64,) and ((label >= 0) & (label < 8)).all()


def test_prints_one_row_per_override_group(capsys):
    head_fit.main(["--copies", "600", "--steps", "2", "--overrides", "--overrides", "policy.core_norm=true"])
    out = capsys.readouterr().out
    assert "| (as committed) |" in out and "| policy.core_norm=true |" in out
    assert "the label's marginal: loss" in out


def test_too_few_copies_is_one_line():
    with pytest.raises(SystemExit, match="--copies 100 is not accepted; accepted: > 512"):
        head_fit.main(["--copies", "100"])
