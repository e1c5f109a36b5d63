"""Run folders: ``<runs_root>/<name>/<timestamp>/`` (in a multirun, the job's folder of
:mod:`agents.common.sweep`), kept only once a run has started."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig

from agents.common.sweep import sweep_run_dir


@contextmanager
def new_run_dir(cfg: DictConfig) -> Iterator[Path]:
    """``with new_run_dir(cfg) as run_dir: <build the run>``: a start that fails there (bad
    knob, core, device, Ctrl-C) removes the folder again, and the parents it made."""
    # In a multirun, the job's folder is named by its overrides (agents.common.sweep).
    base = sweep_run_dir() or Path(cfg.runs_root) / str(cfg.name) / datetime.now().strftime(
        "%Y%m%d-%H%M%S")
    run_dir, i = base, 0
    while run_dir.exists():
        i += 1
        run_dir = base.with_name(f"{base.name}-{i}")
    made = run_dir
    while not made.parent.exists():
        made = made.parent
    run_dir.mkdir(parents=True)
    try:
        yield run_dir
    except BaseException:
        shutil.rmtree(made, ignore_errors=True)
        raise
