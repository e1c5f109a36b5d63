"""One-command GPU check: ``make gpu-check`` (or ``python3 benchmarks/gpu_check.py``).

On a machine with an NVIDIA GPU:

1. makes ``benchmarks/.peers/cuda`` (gitignored), a virtualenv with a CUDA build
   of torch (the project's own venv keeps the CPU build) and the project
   (``-e .[dev]``); ``--python`` uses an interpreter that already has both,
   ``--wheels DIR`` installs offline from a folder of wheels;
2. runs the CUDA tests (``pytest -k cuda``: every test that runs on CUDA when
   one is present, tests/test_cuda.py among them);
3. the env throughput benchmark on ``cuda`` up to ``--max-envs`` copies
   (default 1 M), the compiled step (``make_vec(..., compile=True)``, built
   afresh so its build time is reported) of DelayedMatch and NBack at the
   largest size beside the eager one, and the training throughput benchmark on ``cuda`` (GRU-128,
   ``algo=ppo_one_epoch``);
4. a short training on ``cuda`` (``experiment=gru_delayed_match``);
5. writes a markdown report (``--report``, default ``runs/gpu_check/report.md``):
   the machine, the commit, each step's table and the targets (batched
   DelayedMatch >= 1 G steps/s; GRU-128 PPO training >= 1 M env steps/s).

Without a CUDA device it stops at once with one line saying so. Every step
has a time limit and a failed step is reported, not fatal to the others. The
driver imports the standard library only, so it runs before any venv exists.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script
    sys.path.insert(0, str(ROOT))

TORCH = "torch==2.13.0"  # the Makefile's version; on Linux, PyPI's wheel of it is a CUDA build
ENV_TARGET = 1e9  # batched DelayedMatch steps/s
TRAIN_TARGET = 1e6  # GRU-128 PPO training env steps/s
ENV_SIZES = (16_384, 131_072, 1_048_576)
COMPILED_ENVS = ("recall/DelayedMatch-v0", "recall/NBack-v0")
TRAIN_SIZES = (4096, 16_384, 65_536)


class NoGPU(SystemExit):
    pass


def find_gpus() -> list[str]:
    """``name, memory, driver`` of each NVIDIA GPU nvidia-smi lists; empty when none."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        proc = subprocess.run([smi, "--query-gpu=name,memory.total,driver_version",
                               "--format=csv,noheader"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [ln.strip() for ln in proc.stdout.splitlines() if ln.strip()] if proc.returncode == 0 else []


def no_gpu_line() -> str:
    return ("gpu-check: no CUDA device on this machine (nvidia-smi finds no NVIDIA GPU); "
            "run `make gpu-check` on a machine with one")


def _log(msg: str) -> None:
    print(f"[gpu-check] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------- venv
def cuda_python(args) -> Path:
    """A Python whose torch sees CUDA and which imports the project; raises SystemExit if none."""
    if args.python:
        py = Path(args.python)
    else:
        from benchmarks.peer_venv import PeerUnavailable, ensure_venv

        offline = ["--no-index", "--find-links", str(args.wheels)] if args.wheels else []
        index = ["--extra-index-url", args.torch_index_url] if args.torch_index_url else []
        # No local wheel folder from pip's config: a CPU build of torch there must not be taken.
        os.environ["PIP_FIND_LINKS"] = str(args.wheels or "")
        try:
            py = ensure_venv("cuda", [args.torch, "-e", f"{ROOT}[dev]"], [*offline, *index], log=_log)
        except PeerUnavailable as err:
            raise SystemExit(f"gpu-check: {err}") from None
    probe = subprocess.run([str(py), "-c", "import torch, envs, agents; print(torch.__version__, "
                            "torch.version.cuda, torch.cuda.is_available())"],
                           cwd=ROOT, capture_output=True, text=True)
    words = probe.stdout.split()
    if probe.returncode != 0 or len(words) != 3:
        lines = probe.stderr.strip().splitlines()
        raise SystemExit(f"gpu-check: {py} cannot import torch and the project: "
                         f"{lines[-1] if lines else probe.returncode}")
    if words[1] == "None" or words[2] != "True":
        raise SystemExit(f"gpu-check: {py} has torch {words[0]} (CUDA {words[1]}), which sees no GPU; "
                         "pass --torch-index-url for a CUDA build that fits this driver")
    return py


# ------------------------------------------------------------------------------ steps
def run_step(name: str, cmd: list[str], timeout: float, log_dir: Path) -> dict:
    """Run one step; its return code, time, the tail of its output, and its log file."""
    log = log_dir / f"{name}.log"
    _log(f"{name}: {' '.join(cmd[1:])[:160]} (log {log})")
    start = time.time()
    with log.open("w") as out:
        try:
            proc = subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=timeout,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"})
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    lines = log.read_text(errors="replace").splitlines()
    return {"name": name, "returncode": code, "seconds": round(time.time() - start, 1),
            "tail": lines[-15:], "log": str(log)}


def _pytest_summary(tail: list[str]) -> str:
    hits = [ln.strip("= ") for ln in tail if " passed" in ln or " failed" in ln or " skipped" in ln
            or "no tests ran" in ln]
    return hits[-1] if hits else "no summary line"


# ----------------------------------------------------------------------------- report
def _si(x: float | None) -> str:
    if x is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.2f} {unit}"
    return f"{x:.0f}"


def _best(rows: list[dict], pick) -> dict | None:
    ok = [r for r in rows if pick(r) is not None]
    return max(ok, key=pick) if ok else None


def _env_sps(row: dict) -> float | None:
    m = row.get("recall", {}).get("cuda")
    return m["sps"] if isinstance(m, dict) else None


def write_report(res: dict) -> str:
    """The markdown report of one gpu-check (``res`` as ``main`` collects it)."""
    out = ["# GPU check", "",
           f"- GPU: {'; '.join(res.get('gpus', [])) or 'none'}",
           f"- torch {res.get('torch', '?')}, Python {res.get('python', '?')}",
           f"- commit {res.get('commit', '?')}, {res.get('date', '?')}, CPU threads {res.get('threads', 1)}",
           f"- command: `{res.get('command', 'make gpu-check')}`", ""]
    env_rows = res.get("env", {}).get("rows", [])
    train_rows = [r for r in res.get("train", {}).get("rows", []) if r.get("core") == "gru"]
    dm = _best([r for r in env_rows if r.get("env") == "recall/DelayedMatch-v0"
                and r.get("kind") == "batched"], _env_sps)
    gru = _best(train_rows, lambda r: r.get("sps"))
    out += ["## Targets", "", "| target | measured | met |", "|---|---:|---|"]
    dm_sps = _env_sps(dm) if dm else None
    where = f" (eager, {dm['num_envs']:,} copies)" if dm else ""
    comp_rows = res.get("compiled", {}).get("rows", [])
    dm_comp = _best([r for r in comp_rows if r.get("env") == "recall/DelayedMatch-v0"],
                    lambda r: r.get("compiled_sps") if r.get("program", {}).get("compiled") else None)
    if dm_comp and dm_comp["compiled_sps"] > (dm_sps or 0):
        dm_sps, where = dm_comp["compiled_sps"], f" (compiled, {dm_comp['num_envs']:,} copies)"
    out.append(f"| batched DelayedMatch >= {_si(ENV_TARGET)} steps/s | {_si(dm_sps)}{where}"
               f" | {_met(dm_sps, ENV_TARGET)} |")
    gru_sps = gru["sps"] if gru else None
    out.append(f"| GRU-128 PPO training >= {_si(TRAIN_TARGET)} env steps/s | {_si(gru_sps)}"
               + (f" ({gru['num_envs']:,} envs)" if gru else "") + f" | {_met(gru_sps, TRAIN_TARGET)} |")
    out += ["", "## Steps", "", "| step | result | seconds | log |", "|---|---|---:|---|"]
    for step in res.get("steps", []):
        result = "ok" if step["returncode"] == 0 else f"failed ({step['returncode']})"
        if step["name"] == "cuda_tests":
            result += f": {_pytest_summary(step['tail'])}"
        out.append(f"| {step['name']} | {result} | {step['seconds']} | `{step['log']}` |")
    if env_rows:
        out += ["", "## Env throughput on CUDA (random actions, all copies together)", "",
                "| task | copies | steps/s |", "|---|---:|---:|"]
        for r in env_rows:
            if r.get("kind") == "batched":
                cell = r["recall"].get("cuda")
                out.append(f"| {r['env']} | {r['num_envs']:,} | "
                           f"{_si(cell['sps']) if isinstance(cell, dict) else cell} |")
    if comp_rows:
        out += ["", "## Compiled step on CUDA (`make_vec(..., compile=True)`, random actions)", "",
                "| task | copies | eager steps/s | compiled steps/s | compiled / eager | program |",
                "|---|---:|---:|---:|---:|---|"]
        for r in comp_rows:
            prog = r.get("program", {})
            how = (f"{prog.get('source')} in {prog.get('seconds', 0):.1f} s" if prog.get("compiled")
                   else f"not compiled: {prog.get('error', '?')}")
            out.append(f"| {r['env']} | {r['num_envs']:,} | {_si(r['eager_sps'])} | "
                       f"{_si(r['compiled_sps'])} | {r['compiled_sps'] / r['eager_sps']:.1f}x | {how} |")
    if res.get("train", {}).get("rows"):
        out += ["", "## Training throughput on CUDA (recurrent PPO, " +
                " ".join(res["train"].get("overrides", [])) + ")", "",
                "| core | envs | train env steps/s | rollout env steps/s |", "|---|---:|---:|---:|"]
        for r in res["train"]["rows"]:
            if "error" in r:
                out.append(f"| {r['core']} | {r['num_envs']:,} | {r['error']} | |")
            else:
                out.append(f"| {r['core']} | {r['num_envs']:,} | {r['sps']:,.0f} | {r['rollout_sps']:,.0f} |")
    if res.get("training"):
        t = res["training"]
        out += ["", "## Short training on CUDA", "", f"`{t.get('command', '')}`: "
                + (f"greedy success {t['success_rate']:.3f}, mean return {t['mean_return']:.3f} after "
                   f"{t['global_step']:,} env steps in {t['seconds']:.0f} s" if "success_rate" in t
                   else f"no evaluation line ({t.get('error', 'see the log')})")]
    return "\n".join(out) + "\n"


def _met(value: float | None, target: float) -> str:
    if value is None:
        return "not measured"
    return "yes" if value >= target else f"no ({value / target:.0%} of it)"


# ------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--report", default="runs/gpu_check/report.md")
    p.add_argument("--max-envs", type=int, default=ENV_SIZES[-1], help="largest number of env copies")
    p.add_argument("--python", default=None, help="an interpreter with CUDA torch and the project")
    p.add_argument("--wheels", default=None, help="install offline from this folder of wheels")
    p.add_argument("--torch", default=TORCH, help="the torch requirement of the CUDA venv")
    p.add_argument("--torch-index-url", default=None, help="e.g. a CUDA-specific torch wheel index")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of the benchmarks")
    p.add_argument("--skip", nargs="*", default=[], choices=["tests", "env", "compiled", "train", "training"])
    p.add_argument("--step-timeout", type=float, default=None,
                   help="seconds each step may run (default: 30 min for tests and training, 60 min for "
                        "each benchmark); a step past it is reported as 'timeout'")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if a.max_envs < 1:
        raise SystemExit(f"gpu-check: --max-envs {a.max_envs} is not accepted; accepted: >= 1")
    if a.step_timeout is not None and a.step_timeout <= 0:
        raise SystemExit(f"gpu-check: --step-timeout {a.step_timeout:g} is not accepted; accepted: > 0")
    gpus = find_gpus()
    if not gpus:
        raise NoGPU(no_gpu_line())
    _log(f"GPU: {'; '.join(gpus)}")
    py = cuda_python(a)
    report = Path(a.report)
    logs = report.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    info = subprocess.run([str(py), "-c", "import torch, platform; print(torch.__version__, "
                           "platform.python_version())"], capture_output=True, text=True).stdout.split()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    res: dict = {"gpus": gpus, "torch": info[0] if info else "?", "python": info[-1] if info else "?",
                 "commit": commit, "threads": a.threads, "steps": [],
                 "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "command": "python3 benchmarks/gpu_check.py " + " ".join(argv or sys.argv[1:])}
    def limit(default: float) -> float:
        return a.step_timeout or default

    def save() -> None:  # after every step, so a check cut short still leaves its report
        report.write_text(write_report(res))
        (report.parent / "results.json").write_text(json.dumps(res, indent=1))

    def benchmark(key: str, module: str, args: list[str]) -> None:
        """One ``benchmarks.<module>`` run on CUDA; its JSON lands in ``res[key]``."""
        out = logs / f"{module}.json"
        res["steps"].append(run_step(module, [str(py), "-m", f"benchmarks.{module}", *args, "--json", str(out)],
                                     limit(3600), logs))
        if out.exists():
            res[key] = json.loads(out.read_text())
        save()

    if "tests" not in a.skip:
        # A test module whose optional peer (sample-factory, SB3, ...) is missing from this
        # interpreter is an error of that module alone; the CUDA tests elsewhere still run.
        res["steps"].append(run_step("cuda_tests", [str(py), "-m", "pytest", "-q", "-k", "cuda",
                                                    "--continue-on-collection-errors", "tests"],
                                     limit(1800), logs))
        save()
    if "env" not in a.skip:
        sizes = [n for n in (1024, *ENV_SIZES) if n <= a.max_envs] or [a.max_envs]
        benchmark("env", "env_throughput", ["--devices", "cuda", "--no-peers", "--num-envs",
                                            *map(str, sizes), "--threads", str(a.threads)])
    if "compiled" not in a.skip:
        benchmark("compiled", "compiled_step", ["--device", "cuda", "--envs", *COMPILED_ENVS, "--num-envs",
                                                str(a.max_envs), "--repeats", "3", "--fresh"])
    if "train" not in a.skip:
        benchmark("train", "train_throughput", ["--device", "cuda", "--cores", "gru,lstm,mlp", "--num-envs",
                                                ",".join(map(str, TRAIN_SIZES)), "--threads", str(a.threads),
                                                "algo=ppo_one_epoch"])
    if "training" not in a.skip:
        cmd = [str(py), "-m", "agents.train", "experiment=gru_delayed_match", "device=cuda",
               f"threads={a.threads}", "progress=false", f"runs_root={report.parent / 'runs'}",
               "eval.video_episodes=0"]
        step = run_step("training", cmd, limit(1800), logs)
        res["steps"].append(step)
        res["training"] = {"command": "python -m agents.train " + " ".join(cmd[3:]),
                           "seconds": step["seconds"]}
        evals = [ln for ln in step["tail"] if ln.startswith("{")]
        if evals:
            res["training"].update({k: v for k, v in json.loads(evals[-1]).items()
                                    if k in ("success_rate", "mean_return", "global_step")})
        else:
            res["training"]["error"] = step["tail"][-1] if step["tail"] else "no output"
    save()
    _log(f"report: {report}")
    failed = [s["name"] for s in res["steps"] if s["returncode"] != 0]
    if failed:
        _log(f"failed steps: {', '.join(failed)} (logs in {logs})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
