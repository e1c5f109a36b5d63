"""One PPO update of committed experiments with each LSTM/GRU sequence layout.

    python benchmarks/update_paths.py [--experiments gru_minigrid_memory gru_repeat_first]
        [--paths padded auto] [--kernels native python] [--precisions float32 bfloat16]
        [--repeats 6] [--threads 1] [key=value ...]

For each experiment: the trainer as ``python -m agents.train experiment=<name>``
builds it, collects one rollout, and times ``PPO.update`` on that rollout with
``policy.core.sequence_path`` set to each of ``--paths`` in turn, ``--repeats``
times round (after one untimed round). Prints the median per path, and which
path "auto" took (memory_modules/rnn.py). The weights move with every update;
the rollout stays the same. ``key=value`` overrides apply to every experiment
(``core=lstm``: the same experiments with an LSTM). ``--kernels`` times each path
once per GRU scan kernel (memory_modules/gru_native.py: the C++ step loops, or the
Python ones), and ``--precisions`` once per ``algo.precision`` (agents/ppo/learner.py),
columns ``<path>/<kernel>/<precision>`` (each part only where more than one is asked).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from agents.common.config import compose
from agents.ppo.learner import PRECISIONS
from agents.ppo.trainer import Trainer
from memory_modules import gru_native
from memory_modules.rnn import SEQUENCE_PATHS

DEFAULT_EXPERIMENTS = ("gru_minigrid_memory", "gru_ballet", "gru_hidden_objects", "gru_tmaze",
                       "gru_repeat_first", "gru_delayed_match")


# The core's method behind each layout (memory_modules/rnn.py); "plain": no episode
# starts inside the sequences, one fused call.
LAYOUTS = {"_segments_packed": "packed", "_segments_padded": "padded", "_run_scan": "scan",
           "_run_plain": "plain"}


def _noting(method, layout: str, taken: list[set[str] | None]):
    """``method``, adding ``layout`` to ``taken[0]`` while that is a set (not None)."""
    def call(*args):
        if taken[0] is not None:
            taken[0].add(layout)
        return method(*args)
    return call


def use_kernel(kernel: str) -> None:
    """Run the GRU scan with ``kernel`` ("native" or "python") from now on; the C++ loops
    are loaded here, not inside the next timed update."""
    os.environ[gru_native.KERNEL_ENV] = kernel
    gru_native.loops.cache_clear()
    gru_native.loops()


def measure(experiment: str, paths: list[str], repeats: int, overrides: list[str] = (),
            kernels: list[str] = ("native",), precisions: list[str] = ("float32",)) -> dict:
    """Median seconds of one update per (path, kernel, precision) column, and the paths
    "auto" took."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose([f"experiment={experiment}", "progress=false", "curriculum=null",
                       "eval.episodes=0", "eval.video_episodes=0", "checkpoint_every=0",
                       "threads=null", f"runs_root={tmp}", *overrides])
        trainer = Trainer(cfg, Path(tmp), None)
        core = trainer.policy.core
        if not hasattr(core, "sequence_path"):
            raise ValueError(f"{experiment}: core {cfg.core.name!r} has no sequence_path (lstm, gru)")
        columns = [(p, k, x) for p in paths for k in kernels for x in precisions]
        times: dict[tuple[str, str, str], list[float]] = {c: [] for c in columns}
        auto_took: set[str] = set()  # the layouts the timed updates under "auto" ran
        taken: list[set[str] | None] = [None]  # where the layouts called now go (None: nowhere)
        for method, layout in LAYOUTS.items():
            setattr(core, method, _noting(getattr(core, method), layout, taken))
        real_update = trainer.ppo.update

        def timed(rollout):
            for rep in range(repeats + 1):
                for path, kernel, precision in columns:
                    core.sequence_path = path
                    use_kernel(kernel)
                    trainer.ppo.cfg.precision = precision
                    taken[0] = auto_took if path == "auto" else None
                    t = time.perf_counter()
                    real_update(rollout)
                    taken[0] = None
                    if rep:  # the first round warms up
                        times[path, kernel, precision].append(time.perf_counter() - t)
            core.sequence_path = "auto"
            trainer.ppo.cfg.precision = cfg.algo.precision
            return real_update(rollout)

        trainer.ppo.update = timed  # type: ignore[method-assign]
        trainer.num_updates = 1
        before = os.environ.get(gru_native.KERNEL_ENV)
        try:
            trainer.train()
        finally:  # the kernel this process had before
            os.environ.pop(gru_native.KERNEL_ENV, None)
            if before is not None:
                os.environ[gru_native.KERNEL_ENV] = before
            gru_native.loops.cache_clear()
        return {"median": {p: statistics.median(v) for p, v in times.items()},
                "auto": sorted(auto_took),
                "shape": (trainer.algo.num_envs, trainer.algo.num_steps)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", nargs="+", default=list(DEFAULT_EXPERIMENTS))
    parser.add_argument("--paths", nargs="+", default=["padded", "auto"], choices=SEQUENCE_PATHS)
    parser.add_argument("--kernels", nargs="+", default=["native"], choices=gru_native.KERNELS)
    parser.add_argument("--precisions", nargs="+", default=["float32"], choices=list(PRECISIONS))
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("overrides", nargs="*", help="key=value for every experiment, e.g. core=lstm")
    a = parser.parse_args(argv)
    if a.repeats < 1:
        parser.error(f"--repeats={a.repeats} must be at least 1")
    torch.set_num_threads(a.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {a.threads} torch thread(s), "
          f"load average {load:.1f}; median of {a.repeats} alternated updates; overrides: "
          f"{' '.join(a.overrides) or 'none'}\n")
    columns = [(p, k, x) for p in a.paths for k in a.kernels for x in a.precisions]
    several = (True, len(a.kernels) > 1, len(a.precisions) > 1)
    names = ["/".join(part for part, shown in zip(c, several, strict=True) if shown) for c in columns]
    print("| experiment | copies x steps | " + " | ".join(f"{n} (ms)" for n in names)
          + " | auto took |")
    print("|---|---|" + "---:|" * len(columns) + "---|")
    for exp in a.experiments:
        r = measure(exp, a.paths, a.repeats, a.overrides, a.kernels, a.precisions)
        cells = " | ".join(f"{1000 * r['median'][c]:.0f}" for c in columns)
        print(f"| `{exp}` | {r['shape'][0]} x {r['shape'][1]} | {cells} | "
              f"{', '.join(r['auto']) or '-'} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
