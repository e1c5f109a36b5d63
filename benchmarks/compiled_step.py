"""Batched steps per second, eager beside compiled (``make_vec(..., compile=True)``).

    python benchmarks/compiled_step.py [--envs recall/DelayedMatch-v0 ...]
        [--num-envs 1024 16384] [--seconds 1] [--repeats 5] [--fresh] [--gymnax] [--pin-cpu K]
        [--set distractors=false ...]

Each task at its suite level (the class defaults), ``check_actions=False`` (the
trainer's setting), uniform random actions drawn before the timing, torch on one
thread, on the CPU (``--device cuda``: on the GPU, timed after a synchronize). For each num_envs: steps/s of the eager step and of the compiled
one (best of ``--repeats`` runs of ``--seconds``; wall-clock, and per CPU-second
of this thread in brackets), and how long the compiled program took to get:
built (``--fresh`` builds into an empty cache folder, so this is the compile
time) or loaded from the cache (``envs.compiled``).

``--gymnax`` adds gymnax's MemoryChain (memory_length = the delay) beside
DelayedMatch, measured by ``benchmarks/gymnax_worker.py`` in its venv after the
torch runs; ``--pin-cpu K`` runs both on CPU K only, the same-core comparison
(issue #15, item 2). ``--set KEY=VALUE`` changes a task knob (e.g.
``distractors=false``: DelayedMatch's delay steps blank, as MemoryChain's are).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

import envs
from envs import compiled

try:
    from benchmarks.env_throughput import gymnax_spec, gymnax_sps, pin_cpu, sync
    from benchmarks.single_env import commit, fmt
except ImportError:  # run as a script from benchmarks/
    from env_throughput import gymnax_spec, gymnax_sps, pin_cpu, sync
    from single_env import commit, fmt

BANK = 64


def steps_per_second(env, n: int, seconds: float, repeats: int) -> tuple[float, float]:
    bank = torch.randint(0, env.single_action_space.n, (BANK, n), device=env.device)
    for i in range(10):
        env.step(bank[i])
    best_wall = best_cpu = 0.0
    for _ in range(repeats):
        sync(env.device)
        steps, w0, c0 = 0, time.perf_counter(), time.thread_time()
        while time.perf_counter() - w0 < seconds:
            for i in range(BANK):
                env.step(bank[i])
            steps += BANK
            sync(env.device)
        wall, cpu = time.perf_counter() - w0, time.thread_time() - c0
        best_wall, best_cpu = max(best_wall, steps * n / wall), max(best_cpu, steps * n / max(cpu, 1e-9))
    return best_wall, best_cpu


def knob(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` from the command line: VALUE as an int, a bool or a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--set takes KEY=VALUE, got {text!r}")
    low = value.lower()
    if low in ("true", "false"):
        return key, low == "true"
    try:
        return key, int(value)
    except ValueError:
        return key, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="*", default=["recall/DelayedMatch-v0"])
    parser.add_argument("--num-envs", nargs="*", type=int, default=[1024, 16384])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fresh", action="store_true", help="build every program anew (compile time)")
    parser.add_argument("--gymnax", action="store_true", help="add gymnax's MemoryChain beside DelayedMatch")
    parser.add_argument("--pin-cpu", type=int, default=None, metavar="K",
                        help="run this process and the gymnax worker on CPU K only")
    parser.add_argument("--set", dest="knobs", nargs="*", type=knob, default=[], metavar="KEY=VALUE",
                        help="task knobs for every env (e.g. distractors=false)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--json", default=None, help="also write the measurements here")
    args = parser.parse_args()
    if args.device not in ("cpu", "cuda") or (args.device == "cuda" and not torch.cuda.is_available()):
        raise SystemExit(f"error: --device {args.device} is not available here; accepted: cpu"
                         + (", cuda" if torch.cuda.is_available() else ""))
    knobs = dict(args.knobs)
    pin_cpu(args.pin_cpu)
    torch.set_num_threads(1)
    if args.fresh:
        os.environ[compiled.CACHE_ENV] = tempfile.mkdtemp(prefix="recall-compiled-")

    rows, specs = [], {}
    for env_id in args.envs:
        for n in args.num_envs:
            eager = envs.make_vec(env_id, n, device=args.device, check_actions=False, **knobs)
            if env_id not in specs:
                specs[env_id] = gymnax_spec(env_id, {"delay": getattr(eager, "delay", None)})
            eager.reset(seed=0)
            comp = envs.make_vec(env_id, n, device=args.device, check_actions=False, compile=True, **knobs)
            comp.reset(seed=0)
            comp.step(torch.zeros(n, dtype=torch.int64, device=comp.device))  # build or load
            info = comp.compile_info
            rows.append((env_id, n, steps_per_second(eager, n, args.seconds, args.repeats),
                         steps_per_second(comp, n, args.seconds, args.repeats), info))
    peer = {}
    if args.gymnax:
        for env_id, spec in specs.items():
            if spec:
                got = gymnax_sps(*spec, args.num_envs, args.seconds, 1, True, args.pin_cpu, args.repeats)
                peer[env_id] = got if isinstance(got, str) else {n: (got[n]["sps"], got[n]["cpu"]) for n in got}

    if args.json:
        Path(args.json).write_text(json.dumps({"device": args.device, "knobs": knobs, "rows": [
            {"env": env_id, "num_envs": n, "eager_sps": e[0], "compiled_sps": c[0], "program": info}
            for env_id, n, e, c, info in rows]}, indent=1, default=str))
    load = os.getloadavg()
    print(f"\nMachine: {platform.machine()}, {os.cpu_count()} cores, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, load average {load[0]:.1f} {load[1]:.1f} "
          f"{load[2]:.1f}; torch {torch.__version__} on 1 thread; device {args.device}; commit {commit()}"
          + (f"; knobs {knobs}" if knobs else ""))
    pinned = f", pinned to CPU {args.pin_cpu}" if args.pin_cpu is not None else ""
    print(f"steps/s wall-clock (per CPU-second of the thread in brackets){pinned}\n")
    head = "| task | num_envs | eager | compiled | compiled / eager | program |"
    print(head + (" gymnax (per CPU-s) | compiled / gymnax (per CPU-s) |" if peer else ""))
    print("|---|---:|---:|---:|---:|---|" + ("---:|---:|" if peer else ""))
    for env_id, n, e, c, info in rows:
        how = (f"{info['source']} in {info['seconds']:.1f} s" if info["compiled"]
               else f"not compiled: {info['error']}")
        line = (f"| {env_id} | {n} | {fmt(e[0])} ({fmt(e[1])}) | {fmt(c[0])} ({fmt(c[1])}) "
                f"| {c[0] / e[0]:.1f}x | {how} |")
        if peer:
            got = peer.get(env_id, "-")
            if isinstance(got, dict):
                sps, cpu = got[n]  # cpu: the worker's CPU time over wall time
                per_cpu = sps / max(cpu, 1e-9)
                line += f" {fmt(sps)} ({fmt(per_cpu)}) | {c[0] / sps:.1f}x ({c[1] / per_cpu:.1f}x) |"
            else:
                line += f" {got} | - |"
        print(line)


if __name__ == "__main__":
    main()
