"""Steps per second of envs.MiniGridMemory with random actions (one CPU thread).

    python benchmarks/minigrid_steps.py [--env MiniGrid-MemoryS7-v0] [--copies 64 256] [--steps 200]

Resets, then times ``--steps`` steps of uniform random actions drawn ahead of
time, so the adapter alone is timed (MiniGrid's dynamics and the observations).
"""

from __future__ import annotations

import argparse
import time

import torch

import envs


def steps_per_second(env_id: str, n: int, steps: int, seed: int = 0) -> float:
    vec = envs.make_vec(env_id, n, seed=seed, check_actions=False)
    vec.reset(seed=seed)
    actions = torch.randint(0, vec.single_action_space.n, (steps, n),
                            generator=torch.Generator().manual_seed(seed))
    start = time.perf_counter()
    for t in range(steps):
        vec.step(actions[t])
    return steps * n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="MiniGrid-MemoryS7-v0")
    parser.add_argument("--copies", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for n in args.copies:
        print(f"{args.env} copies={n} steps={args.steps}: "
              f"{steps_per_second(args.env, n, args.steps):,.0f} env steps/s", flush=True)


if __name__ == "__main__":
    main()
