"""Environment steps per second: recall-rl's simulators beside their peers, in one run.

    python benchmarks/env_throughput.py [--envs delayed_match repeat_previous ...]
        [--num-envs 1 64 1024 16384] [--seconds 1.0] [--threads 1] [--devices cpu cuda]
        [--no-peers] [--no-install] [--json out.json] [--pin-cpu K]

Every task at its suite level (``configs/env/<name>.yaml``), uniform random
actions drawn before the timing, one thread per process (``--threads``):

* **one env**: ``gymnasium.make`` of recall-rl's task against ``gymnasium.make``
  of popgym's numpy env of the same task and level, stepped and reset in a loop;
* **N copies**: recall-rl's batched env (``check_actions=False``, the trainer's
  setting) against popgym's envs in gymnasium's ``SyncVectorEnv`` (up to
  ``--sync-max`` copies) and against gymnax (jax ``jit`` + ``vmap`` + ``scan``
  on the CPU): DelayedMatch beside bsuite's MemoryChain with
  ``memory_length`` = the delay.

The peers: popgym (numpy) comes with the project's dev extras; gymnax and jax
live in ``benchmarks/.peers/gymnax`` (jax wants a numpy the project's pins
refuse), which the first run makes (about a minute; ``--no-install`` skips
it). A peer that cannot be installed is reported as "not installed" with the
reason, and the rest runs. Ratios are recall-rl / peer: above 1, recall-rl is
faster. "cpu" is the process's CPU time over wall time while timed: about 1.0
for one thread on a free core, less when the machine is loaded. ``--pin-cpu K``
runs this process and the gymnax worker on CPU K only: jax keeps runtime
threads beside its one compute thread and otherwise uses ~1.8 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

import envs
from agents.common.config import env_knobs, env_names, load_env_config

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: benchmarks.* from the checkout
    sys.path.insert(0, str(ROOT))
NUM_ENVS = (1, 64, 1024, 16384)
SYNC_MAX = 1024
ACTION_BANK = 64
GYMNAX_PACKAGES = ["gymnax==1.0.1", "six"]  # gymnax 1.0.1 imports six without requiring it
CARD_TASKS = ("RepeatFirst", "RepeatPrevious", "CountRecall", "Autoencode")


# ------------------------------------------------------------------------------ peers
def popgym_id(env_id: str, knobs: dict) -> str | None:
    """popgym's registered id of the same task and level, or None (no such task there)."""
    task = env_id.split("/", 1)[-1].rsplit("-v", 1)[0]
    if task not in CARD_TASKS:
        return None
    return f"popgym-{task}{str(knobs.get('difficulty', 'easy')).capitalize()}-v0"


def gymnax_spec(env_id: str, knobs: dict) -> tuple[str, dict] | None:
    """(gymnax env name, EnvParams changes) of the closest gymnax task, or None."""
    if env_id == "recall/DelayedMatch-v0":
        return "MemoryChain-bsuite", {"memory_length": int(knobs["delay"])}
    return None


def _import_popgym() -> str | None:
    """None when popgym is importable (its envs registered), else why not."""
    try:
        import popgym  # noqa: F401  (registers popgym-*-v0 with gymnasium)
    except Exception as err:  # ImportError, or a popgym that breaks on this gymnasium
        return f"not installed: {type(err).__name__}: {err} (pip install -e '.[dev]')"
    return None


def gymnax_sps(name: str, params: dict, sizes: list[int], seconds: float, threads: int,
               install: bool, cpu: int | None = None, repeats: int = 1) -> dict[int, dict] | str:
    """{num_envs: {"sps", "cpu"}} from the worker in the gymnax venv, or why not.

    ``cpu``: pin the worker to that CPU (the "same thread" comparison); ``repeats``:
    the best of that many timings of ``seconds`` each.
    """
    from benchmarks.peer_venv import PeerUnavailable, ensure_venv

    try:
        py = ensure_venv("gymnax", GYMNAX_PACKAGES, install=install)
    except PeerUnavailable as err:
        return str(err)
    cmd = [str(py), str(ROOT / "benchmarks" / "gymnax_worker.py"), "--env", name,
           "--num-envs", *map(str, sizes), "--seconds", str(seconds), "--threads", str(threads),
           "--repeats", str(repeats), *(f"--param={k}={v}" for k, v in params.items()),
           *(["--cpu", str(cpu)] if cpu is not None else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return f"failed: {lines[-1] if lines else f'exit status {proc.returncode}'}"
    out = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            out[int(r["num_envs"])] = r
    return out


# ---------------------------------------------------------------------------- timing
def sync(device: torch.device) -> None:
    """Wait for ``device``'s queued work (CUDA); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batched_sps(env_id: str, n: int, device: str, seconds: float, knobs: dict) -> dict:
    env = envs.make_vec(env_id, n, device=device, check_actions=False, **knobs)
    env.reset(seed=0)
    dev = torch.device(device)
    bank = torch.randint(0, env.single_action_space.n, (ACTION_BANK, n), device=dev)
    for i in range(10):  # warm-up
        env.step(bank[i])
    sync(dev)
    steps, cpu0, start = 0, time.process_time(), time.perf_counter()
    while True:
        for i in range(ACTION_BANK):
            env.step(bank[i])
        steps += ACTION_BANK
        sync(dev)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return {"sps": steps * n / elapsed, "cpu": (time.process_time() - cpu0) / elapsed}


def _tolerant(fn, *args) -> dict | str:
    """``fn(*args)``, or the error as one line (e.g. out of memory at 1 M copies on a GPU)."""
    try:
        return fn(*args)
    except (RuntimeError, MemoryError, ValueError) as err:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return f"failed: {type(err).__name__}: {str(err).splitlines()[0][:120]}"


def single_sps(make, seconds: float) -> dict:
    """One gymnasium env stepped with random actions, reset at each episode end."""
    env = make()
    env.reset(seed=0)
    bank = np.random.default_rng(0).integers(0, env.action_space.n, size=1024).tolist()
    steps, cpu0, start = 0, time.process_time(), time.perf_counter()
    while True:
        for a in bank:
            _, _, terminated, truncated, _ = env.step(a)
            if terminated or truncated:
                env.reset()
        steps += len(bank)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            env.close()
            return {"sps": steps / elapsed, "cpu": (time.process_time() - cpu0) / elapsed}


def sync_vector_sps(make, n: int, seconds: float) -> dict:
    vec = gym.vector.SyncVectorEnv([make for _ in range(n)])
    vec.reset(seed=0)
    bank = np.random.default_rng(0).integers(0, vec.single_action_space.n, size=(ACTION_BANK, n))
    steps, cpu0, start = 0, time.process_time(), time.perf_counter()
    while True:
        for i in range(ACTION_BANK):
            vec.step(bank[i])
            steps += 1
            if steps % 8 == 0 and time.perf_counter() - start >= seconds:
                elapsed = time.perf_counter() - start
                vec.close()
                return {"sps": steps * n / elapsed, "cpu": (time.process_time() - cpu0) / elapsed}


# ---------------------------------------------------------------------------- tables
def fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if x >= 1e9:
        return f"{x / 1e9:.2f} G"
    if x >= 1e6:
        return f"{x / 1e6:.2f} M"
    if x >= 1e3:
        return f"{x / 1e3:.1f} k"
    return f"{x:.0f}"


def ratio(ours: float | None, theirs: float | None) -> str:
    """ours / theirs as '12x' or '0.41x'; '-' when either is missing."""
    if not ours or not theirs:
        return "-"
    r = ours / theirs
    if r >= 10:
        return f"{r:.0f}x"
    return f"{r:.1f}x" if r >= 1 else f"{r:.2g}x"


def _peer_cell(m: dict | str | None) -> str:
    if m is None:
        return "-"
    if isinstance(m, str):
        return m
    return fmt(m["sps"])


def render(rows: list[dict], devices: list[str]) -> str:
    """The markdown tables of ``rows`` (as ``measure`` makes them), ratios beside each peer."""
    out = []
    single = [r for r in rows if r["kind"] == "single"]
    if single:
        out += ["One env (`gymnasium.make`), random actions, steps/s:", "",
                "| task | level | recall-rl | popgym (numpy) | recall-rl / popgym |",
                "|---|---|---:|---:|---:|"]
        for r in single:
            peer = r.get("popgym")
            out.append(f"| {r['env']} | {r['level']} | {fmt(r['recall']['sps'])} | {_peer_cell(peer)} "
                       f"| {ratio(r['recall']['sps'], peer['sps'] if isinstance(peer, dict) else None)} |")
        out.append("")
    batched = [r for r in rows if r["kind"] == "batched"]
    if batched:
        dev_cols = " | ".join(f"recall-rl batched {d}" for d in devices)
        out += ["N copies, random actions, steps/s (all copies together):", "",
                f"| task | level | N | {dev_cols} | popgym SyncVectorEnv | recall-rl / popgym "
                "| gymnax jit+vmap+scan | recall-rl / gymnax |",
                "|---|---|---:|" + "---:|" * len(devices) + "---:|---:|---:|---:|"]
        for r in batched:
            mine = r["recall"].get("cpu")
            ours = mine["sps"] if isinstance(mine, dict) else None
            cells = " | ".join(_peer_cell(r["recall"].get(d)) for d in devices)
            pop, gx = r.get("popgym"), r.get("gymnax")
            out.append(
                f"| {r['env']} | {r['level']} | {r['num_envs']} | {cells} | {_peer_cell(pop)} "
                f"| {ratio(ours, pop['sps'] if isinstance(pop, dict) else None)} | {_peer_cell(gx)} "
                f"| {ratio(ours, gx['sps'] if isinstance(gx, dict) else None)} |")
        out.append("")
    cpus: dict[str, list[float]] = {}
    for r in rows:
        ours = r["recall"].values() if r["kind"] == "batched" else [r["recall"]]
        for name, m in [*(("recall-rl", m) for m in ours), ("popgym", r.get("popgym")),
                        ("gymnax", r.get("gymnax"))]:
            if isinstance(m, dict) and "cpu" in m:
                cpus.setdefault(name, []).append(m["cpu"])
    if cpus:
        out.append("CPU time / wall time while timed (1.0 = one busy core): " + "; ".join(
            f"{k} {min(v):.2f}..{max(v):.2f}" for k, v in cpus.items()))
    return "\n".join(out)


def level(knobs: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in knobs.items())


def task_configs(names: list[str]) -> list[tuple[str, dict]]:
    """(env id, knobs) of each configs/env name (recall tasks only: MiniGrid has its own script)."""
    out = []
    for name in names:
        cfg = load_env_config(name)
        if cfg.id not in envs.ENV_IDS:
            raise SystemExit(f"--envs {name}: {cfg.id} is not a batched recall task "
                             f"(benchmarks/minigrid_steps.py measures MiniGrid)")
        out.append((str(cfg.id), env_knobs(cfg)))
    return out


def measure(tasks, sizes, devices, seconds, threads, peers=True, install=True, sync_max=SYNC_MAX,
            cpu=None):
    rows = []
    popgym_missing = _import_popgym() if peers else None
    gymnax_runs = {}
    if peers:  # the jax worker measures all sizes of a task in one process (one compile each)
        for env_id, knobs in tasks:
            spec = gymnax_spec(env_id, knobs)
            if spec:
                print(f"[env throughput] gymnax {spec[0]} {spec[1]} ...", file=sys.stderr, flush=True)
                gymnax_runs[env_id] = gymnax_sps(spec[0], spec[1], sizes, seconds, threads, install, cpu)
    jobs = [(e, k, None) for e, k in tasks] + [(e, k, n) for e, k in tasks for n in sizes]
    for env_id, knobs, n in tqdm(jobs, desc="env throughput"):
        pid = popgym_id(env_id, knobs) if peers else None
        row = {"kind": "single" if n is None else "batched", "env": env_id, "level": level(knobs)}
        if pid:
            row["popgym_id"] = pid
        if n is None:
            row["recall"] = single_sps(partial(gym.make, env_id, **knobs), seconds)
            if pid:
                row["popgym"] = popgym_missing or single_sps(partial(gym.make, pid), seconds)
        else:
            row["num_envs"] = n
            row["recall"] = {d: _tolerant(batched_sps, env_id, n, d, seconds, knobs) for d in devices}
            if pid:
                row["popgym"] = popgym_missing or (
                    sync_vector_sps(partial(gym.make, pid), n, seconds) if n <= sync_max else None)
            if env_id in gymnax_runs:
                got = gymnax_runs[env_id]
                row["gymnax"] = got if isinstance(got, str) else got.get(n)
                row["gymnax_spec"] = gymnax_spec(env_id, knobs)
        rows.append(row)
    return rows


def pin_cpu(cpu: int | None) -> None:
    """Run this process on CPU ``cpu`` only (None: leave the affinity alone)."""
    if cpu is None:
        return
    allowed = sorted(os.sched_getaffinity(0))
    if cpu not in allowed:
        raise SystemExit(f"error: --pin-cpu {cpu} is not accepted; accepted: one of {allowed}")
    os.sched_setaffinity(0, {cpu})


def machine_line(devices: list[str]) -> str:
    cpu_name = platform.processor() or platform.machine()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    gpu = f", GPU {torch.cuda.get_device_name()}" if "cuda" in devices else ""
    return (f"Machine: {os.cpu_count()} CPUs ({cpu_name}), {torch.get_num_threads()} torch thread(s), "
            f"torch {torch.__version__}{gpu}; load average (1 min) {load:.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = [n for n in env_names() if load_env_config(n).id in envs.ENV_IDS]
    parser.add_argument("--envs", nargs="*", default=names, choices=names, metavar="NAME",
                        help=f"configs/env names (default all: {', '.join(names)})")
    parser.add_argument("--num-envs", nargs="*", type=int, default=list(NUM_ENVS))
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch (and XLA) CPU threads")
    parser.add_argument("--devices", nargs="*", default=None,
                        help="devices of the batched env (default: cpu, and cuda when present)")
    parser.add_argument("--no-peers", action="store_true", help="recall-rl only")
    parser.add_argument("--no-install", action="store_true", help="do not make the gymnax venv")
    parser.add_argument("--sync-max", type=int, default=SYNC_MAX, help="largest SyncVectorEnv")
    parser.add_argument("--json", default=None, help="also write the measurements here")
    parser.add_argument("--pin-cpu", type=int, default=None, metavar="K",
                        help="run this process and the gymnax worker on CPU K only (same core for all)")
    args = parser.parse_args(argv)
    if args.threads < 1:
        raise SystemExit(f"error: --threads {args.threads} is not accepted; accepted: >= 1")
    if args.seconds <= 0:
        raise SystemExit(f"error: --seconds {args.seconds:g} is not accepted; accepted: > 0")
    bad = [n for n in args.num_envs if n < 1]
    if bad:
        raise SystemExit(f"error: --num-envs {bad[0]} is not accepted; accepted: >= 1")
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    for d in devices:
        if d != "cpu" and not (d.startswith("cuda") and torch.cuda.is_available()):
            raise SystemExit(f"error: --devices {d} is not accepted here; accepted: cpu"
                             + (", cuda" if torch.cuda.is_available() else " (this torch sees no CUDA device)"))
    pin_cpu(args.pin_cpu)
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    rows = measure(task_configs(args.envs), args.num_envs, devices, args.seconds, args.threads,
                   peers=not args.no_peers, install=not args.no_install, sync_max=args.sync_max,
                   cpu=args.pin_cpu)
    text = machine_line(devices) + "\n\n" + render(rows, devices)
    print("\n" + text)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine_line(devices), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
