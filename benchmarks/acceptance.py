"""The task suite's acceptance runs: each experiment over seeds, with its mlp control.

    python -m benchmarks.acceptance --experiments gru_repeat_previous gru_tmaze \\
        --seeds 0 1 2 --control --jobs 2 --out docs/acceptance

Every run is ``python -m agents.train experiment=<name> seed=<s>`` (and, with
``--control``, the same with ``core=mlp``) in its own process with one torch
thread; ``--jobs`` of them run at once. Each run's final JSON line (greedy and
sampled evaluation on 512 episodes) and its wall time are appended to
``<out>/runs.jsonl`` as they finish, so a stopped sweep keeps what it measured;
at the end a markdown table (per experiment and core: the seeds' greedy and
sampled success and return as mean and min..max, env steps, wall time) of
every run in ``runs.jsonl`` is printed and written to ``<out>/table.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent


def core_overrides(experiment: str, core: str) -> list[str]:
    """``core=<core>`` for an experiment, dropping the options of its own core that
    ``core`` does not take (an HCAM experiment's ``chunk_size`` on the mlp control)."""
    from omegaconf import OmegaConf

    from agents.common.config import CONFIG_DIR

    own = OmegaConf.load(CONFIG_DIR / "experiment" / f"{experiment}.yaml").get("core", {})
    accepted = set(OmegaConf.load(CONFIG_DIR / "core" / f"{core}.yaml"))
    return [f"core={core}", *(f"~core.{k}" for k in own if k not in accepted)]


def run_one(experiment: str, seed: int, core: str | None, runs_root: Path, extra: list[str]):
    args = [sys.executable, "-m", "agents.train", f"experiment={experiment}", f"seed={seed}",
            f"runs_root={runs_root}", "progress=false", "threads=1", "eval.video_episodes=0",
            *(core_overrides(experiment, core) if core else []), *extra]
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - start
    row = {"experiment": experiment, "seed": seed, "core_override": core, "wall_s": round(wall, 1),
           "returncode": proc.returncode, "command": " ".join(args[1:])}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode == 0 and lines:
        row["eval"] = json.loads(lines[-1])
    else:
        row["error"] = proc.stderr.strip().splitlines()[-3:]
    return row


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.3f}"
    return f"{mean:.3f} ({min(values):.3f}..{max(values):.3f})"


def labels(run_dir: str) -> dict:
    """The task's level, xi, chance and the core's K, from the run's own config."""
    from omegaconf import OmegaConf

    from agents.common.config import env_knobs, make_env, make_policy, policy_spec

    cfg = OmegaConf.load(Path(run_dir) / "config.yaml")
    env = make_env(cfg.env, 1, "cpu", 0)
    knobs = ", ".join(f"{k}={v}" for k, v in env_knobs(cfg.env).items())
    context = make_policy(policy_spec(cfg, env)).core.context_length
    return {"task": f"{cfg.env.id.split('/')[-1]} ({knobs})", "xi": env.memory_horizon,
            "chance": env.chance, "K": "inf" if context == float("inf") else int(context)}


def table(rows: list[dict]) -> str:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        if "eval" in row:
            # runs of one experiment at another budget (a config changed) get a row of their own
            groups[(row["experiment"], row["eval"]["core"], row["eval"]["global_step"])].append(row)
    out = ["| experiment | core | task (knobs) | xi | K | chance | seeds | env steps | "
           "wall (min) | greedy success | sampled success | greedy return | sampled return |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---|---|---|---|"]
    for (exp, core, _), rs in sorted(groups.items()):
        ev = [r["eval"] for r in rs]
        lab = labels(ev[0]["run_dir"])
        out.append(
            f"| {exp} | {core} | {lab['task']} | {lab['xi']} | {lab['K']} | {lab['chance']:.3g} | "
            f"{len(rs)} | {ev[0]['global_step']:,} | "
            f"{_spread([r['wall_s'] / 60 for r in rs])} | "
            f"{_spread([e['greedy']['success_rate'] for e in ev])} | "
            f"{_spread([e['sampled']['success_rate'] for e in ev])} | "
            f"{_spread([e['greedy']['mean_return'] for e in ev])} | "
            f"{_spread([e['sampled']['mean_return'] for e in ev])} |"
        )
    failed = [r for r in rows if "eval" not in r]
    for r in failed:
        out.append(f"\nfailed: {r['command']}: {r.get('error')}")
    return "\n".join(out)


def read_rows(out: Path) -> list[dict]:
    """Every run logged in ``out/runs.jsonl`` (earlier invocations included)."""
    with open(out / "runs.jsonl") as f:
        return [json.loads(line) for line in f if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiments", nargs="+", default=[])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--control", action="store_true", help="also run each with core=mlp")
    parser.add_argument("--control-seeds", nargs="+", type=int, default=None,
                        help="seeds of the mlp control (default: --seeds)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/acceptance"))
    parser.add_argument("--runs-root", type=Path, default=None)
    parser.add_argument("--table-only", action="store_true",
                        help="run nothing: print the table of <out>/runs.jsonl")
    parser.add_argument("overrides", nargs="*", help="extra key=value for every run")
    args = parser.parse_args(argv)
    if args.table_only:
        print(table(read_rows(args.out)))
        return 0
    if args.jobs < 1:
        parser.error(f"--jobs={args.jobs}: must be >= 1")
    args.out.mkdir(parents=True, exist_ok=True)
    # Absolute: the runs start in the repository root, the paths are the caller's.
    runs_root = (args.runs_root or args.out / "runs").resolve()
    jobs = [(e, s, None) for e in args.experiments for s in args.seeds]
    if args.control:
        jobs += [(e, s, "mlp") for e in args.experiments for s in (args.control_seeds or args.seeds)]
    print(f"{len(jobs)} runs, {args.jobs} at a time; machine: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cpus", file=sys.stderr)
    rows = []
    with ThreadPoolExecutor(args.jobs) as pool, open(args.out / "runs.jsonl", "a") as log:
        futures = [pool.submit(run_one, e, s, c, runs_root, args.overrides) for e, s, c in jobs]
        for fut in tqdm(as_completed(futures), total=len(futures), desc="acceptance runs",
                        unit="run"):
            row = fut.result()
            rows.append(row)
            log.write(json.dumps(row) + "\n")
            log.flush()
    text = table(read_rows(args.out))
    (args.out / "table.md").write_text(text + "\n")
    print(text)
    return 0 if all("eval" in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
