"""gymnax's steps per second, run inside benchmarks/.peers/gymnax (jax, not torch).

    benchmarks/.peers/gymnax/bin/python benchmarks/gymnax_worker.py \\
        --env MemoryChain-bsuite --param memory_length=16 --num-envs 1024 16384 --seconds 1

gymnax's own fast path: ``jax.vmap`` of ``env.step`` (auto-reset included)
over the copies, ``jax.lax.scan`` over a block of steps, the whole block
``jax.jit``-compiled once. Actions are drawn before the timing, as in
env_throughput.py. ``--threads 1`` keeps XLA's CPU client on one thread (set
before jax is imported); ``--cpu K`` pins the process to CPU K, so that XLA's
runtime threads share one core with the timed loop, as a one-thread torch
process does (without it jax spreads over ~1.8 cores here); ``--repeats R``
reports the best of R timings. One JSON line per num_envs: steps/s, and the
process's CPU time over wall time during the timing (about 1.0 means one core).
Imports only the standard library, jax and gymnax.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import sys
import time

BLOCK = 64  # steps per jitted scan


def _param(text: str) -> tuple[str, int | float]:
    key, _, value = text.partition("=")
    try:
        return key, int(value)
    except ValueError:
        return key, float(value)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="MemoryChain-bsuite")
    p.add_argument("--param", action="append", default=[], type=_param, help="EnvParams field=value")
    p.add_argument("--num-envs", nargs="+", type=int, required=True)
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cpu", type=int, default=None, help="pin the process to this CPU")
    p.add_argument("--repeats", type=int, default=1, help="report the best of this many timings")
    args = p.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    if args.threads == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                                   " intra_op_parallelism_threads=1").strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import gymnax
    import jax

    env, params = gymnax.make(args.env)
    if args.param:
        params = params.replace(**dict(args.param))
    n_actions = env.action_space(params).n

    def block(state, key, actions):
        def one(carry, a):
            st, k, acc = carry
            k, sub = jax.random.split(k)
            keys = jax.random.split(sub, a.shape[0])
            obs, st, reward, *_ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(keys, st, a, params)
            # Use the observation and reward, or XLA drops their computation as dead code
            # (the torch envs compute both every step).
            return (st, k, acc + reward.sum() + obs.sum()), None

        (state, key, acc), _ = jax.lax.scan(one, (state, key, 0.0), actions)
        return state, key, acc

    run = jax.jit(block)
    for n in args.num_envs:
        key = jax.random.PRNGKey(0)
        key, k_reset, k_act = jax.random.split(key, 3)
        _, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k_reset, n), params)
        actions = jax.random.randint(k_act, (BLOCK, n), 0, n_actions)
        state, key, acc = run(state, key, actions)  # compile + warm-up
        jax.block_until_ready(acc)
        best = None
        for _ in range(max(1, args.repeats)):
            steps, cpu0, t0 = 0, time.process_time(), time.perf_counter()
            while True:
                state, key, acc = run(state, key, actions)
                jax.block_until_ready(acc)
                steps += BLOCK
                wall = time.perf_counter() - t0
                if wall >= args.seconds:
                    break
            timing = (steps * n / wall, (time.process_time() - cpu0) / wall)
            best = max(best or timing, timing)
        sps, cpu = best
        print(json.dumps({"num_envs": n, "sps": sps, "cpu": round(cpu, 2),
                          "jax": jax.__version__, "gymnax": importlib.metadata.version("gymnax")}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
