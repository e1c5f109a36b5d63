"""benchmarks/head_fit.py: the supervised fit of Ballet's instruction-step move, tiny."""

from __future__ import annotations

import pytest
import torch

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


def test_whole_episodes_end_at_the_instruction():
    obs, label = head_fit.episodes(8, seed=0, whole=True)
    assert obs.shape[:2] == (65, 8)  # 2 dancers x (16 + 16) watch steps, then the instruction
    assert (obs[:-1, :, -1] == 0).all() and (obs[-1, :, -1] > 0).all()
    assert torch.equal(label, head_fit.episodes(8, seed=0)[1])


def test_sequence_fit_reports_held_out_accuracy(capsys):
    head_fit.main(["--sequence", "--steps", "1", "--report", "1", "--held-out", "16",
                   "--overrides", "policy.core_norm=true"])
    out = capsys.readouterr().out
    assert "policy.core_norm=true: 256 episodes, held-out loss" in out
    assert "| policy.core_norm=true | 256 |" in out


def test_sequence_fit_counts_episodes_by_batch(capsys):
    head_fit.main(["--sequence", "--steps", "2", "--report", "1", "--held-out", "16", "--batch", "8",
                   "--overrides", "policy.core_norm=true"])
    out = capsys.readouterr().out
    assert "2 Adam steps of 8 fresh episodes" in out
    assert "policy.core_norm=true: 8 episodes" in out and ": 16 episodes" in out
    assert "| policy.core_norm=true | 16 |" in out


def test_an_empty_batch_is_one_line():
    with pytest.raises(SystemExit, match="--batch 0 is not accepted; accepted: >= 1"):
        head_fit.main(["--sequence", "--batch", "0"])
