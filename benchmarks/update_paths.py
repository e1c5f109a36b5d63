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
        taken: set[str] = set()
        real_update = trainer.ppo.update

        def note(name):
            real = getattr(core, name)
            return lambda *a: taken.add(name) or real(*a)

        def timed(rollout):
            for name in ("_segments_packed", "_segments_padded", "_run_scan", "_run_plain"):
                setattr(core, name, note(name))
            for rep in range(repeats + 1):
                for path in paths:
                    core.sequence_path = path
                    t = time.perf_counter()
                    real_update(rollout)
                    if rep:  # the first round warms up
                        times[path].append(time.perf_counter() - t)
                    if path == "auto" and rep == 0:
                        auto_took = sorted(taken)
                    taken.clear()
            core.sequence_path = "auto"
            timed.auto = auto_took if "auto" in paths else []
            return real_update(rollout)

        trainer.ppo.update = timed  # type: ignore[method-assign]
        trainer.num_updates = 1
        trainer.train()
        return {"median": {p: statistics.median(v) for p, v in times.items()},
                "auto": [n.strip("_").replace("segments_", "") for n in timed.auto],
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
