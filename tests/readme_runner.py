"""Runs every command block of README.md with tiny budgets; used by tests/test_readme.py.

    python tests/readme_runner.py <scratch folder>    (writes <scratch>/results.json)

Each line of a ```bash block is a command, run in README order in the scratch folder, so
later commands use the runs earlier ones made (``runs/<name>/<time>`` is the newest run of
that name there; a tiny run makes one when none exists yet). ``TINY`` says what is appended
to each program: budgets only (env steps, envs, episodes, updates, threads), never another
task or core. ``make <target>`` runs the target's command from the Makefile. ```python blocks
run with the budget literals of ``PY_BUDGETS`` made small.

The commands run inside this one process (``runpy``, as ``python -m`` would), so torch and
the rest are imported once; sample-factory's are separate processes (its global registries),
and a sweep runs its jobs one at a time (``hydra.launcher.n_jobs=1``; tests/test_sweep.py runs
the parallel launcher). A sweep marked ``# long:`` in the README is not run: every job of its
grid is composed (config and knobs checked), and the README states its measured time.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import re
import runpy
import shlex
import socket
import subprocess
import sys
import time
import traceback
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
VENV_BIN = Path(sys.executable).parent

# 16 copies: 16 sequences, which every recipe's minibatch count divides (gru_nback: 16)
TRAIN = ["total_steps=64", "algo.num_envs=16", "algo.num_steps=8", "algo.seq_len=8",
         "eval.episodes=8", "eval.num_envs=8", "eval.during_episodes=8", "eval.video_episodes=0",
         "progress=false", "threads=1"]
TINY: dict[str, list[str]] = {
    "python -m agents.train -m": [*TRAIN, "eval.episodes=0", "checkpoint_every=0",
                                  "hydra.launcher.n_jobs=1"],
    "python -m agents.train": TRAIN,
    "python -m agents.evaluate": ["episodes=16", "num_envs=16"],
    "python -m agents.record": ["episodes=1"],
    "python -m agents.collect": ["episodes=64"],
    "python -m agents.train_dt": ["train.updates=2", "train.batch_size=8", "eval.episodes=8",
                                  "eval.num_envs=8", "progress=false", "threads=1"],
    "python -m agents.report": [],
    "python -m agents.sf_train": ["--train_for_env_steps=4096", "--save_every_sec=5"],
    "python -m agents.sf_enjoy": ["--episodes=8", "--copies=8"],
    "python -m benchmarks.acceptance": ["--jobs", "2", *TRAIN],
}
JSON_LINE = ("python -m agents.train", "python -m agents.evaluate", "python -m agents.record",
             "python -m agents.collect", "python -m agents.train_dt", "python -m agents.sf_enjoy")
SUBPROCESS = ("python -m agents.sf_train", "python -m agents.sf_enjoy")
PY_BUDGETS = {"model.learn(total_timesteps=30_000)": "model.learn(total_timesteps=512)",
              "n_eval_episodes=200": "n_eval_episodes=16"}
SKIP = {"make test": "the test suite itself (its time is in the README)"}
SHELL_ASSIGNMENT = re.compile(r"^\w+=\$\(")  # head=$(scontrol ...): a Slurm script's variable
# What makes a runs/<name>/<time> that no earlier README command made.
MAKE_RUN = {
    "default": ["experiment=default", *TRAIN],
    "run": TRAIN,
    # a sweep of 4 tiny runs, evaluated (the report reads the evaluations)
    "horizon": ["-m", "core=mlp,gru", "env.delay=2,4", "name=horizon",
                *TINY["python -m agents.train -m"], "eval.episodes=8"],
}


def blocks(lang: str) -> list[tuple[int, str]]:
    """(first line number, text) of every fenced block of ``lang`` in README.md."""
    out, lines = [], README.read_text().splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == f"```{lang}":  # also indented, inside a list item
            j = next(k for k in range(i + 1, len(lines)) if lines[k].strip() == "```")
            indent = len(lines[i]) - len(lines[i].lstrip())
            out.append((i + 2, "\n".join(line[indent:] for line in lines[i + 1 : j])))
            i = j
        i += 1
    return out


def commands() -> list[tuple[int, str, str]]:
    """(line, command, its comment) of every bash line of README.md."""
    cmds = []
    for first, text in blocks("bash"):
        for k, line in enumerate(text.replace("\\\n", " ").splitlines()):
            parts = re.split(r"\s+#\s*", line.strip(), maxsplit=1)
            if parts[0] and not parts[0].startswith("#"):
                cmds.append((first + k, parts[0], parts[1] if len(parts) > 1 else ""))
    return cmds


def program(cmd: str) -> str:
    for prefix in sorted(TINY, key=len, reverse=True):
        if cmd.startswith(prefix + " ") or cmd == prefix:
            return prefix
    if cmd.startswith(("make ", "torchrun ", "srun ")) or SHELL_ASSIGNMENT.match(cmd):
        return cmd.split()[0] if not cmd.startswith("make ") else cmd
    raise ValueError(f"tests/readme_runner.py knows no tiny budget for {cmd!r}; add one to TINY")


def make_recipe(target: str) -> list[str]:
    """The last command of a Makefile target, with the venv's python and tools."""
    text = (ROOT / "Makefile").read_text()
    body = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", text, re.M)
    if not body:
        raise ValueError(f"make {target}: no such target in the Makefile")
    line = body.group(1).strip().splitlines()[-1].strip()
    line = line.replace("$(PY)", "python").replace("$(VENV)/bin/", f"{VENV_BIN}/")
    return shlex.split(line)


def in_process(argv: list[str]) -> str:
    """``python -m module args`` (or ``python -c code``) here; its stdout. Raises on failure."""
    out = io.StringIO()
    saved = sys.argv
    try:
        with contextlib.redirect_stdout(out):
            if argv[0] == "-c":
                sys.argv = ["-c"]
                exec(compile(argv[1], "README.md", "exec"), {"__name__": "__main__"})
            else:
                sys.argv = [argv[1], *argv[2:]]
                runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        if stop.code not in (0, None):
            raise RuntimeError(f"exit status {stop.code}\n{out.getvalue()[-2000:]}") from None
    finally:
        sys.argv = saved
    return out.getvalue()


def subprocess_run(argv: list[str]) -> str:
    """``python <argv>`` in a process of its own; its stdout. Raises on failure."""
    return subprocess_run_tool([sys.executable, *argv])


def subprocess_run_tool(args: list[str]) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=900, env=env)
    if proc.returncode:
        raise RuntimeError(f"exit status {proc.returncode}\n{proc.stderr[-3000:]}")
    return proc.stdout


def newest_run(name: str) -> str:
    found = sorted(p for p in (Path("runs") / name).glob("2*") if p.is_dir())
    if found:
        return str(found[-1])
    if name not in MAKE_RUN:
        raise ValueError(f"runs/{name}/<time> is used before a README command made it")
    in_process(["-m", "agents.train", *MAKE_RUN[name]])
    return newest_run(name)


def run_torchrun(args: list[str]) -> str:
    """``torchrun <its flags> -m agents.train <overrides>``: run tiny on CPU ranks here;
    composed only where it needs CUDA, several nodes or a Slurm allocation."""
    split = args.index("-m")
    flags, overrides = args[:split], args[split + 2 :]
    if args[split + 1] != "agents.train":
        raise ValueError(f"torchrun runs {args[split + 1]}: tests/readme_runner.py knows agents.train")
    import torch

    why = ("needs CUDA" if "device=cuda" in overrides and not torch.cuda.is_available() else
           "several nodes" if any("<" in f or "$" in f or f.startswith("--nnodes") for f in flags)
           else None)
    if why:
        return f"composed {compose_sweep(overrides)} job ({why}: not run here)"
    subprocess_run_tool([f"{VENV_BIN}/torchrun", *flags, "-m", "agents.train", *overrides, *TRAIN])
    return "ran"


def compose_sweep(args: list[str]) -> int:
    """Compose every job of a ``-m`` grid (its ``a,b`` values, and a sweep config's own
    ``hydra.sweeper.params``), resolve it and build its env; the number of jobs."""
    from omegaconf import OmegaConf

    from agents.common.config import CONFIG_DIR, compose, make_env

    base = [a for a in args if a != "-m"]
    grid = {a.split("=", 1)[0]: a.split("=", 1)[1].split(",") for a in base if "," in a}
    fixed = [a for a in base if "," not in a]
    for a in fixed:
        if a.startswith("sweep="):
            params = OmegaConf.load(CONFIG_DIR / "sweep" / f"{a[6:]}.yaml").hydra.sweeper.params
            for key, values in params.items():
                grid.setdefault(key, [v.strip() for v in str(values).split(",")])
    jobs = list(itertools.product(*[[f"{k}={v}" for v in vals] for k, vals in grid.items()]))
    built = set()
    for job in jobs:
        cfg = compose([*fixed, *job])
        OmegaConf.resolve(cfg)
        knobs = json.dumps(OmegaConf.to_container(cfg.env), sort_keys=True)
        if knobs not in built:  # each distinct task level once
            make_env(cfg.env, 1, "cpu", 0).close()
            built.add(knobs)
    return len(jobs)


def serves(args: list[str]) -> None:
    """A server command (TensorBoard) answers HTTP on a free port; then it is stopped."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    Path("runs").mkdir(exist_ok=True)
    proc = subprocess.Popen([*args, "--port", str(port), "--host", "localhost"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://localhost:{port}/", timeout=5) as reply:
                    if reply.status != 200:
                        raise RuntimeError(f"TensorBoard answered {reply.status}")
                    return
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(proc.stderr.read().decode()[-2000:]) from None
                if time.monotonic() > deadline:
                    raise RuntimeError("TensorBoard did not answer within 120 s") from None
                time.sleep(1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run_command(cmd: str, comment: str) -> str:
    """Run one README command with its tiny budget; what it did, in a few words."""
    prog = program(cmd)
    if prog in SKIP or SHELL_ASSIGNMENT.match(cmd):
        return "skipped: " + SKIP.get(prog, "a shell variable of a Slurm script")
    if prog in ("torchrun", "srun"):
        args = shlex.split(cmd)
        return run_torchrun(args[2:] if prog == "srun" else args[1:])
    if prog.startswith("make "):
        args = make_recipe(prog.split()[1])
        if "tensorboard" in Path(args[0]).name:
            serves(args)
            return "serves HTTP"
        cmd, prog = " ".join(args), program(" ".join(args))
    args = shlex.split(re.sub(r"runs/([\w-]+)/<time>", lambda m: newest_run(m.group(1)), cmd))[1:]
    # a resume trains one more of TRAIN's updates (16 copies x 8 steps)
    extra = ["total_steps=256"] if any(a.startswith("resume=") for a in args) else TINY[prog]
    if prog.endswith(" -m") and comment.startswith("long"):
        return f"composed all {compose_sweep(args[2:])} jobs (long: not run)"
    stdout = (subprocess_run if prog in SUBPROCESS else in_process)([*args, *extra])
    if prog in JSON_LINE:
        json.loads(stdout.strip().splitlines()[-1])
    return "ran"


def main(scratch: str) -> int:
    os.chdir(scratch)
    results: dict[str, dict] = {}
    todo = [(f"bash:{n}", c, note) for n, c, note in commands()]
    todo += [(f"python:{n}", code, "") for n, code in blocks("python")]
    for key, what, note in todo:
        start = time.perf_counter()
        try:
            if key.startswith("python:"):
                for literal, tiny in PY_BUDGETS.items():
                    what = what.replace(literal, tiny)
                in_process(["-c", what])
                done = "ran"
            else:
                done = run_command(what, note)
            results[key] = {"ok": True, "done": done}
        except Exception:  # reported per command by the test
            results[key] = {"ok": False, "error": traceback.format_exc()[-4000:]}
        results[key]["seconds"] = round(time.perf_counter() - start, 1)
        print(key, results[key]["seconds"], "s", results[key].get("done", "FAILED"),
              file=sys.__stderr__, flush=True)
    Path("results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
