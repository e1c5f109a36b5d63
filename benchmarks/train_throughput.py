"""Training throughput: env steps per second of recurrent PPO (acting + update), per core.

    python benchmarks/train_throughput.py [--cores gru,mlp] [--num-envs 256,1024]
        [--updates 2] [--device cpu] [--threads 1] [--nproc 1,2,4] [key=value overrides ...]

For each core and number of envs: one warm-up update, then ``--updates`` timed
updates of the full loop (rollout on the device, GAE, PPO epochs), with the
training config of ``python -m agents.train`` (DelayedMatch) and no curriculum;
docs/benchmarks.md adds ``experiment=default``. Prints a markdown table;
"rollout" is the acting + env share alone. CUDA is measured too when present
and ``--device`` is not given.

``--nproc 1,2,4`` measures data-parallel scaling instead: for each number of ranks
the same measurement runs under ``torchrun --standalone --nproc_per_node=N`` (each
rank ``--num-envs`` envs, one GPU per rank with ``--device cuda``), and the table
gives the env steps per second of all ranks together and the speed-up over 1 rank.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gymnasium  # noqa: F401  (before envs)
import torch

from agents.common.config import compose
from agents.ppo.distributed import Ranks, process_group
from agents.ppo.trainer import Trainer
from memory_modules import CORES

ERROR_LINE = re.compile(r"^\w+(Error|Exception): ")


def measure(core: str, num_envs: int, device: str, updates: int, overrides: list[str],
            ranks: Ranks | None = None) -> dict:
    """Steps per second of the whole loop; ``ranks``: this process's place in a
    data-parallel run (steps then count every rank's)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose([
            f"core={core}", f"algo.num_envs={num_envs}", f"device={device}", "progress=false",
            "curriculum=null",
            "eval.episodes=0", "eval.video_episodes=0", "checkpoint_every=0", "threads=null",
            f"runs_root={tmp}", *overrides,
        ])
        trainer = Trainer(cfg, Path(tmp), None, ranks)
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
        trainer.ranks.barrier()
        t = time.perf_counter()
        trainer.train()
        _sync(device)
        wall = time.perf_counter() - t
        steps = updates * trainer.steps_per_update
        rollout_time = max(wall - update_time[0], 1e-9)
        return {"sps": steps / wall, "rollout_sps": steps / rollout_time, "algo": trainer.algo}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _worker(args, cores: list[str], sizes: list[int]) -> None:
    """One rank under torchrun: rank 0 prints a JSON line per measurement."""
    device = args.device or "cpu"
    with process_group(device) as ranks:
        for core in cores:
            for n in sizes:
                r = measure(core, n, device, args.updates, args.overrides, ranks)
                if ranks.is_main:
                    print(json.dumps({"core": core, "num_envs": n, "sps": r["sps"]}), flush=True)


def _scaling(args, cores: list[str], sizes: list[int]) -> None:
    """The ``--nproc`` table: each number of ranks in a torchrun of its own."""
    device = args.device or "cpu"
    passed = ["--cores", ",".join(cores), "--num-envs", ",".join(map(str, sizes)),
              "--updates", str(args.updates), "--device", device]
    if args.threads:
        passed += ["--threads", str(args.threads)]
    print(f"data-parallel scaling on {device}: envs per rank, torchrun --standalone per row, "
          f"{args.threads or 'OMP_NUM_THREADS / torchrun default'} torch threads per rank\n")
    counts = [int(n) for n in args.nproc.split(",")]
    print("| core | device | envs per rank | ranks | train steps/s (all ranks) | per rank | "
          f"vs {counts[0]} rank(s) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    sps: dict[tuple[str, int, int], float] = {}
    for nproc in counts:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", __file__, "--worker", *passed, *args.overrides]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode or not rows:
            # the ranks' own exception line, not torchrun's report around it
            lines = [ln for ln in proc.stderr.splitlines() if ERROR_LINE.match(ln)]
            tail = (lines or proc.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"| {','.join(cores)} | {device} | | {nproc} | error: {tail} | | |", flush=True)
        for row in rows:
            sps[row["core"], row["num_envs"], nproc] = row["sps"]
    for (core, n, nproc), value in sorted(sps.items()):
        base = sps.get((core, n, counts[0]))
        ratio = f"{value / base:.2f}x" if base else "-"
        print(f"| {core} | {device} | {n} | {nproc} | {value:,.0f} | {value / nproc:,.0f} | "
              f"{ratio} |")

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", default=",".join(CORES))
    parser.add_argument("--num-envs", default="256,1024")
    parser.add_argument("--updates", type=int, default=2)
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the rows here")
    parser.add_argument("--nproc", default=None,
                        help="numbers of ranks to compare, e.g. 1,2,4 (runs torchrun)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. algo.update_epochs=2")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker or args.nproc:
        cores, sizes = args.cores.split(","), [int(n) for n in args.num_envs.split(",")]
        return (_worker if args.worker else _scaling)(args, cores, sizes)
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
