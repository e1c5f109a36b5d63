"""One PPO update of committed experiments with each LSTM/GRU sequence layout.

    python benchmarks/update_paths.py [--experiments gru_minigrid_memory gru_repeat_first]
        [--paths padded auto] [--repeats 6] [--threads 1] [key=value ...]

For each experiment: the trainer as ``python -m agents.train experiment=<name>``
builds it, collects one rollout, and times ``PPO.update`` on that rollout with
``policy.core.sequence_path`` set to each of ``--paths`` in turn, ``--repeats``
times round (after one untimed round). Prints the median per path, and which
path "auto" took (memory_modules/rnn.py). The weights move with every update;
the rollout stays the same. ``key=value`` overrides apply to every experiment
(``core=lstm``: the same experiments with an LSTM).
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
from agents.ppo.trainer import Trainer
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


def measure(experiment: str, paths: list[str], repeats: int, overrides: list[str] = ()) -> dict:
    """Median seconds of one update per path, and the paths "auto" took."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose([f"experiment={experiment}", "progress=false", "curriculum=null",
                       "eval.episodes=0", "eval.video_episodes=0", "checkpoint_every=0",
                       "threads=null", f"runs_root={tmp}", *overrides])
        trainer = Trainer(cfg, Path(tmp), None)
        core = trainer.policy.core
        if not hasattr(core, "sequence_path"):
            raise ValueError(f"{experiment}: core {cfg.core.name!r} has no sequence_path (lstm, gru)")
        times: dict[str, list[float]] = {p: [] for p in paths}
        auto_took: set[str] = set()  # the layouts the timed updates under "auto" ran
        taken: list[set[str] | None] = [None]  # where the layouts called now go (None: nowhere)
        for method, layout in LAYOUTS.items():
            setattr(core, method, _noting(getattr(core, method), layout, taken))
        real_update = trainer.ppo.update

        def timed(rollout):
            for rep in range(repeats + 1):
                for path in paths:
                    core.sequence_path = path
                    taken[0] = auto_took if path == "auto" else None
                    t = time.perf_counter()
                    real_update(rollout)
                    taken[0] = None
                    if rep:  # the first round warms up
                        times[path].append(time.perf_counter() - t)
            core.sequence_path = "auto"
            return real_update(rollout)

        trainer.ppo.update = timed  # type: ignore[method-assign]
        trainer.num_updates = 1
        trainer.train()
        return {"median": {p: statistics.median(v) for p, v in times.items()},
                "auto": sorted(auto_took),
                "shape": (trainer.algo.num_envs, trainer.algo.num_steps)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", nargs="+", default=list(DEFAULT_EXPERIMENTS))
    parser.add_argument("--paths", nargs="+", default=["padded", "auto"], choices=SEQUENCE_PATHS)
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
    print("| experiment | copies x steps | " + " | ".join(f"{p} (ms)" for p in a.paths)
          + " | auto took |")
    print("|---|---|" + "---:|" * len(a.paths) + "---|")
    for exp in a.experiments:
        r = measure(exp, a.paths, a.repeats, a.overrides)
        cells = " | ".join(f"{1000 * r['median'][p]:.0f}" for p in a.paths)
        print(f"| `{exp}` | {r['shape'][0]} x {r['shape'][1]} | {cells} | "
              f"{', '.join(r['auto']) or '-'} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
