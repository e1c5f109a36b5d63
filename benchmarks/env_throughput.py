"""Environment steps per second: recall-rl's batched simulators vs gymnasium's SyncVectorEnv.

    python benchmarks/env_throughput.py [--envs recall/DelayedMatch-v0 ...] [--seconds 1.0]

For each task and num_envs in (1, 64, 1024, 16384), steps the batched env with
uniform random actions (drawn ahead of time, so the env alone is timed) on CPU
and, when present, CUDA; beside it gymnasium's SyncVectorEnv over the single
env (up to 1024 copies). The batched env runs with ``check_actions=False``, the
trainer's setting (the range check costs a host sync on CUDA). Prints a
markdown table.
"""

from __future__ import annotations

import argparse
import platform
import time

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

import envs

NUM_ENVS = (1, 64, 1024, 16384)
SYNC_MAX = 1024
ACTION_BANK = 64


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batched_sps(env_id: str, n: int, device: str, seconds: float) -> float:
    env = envs.make_vec(env_id, n, device=device, check_actions=False)
    env.reset(seed=0)
    dev = torch.device(device)
    bank = torch.randint(0, env.single_action_space.n, (ACTION_BANK, n), device=dev)
    for i in range(10):  # warm-up
        env.step(bank[i])
    _sync(dev)
    steps, start = 0, time.perf_counter()
    while True:
        for i in range(ACTION_BANK):
            env.step(bank[i])
        steps += ACTION_BANK
        _sync(dev)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return steps * n / elapsed


def sync_vector_sps(env_id: str, n: int, seconds: float) -> float:
    vec = gym.vector.SyncVectorEnv([lambda: gym.make(env_id) for _ in range(n)])
    vec.reset(seed=0)
    rng = np.random.default_rng(0)
    bank = rng.integers(0, vec.single_action_space.n, size=(ACTION_BANK, n))
    steps, start = 0, time.perf_counter()
    while True:
        for i in range(ACTION_BANK):
            vec.step(bank[i])
            steps += 1
            if steps % 8 == 0 and time.perf_counter() - start >= seconds:
                vec.close()
                return steps * n / (time.perf_counter() - start)


def fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if x >= 1e6:
        return f"{x / 1e6:.2f} M"
    if x >= 1e3:
        return f"{x / 1e3:.1f} k"
    return f"{x:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="*", default=list(envs.ENV_IDS))
    parser.add_argument("--num-envs", nargs="*", type=int, default=list(NUM_ENVS))
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    parser.add_argument("--no-sync", action="store_true", help="skip the SyncVectorEnv baseline")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    jobs = [(e, n) for e in args.envs for n in args.num_envs]
    for env_id, n in tqdm(jobs, desc="env throughput"):
        row = {"env": env_id, "num_envs": n}
        for dev in devices:
            row[dev] = batched_sps(env_id, n, dev, args.seconds)
        if not args.no_sync and n <= SYNC_MAX:
            row["sync"] = sync_vector_sps(env_id, n, args.seconds)
        rows.append(row)

    cpu_name = platform.processor() or platform.machine()
    print(f"\nMachine: {torch.get_num_threads()} torch threads, {cpu_name}, torch {torch.__version__}"
          + (f", GPU {torch.cuda.get_device_name()}" if "cuda" in devices else ""))
    head = "| env | num_envs | " + " | ".join(f"batched {d} (steps/s)" for d in devices)
    head += " | SyncVectorEnv (steps/s) | speed-up vs Sync (cpu) |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        sync = r.get("sync")
        ratio = f"{r['cpu'] / sync:.0f}x" if sync else "-"
        cells = " | ".join(fmt(r[d]) for d in devices)
        print(f"| {r['env']} | {r['num_envs']} | {cells} | {fmt(sync)} | {ratio} |")


if __name__ == "__main__":
    main()
