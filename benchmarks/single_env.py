"""One env's steps per second: recall-rl's gymnasium env beside popgym's numpy env.

    python benchmarks/single_env.py [--envs recall/RepeatPrevious-v0 ...] [--steps 20000]
        [--repeats 5] [--levels]

Every recall task at its suite level (the class defaults, as in ``configs/env``;
``--levels`` adds the card tasks' medium and hard), stepped with uniform random
actions drawn before the timing and reset at every episode end, torch on one
thread. Beside each card task, popgym 1.0.7's own numpy env of the same task and
level. Both are timed through ``gymnasium.make`` (what SB3, RLlib and CleanRL
plug in: ``PassiveEnvChecker`` and ``OrderEnforcing`` around the env) and
unwrapped, alternating ours and theirs within each repeat.

Figures are the best of ``--repeats`` runs: wall-clock steps/s, and steps per
second of this thread's CPU time (``time.thread_time``), which moves less when
other processes share the cores. A markdown table, with the machine, load
average and commit, goes to stdout.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time

import gymnasium as gym
import numpy as np
import torch

import envs

CARD_TASKS = ("RepeatFirst", "RepeatPrevious", "CountRecall", "Autoencode")


def popgym_id(env_id: str, knobs: dict) -> str | None:
    task = env_id.split("/")[-1].rsplit("-v", 1)[0]
    if task not in CARD_TASKS:
        return None
    return f"popgym-{task}{knobs.get('difficulty', 'easy').capitalize()}-v0"


def timed(env, actions: list[int]) -> tuple[float, float]:
    """(wall, thread CPU) seconds to take ``actions``, resetting at episode ends."""
    env.reset(seed=0)
    step, reset = env.step, env.reset
    w0, c0 = time.perf_counter(), time.thread_time()
    for a in actions:
        _, _, terminated, truncated, _ = step(a)
        if terminated or truncated:
            reset()
    return time.perf_counter() - w0, time.thread_time() - c0


def measure(makers: dict, steps: int, repeats: int) -> dict[str, tuple[float, float]]:
    """Best steps/s (wall, cpu) of each env ``makers`` builds, the envs taking turns."""
    built = {name: make() for name, make in makers.items()}
    best = {name: (0.0, 0.0) for name in built}
    for r in range(repeats):
        for name, env in built.items():
            n = env.action_space.n
            actions = np.random.default_rng(r).integers(0, n, size=steps).tolist()
            wall, cpu = timed(env, actions)
            best[name] = (max(best[name][0], steps / wall), max(best[name][1], steps / max(cpu, 1e-9)))
    return best


def fmt(x: float) -> str:
    return f"{x / 1e3:.1f} k" if x < 1e6 else f"{x / 1e6:.2f} M"


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=os.path.dirname(os.path.abspath(__file__)))
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, cwd=os.path.dirname(os.path.abspath(__file__)))
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except OSError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="*", default=list(envs.ENV_IDS))
    parser.add_argument("--steps", type=int, default=20000, help="steps per timed run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--levels", action="store_true", help="the card tasks at every level")
    args = parser.parse_args()
    torch.set_num_threads(1)
    try:
        import popgym  # noqa: F401  (registers popgym-*-v0)
        have_popgym = True
    except ImportError:
        have_popgym = False

    rows = []
    for env_id in args.envs:
        card = popgym_id(env_id, {}) is not None
        levels = ("easy", "medium", "hard") if card and args.levels else ("easy",) if card else (None,)
        for level in levels:
            knobs = {"difficulty": level} if level else {}
            makers = {"make": lambda e=env_id, k=knobs: gym.make(e, **k),
                      "raw": lambda e=env_id, k=knobs: gym.make(e, **k).unwrapped}
            peer = popgym_id(env_id, knobs)
            if peer and have_popgym:
                makers["peer make"] = lambda p=peer: gym.make(p)
                makers["peer raw"] = lambda p=peer: gym.make(p).unwrapped
            rows.append((env_id, level or "-", measure(makers, args.steps, args.repeats)))

    load = os.getloadavg()
    print(f"\nMachine: {platform.machine()}, {os.cpu_count()} cores, load average "
          f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; torch {torch.__version__} on 1 thread; "
          f"gymnasium {gym.__version__}; commit {commit()}; best of {args.repeats} x {args.steps} steps")
    print("steps/s wall-clock (per CPU-second of the thread in brackets)\n")
    print("| task | level | recall-rl make | recall-rl unwrapped | popgym make | popgym unwrapped "
          "| recall-rl / popgym (make) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for env_id, level, m in rows:
        def cell(name, m=m):
            return f"{fmt(m[name][0])} ({fmt(m[name][1])})" if name in m else "-"
        ratio = f"{m['make'][0] / m['peer make'][0]:.2f}x" if "peer make" in m else "-"
        print(f"| {env_id} | {level} | {cell('make')} | {cell('raw')} | {cell('peer make')} "
              f"| {cell('peer raw')} | {ratio} |")


if __name__ == "__main__":
    main()
