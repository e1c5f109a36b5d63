"""Run folders (agents/common/run_dir.py): one per run, even for runs started in the same
second by several processes, and a failed start removes only what it made."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

import agents.common.run_dir as run_dir_mod
from agents.common.run_dir import new_run_dir


class _SameSecond:
    @staticmethod
    def now():
        import datetime

        return datetime.datetime(2026, 12, 8, 0, 15, 52)


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.setattr(run_dir_mod, "datetime", _SameSecond)
    return OmegaConf.create({"runs_root": str(tmp_path / "runs"), "name": "exp"})


def test_runs_in_the_same_second_get_their_own_folders(cfg, tmp_path):
    with new_run_dir(cfg) as a, new_run_dir(cfg) as b, new_run_dir(cfg) as c:
        pass
    base = tmp_path / "runs" / "exp" / "20261208-001552"
    assert (a, b, c) == (base, base.with_name(base.name + "-1"), base.with_name(base.name + "-2"))
    assert all(p.is_dir() for p in (a, b, c))


def test_a_folder_made_by_another_process_after_the_look_is_not_reused(cfg, tmp_path, monkeypatch):
    """Another process made the same folder (and its parents) between a look and the mkdir:
    exists() still says no, mkdir finds it there; the run takes the next name."""
    base = tmp_path / "runs" / "exp" / "20261208-001552"
    base.mkdir(parents=True)
    (base / "theirs.txt").write_text("another run's file")
    real_exists = Path.exists
    runs = tmp_path / "runs"
    monkeypatch.setattr(Path, "exists", lambda self: False if self.is_relative_to(runs) else real_exists(self))
    with new_run_dir(cfg) as mine:
        assert mine == base.with_name(base.name + "-1")
    assert (base / "theirs.txt").read_text() == "another run's file"


def test_a_failed_start_removes_its_folder_and_the_empty_parents_it_made(cfg, tmp_path):
    with pytest.raises(RuntimeError, match="bad knob"), new_run_dir(cfg) as run_dir:
        assert run_dir.is_dir()
        raise RuntimeError("bad knob")
    assert not (tmp_path / "runs").exists()


def test_a_failed_start_leaves_a_parent_another_run_now_uses(cfg, tmp_path):
    with pytest.raises(KeyboardInterrupt), new_run_dir(cfg) as mine:
        # another run, started meanwhile, put its folder beside this one
        with new_run_dir(cfg) as theirs:
            (theirs / "config.yaml").write_text("seed: 1\n")
        raise KeyboardInterrupt
    assert not mine.exists()
    assert (theirs / "config.yaml").read_text() == "seed: 1\n"
