"""Training throughput: env steps per second of recurrent PPO (acting + update), per core.

    python benchmarks/train_throughput.py [--cores gru,mlp] [--num-envs 256,1024]
        [--updates 2] [--device cpu] [--threads 1] [key=value config overrides ...]

For each core and number of envs: one warm-up update, then ``--updates`` timed
updates of the full loop (rollout on the device, GAE, PPO epochs), with the
training config of ``python -m agents.train`` (DelayedMatch) and no curriculum;
docs/benchmarks.md adds ``experiment=default``. Prints a markdown table;
"rollout" is the acting + env share alone. CUDA is measured too when present
and ``--device`` is not given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import gymnasium  # noqa: F401  (before envs)
import torch

from agents.config import compose
from agents.train import Trainer
from memory_modules import CORES


def measure(core: str, num_envs: int, device: str, updates: int, overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose([
            f"core={core}", f"algo.num_envs={num_envs}", f"device={device}", "progress=false",
            "curriculum=null",
            "eval.episodes=0", "eval.video_episodes=0", "checkpoint_every=0", "threads=null",
            f"runs_root={tmp}", *overrides,
        ])
        trainer = Trainer(cfg, Path(tmp), None)
        update_time = [0.0]
        real_update = trainer.ppo.update

        def timed_update(rollout):
            _sync(device)
            t = time.perf_counter()
            out = real_update(rollout)
            _sync(device)
            update_time[0] += time.perf_counter() - t
            return out

        trainer.ppo.update = timed_update  # type: ignore[method-assign]
        trainer.num_updates = 1
        trainer.train()  # warm-up: allocator, kernels, lazy imports
        update_time[0] = 0.0
        trainer.num_updates = 1 + updates
        _sync(device)
        t = time.perf_counter()
        trainer.train()
        _sync(device)
        wall = time.perf_counter() - t
        steps = updates * trainer.algo.steps_per_update
        rollout_time = max(wall - update_time[0], 1e-9)
        return {"sps": steps / wall, "rollout_sps": steps / rollout_time, "algo": trainer.algo}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", default=",".join(CORES))
    parser.add_argument("--num-envs", default="256,1024")
    parser.add_argument("--updates", type=int, default=2)
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the rows here")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. algo.update_epochs=2")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    sizes = [int(n) for n in args.num_envs.split(",")]
    cores = args.cores.split(",")

    cfg = compose([f"core={cores[0]}", *args.overrides])
    algo = cfg.algo
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, "
          f"{torch.get_num_threads()} torch threads, load average {load:.1f}")
    print(f"DelayedMatch delay {cfg.env.delay}, T={algo.num_steps}, seq_len={algo.seq_len}, "
          f"epochs={algo.update_epochs}, minibatches={algo.num_minibatches}; "
          f"overrides: {' '.join(args.overrides) or 'none'}\n")
    print("| core | device | num_envs | train steps/s | rollout steps/s |")
    print("| --- | --- | ---: | ---: | ---: |")
    rows = []
    for device in devices:
        for core in cores:
            for n in sizes:
                try:
                    r = measure(core, n, device, args.updates, args.overrides)
                except Exception as err:  # a core still being written, out of memory...
                    print(f"| {core} | {device} | {n} | error: {type(err).__name__}: {err} | |")
                    rows.append({"core": core, "device": device, "num_envs": n,
                                 "error": f"{type(err).__name__}: {str(err)[:200]}"})
                    continue
                print(f"| {core} | {device} | {n} | {r['sps']:,.0f} | {r['rollout_sps']:,.0f} |",
                      flush=True)
                rows.append({"core": core, "device": device, "num_envs": n, "sps": r["sps"],
                             "rollout_sps": r["rollout_sps"]})
    if args.json:
        Path(args.json).write_text(json.dumps({"overrides": args.overrides, "rows": rows}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
