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
    knob, core, device, Ctrl-C) removes the folder again, and the parents it made.

    Runs started in the same second (two jobs of ``benchmarks.acceptance --jobs 2``) get
    ``<timestamp>``, ``<timestamp>-1``, ...: each folder is claimed by ``mkdir`` itself, not
    by a look beforehand that another process can overtake. A failed start removes only
    its own folder and the parents it made that are still empty."""
    # In a multirun, the job's folder is named by its overrides (agents.common.sweep).
    base = sweep_run_dir() or Path(cfg.runs_root) / str(cfg.name) / datetime.now().strftime(
        "%Y%m%d-%H%M%S")
    made = []  # the parents this run made, outermost first
    for parent in reversed(base.parents):
        if not parent.exists():
            try:
                parent.mkdir()
                made.append(parent)
            except FileExistsError:  # another run made it meanwhile
                pass
    run_dir, i = base, 0
    while True:
        try:
            run_dir.mkdir()
            break
        except FileExistsError:
            i += 1
            run_dir = base.with_name(f"{base.name}-{i}")
    try:
        yield run_dir
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        for parent in reversed(made):
            try:
                parent.rmdir()
            except OSError:  # not empty: another run's folder is in it
                break
        raise
