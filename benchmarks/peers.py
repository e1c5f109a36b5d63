"""Time to solve: recall-rl's PPO vs sample-factory's APPO vs sb3-contrib's RecurrentPPO.

    python -m benchmarks.peers --tasks delayed_match repeat_previous --seeds 0 --max-minutes 10
    python -m benchmarks.peers --table-only --out runs/peers/solve.jsonl

For every task of the suite at its easy level (the env and knobs of the
committed experiment that trains it, else ``configs/env/<task>.yaml``) and
every framework, one process per (framework, task, seed), one at a time, on
the same device with the same torch thread count: wall-clock from launching
the process until a **greedy** evaluation on ``--eval-episodes`` fresh
episodes first reaches the bar: success >= 0.9, or mean return >= 0.9 on
POPGym's tasks (RepeatFirst, RepeatPrevious, CountRecall, Autoencode, whose
returns lie in [-1, 1]). The run stops there, or at ``--max-minutes``.

Every framework evaluates itself after each ``--eval-every-seconds`` of
training, greedy actions, the same episode seeds each time (training seed +
10**6), and logs ``eval/greedy_success_rate``, ``eval/greedy_mean_return``
and ``eval/seconds`` (how long that evaluation held training up) to
TensorBoard; this script reads them. "Time to bar" is the wall-clock at that
evaluation less the time spent in evaluations (start-up included: imports,
building the model); "wall" includes the evaluations. With ``--snapshots`` each
framework also keeps its weights after every update and plays them at the next
evaluation, each logged at the wall-clock time of its update
(``agents/evaluation/snapshots.py``): the bar is then timed to the first update
that meets it, not to the evaluation that first saw it, while training still
pauses only every ``--eval-every-seconds``. Without it a fast run is charged up
to one interval it did not need, which weighs most on the shortest runs.

The frameworks, same core size (the recall-rl recipe's core width):

* recall-rl: ``python -m agents.train experiment=<the task's experiment>``
  as committed (curriculum, lr, rollout, budget); ``eval_every_seconds`` added;
* sample-factory 2.1.1 APPO with the same recall-rl core inside it
  (``agents.integrations.sample_factory``), serial synchronous mode, batched sampling of 64
  copies (its fastest set-up on this CPU), rollout = recurrence = the recipe's
  sequence length (whole episodes), its own defaults otherwise
  (``agents.sf_train``: 4 epochs, lr 1e-3); with ``--sf-core own``, its own
  ``nn.GRU`` of the same width instead of the recall-rl core (the library as its
  users get it: the recall-rl core brings recall-rl's GRU kernels into its learner);
* sb3-contrib RecurrentPPO with an LSTM (its only core) of the same width, 16
  copies through ``agents.integrations.sb3.to_vec_env``, n_steps 128, batch 512, 4 epochs,
  lr 3e-4 (its defaults apart from the batch).

Both peers get the recipe's discount and entropy bonus (task knowledge, not
recall-rl tuning). recall-rl's curriculum (DelayedMatch, T-maze) is part of
its recipe; the peers train on the final task from the start. Each finished
run appends one JSON line to ``--out`` (so a stopped sweep keeps what it
measured); the table is printed at the end and by ``--table-only``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FRAMEWORKS = ("recall", "sf", "sb3")
NAMES = {"recall": "recall-rl PPO", "sf": "sample-factory APPO", "sb3": "sb3-contrib RecurrentPPO"}
# configs/env name -> the committed experiment that trains it (None: the env config and
# the trainer's defaults, where no experiment is committed).
RECIPES = {
    "delayed_match": "gru_delayed_match",
    "nback": "gru_nback",
    "tmaze": "gru_tmaze",
    "repeat_first": "gru_repeat_first",
    "repeat_previous": "gru_repeat_previous",
    "count_recall": "gru_count_recall",
    "autoencode": "gru_autoencode",
    "associative_recall": "hcam_associative_recall",
    "hidden_objects": "gru_hidden_objects",
    "ballet": "gru_ballet",
    "minigrid_memory": "gru_minigrid_memory",
}
RETURN_TASKS = ("RepeatFirst", "RepeatPrevious", "CountRecall", "Autoencode")  # POPGym: return bar
EVAL_TAGS = {"success": "eval/greedy_success_rate", "return": "eval/greedy_mean_return"}
EVAL_SEED_OFFSET = 1_000_000
SF_COPIES = 64
SB3_COPIES = 16


# --------------------------------------------------------------------------------- tasks
def task_spec(name: str) -> dict:
    """Env, knobs, core and horizon settings of a task's recall-rl recipe."""
    from omegaconf import OmegaConf

    from agents.common.config import compose, env_knobs, load_env_config

    if name not in RECIPES:
        raise ValueError(f"unknown task {name!r}; accepted: {', '.join(RECIPES)}")
    experiment = RECIPES[name]
    cfg = compose([f"experiment={experiment}"] if experiment else [f"env={name}"])
    env = OmegaConf.to_container(cfg.env, resolve=True) if experiment else dict(load_env_config(name))
    core = OmegaConf.to_container(cfg.core, resolve=True)
    short = str(env["id"]).split("/", 1)[-1].rsplit("-v", 1)[0]
    return {
        "task": name, "experiment": experiment, "env": env, "env_id": str(env["id"]),
        "knobs": env_knobs(env), "core": core["name"], "hidden": int(core.get("hidden_size", 128)),
        "core_kwargs": {k: v for k, v in core.items() if k != "name"},
        "gamma": float(cfg.algo.gamma), "ent_coef": float(cfg.algo.ent_coef),
        "seq_len": int(cfg.algo.seq_len), "metric": "return" if short in RETURN_TASKS else "success",
    }


def unsupported(fw: str, spec: dict) -> str | None:
    """Why ``fw`` cannot run this task here, or None."""
    from agents.integrations.sample_factory import SF_ENV_IDS

    if fw == "sf" and spec["env_id"] not in SF_ENV_IDS:
        return f"unsupported: agents.integrations.sample_factory does not serve {spec['env_id']}"
    return None


# ------------------------------------------------------------------------------ launchers
def _recall_cmd(spec, a, seed, logdir):
    pick = [f"experiment={spec['experiment']}"] if spec["experiment"] else [
        f"env={spec['task']}", "total_steps=1000000000000"]
    return [sys.executable, "-m", "agents.train", *pick, f"seed={seed}", f"device={a.device}",
            f"threads={a.threads}", f"runs_root={logdir}", "name=peers", "progress=false",
            "eval.episodes=0", "eval.video_episodes=0", "checkpoint_every=0",
            f"eval_every_seconds={a.eval_every_seconds}", "eval.deterministic=true",
            f"eval.during_episodes={a.eval_episodes}", f"eval.num_envs={a.eval_episodes}",
            *(["eval.snapshots=true"] if a.snapshots else []), *a.recall_overrides]


def _worker_cmd(fw, spec, a, seed, logdir):
    return [sys.executable, "-m", "benchmarks.peers", "--_worker", fw, "--tasks", spec["task"],
            "--seeds", str(seed), "--logdir", str(logdir), "--device", a.device,
            "--threads", str(a.threads), "--max-minutes", str(a.max_minutes),
            "--eval-episodes", str(a.eval_episodes), "--eval-every-seconds", str(a.eval_every_seconds),
            "--bar", str(a.bar), "--sf-core", a.sf_core, *(["--snapshots"] if a.snapshots else []),
            *(["--sf-flags", *a.sf_flags] if fw == "sf" and a.sf_flags else [])]


# -------------------------------------------------------------------------------- workers
class EvalClock:
    """Greedy evaluations of a peer every ``every`` seconds of training, logged as recall-rl does."""

    def __init__(self, logdir: str, spec: dict, every: float, bar: float):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(os.path.join(logdir, "eval_tb"))
        self.spec, self.every, self.bar = spec, every, bar
        self.next: float | None = None  # set at the first training step, as recall-rl's trainer does
        self.solved = False

    def due(self) -> bool:
        """Called after each training step: ``every`` seconds of training since the last
        evaluation (or since the first step) have passed."""
        if self.next is None:
            self.next = time.perf_counter() + self.every
        return time.perf_counter() >= self.next

    def log(self, steps: int, success: float, mean_return: float, walltime: float | None = None) -> None:
        """One evaluation's result; ``walltime``: when its weights were trained (a snapshot's)."""
        w = self.writer
        w.add_scalar("eval/greedy_success_rate", success, steps, walltime=walltime)
        w.add_scalar("eval/greedy_mean_return", mean_return, steps, walltime=walltime)
        value = success if self.spec["metric"] == "success" else mean_return
        self.solved = self.solved or value >= self.bar

    def evaluate(self, module, steps: int, play, snapshots=None) -> None:
        """``play()`` -> (success, return) of ``module``'s weights now, logged at ``steps``;
        first each of ``snapshots`` (the updates since the last evaluation), oldest first,
        up to the first that meets the bar."""
        started = time.perf_counter()
        if snapshots is not None and len(snapshots):
            with snapshots.replay(module) as each:
                for snap in each:
                    self.log(snap.steps, *play(), walltime=snap.walltime)
                    if self.solved:  # the first update at the bar: the run stops there
                        break
        if not self.solved:
            self.log(steps, *play())
            # How long the evaluations held training up, at the step of the last, which is
            # logged after them all (a snapshot's walltime is before): Curves.evals pairs
            # them. A run solved at a snapshot stops there, and its pause counts for nothing.
            self.writer.add_scalar("eval/seconds", time.perf_counter() - started, steps)
        self.writer.flush()
        self.next = time.perf_counter() + self.every


def sb3_greedy(model, spec: dict, episodes: int, seed: int, device: str) -> tuple[float, float]:
    """(success rate, mean return) of one greedy episode on each of ``episodes`` copies."""
    import numpy as np

    from agents.common.config import make_env
    from agents.integrations.sb3 import to_vec_env

    venv = to_vec_env(make_env(spec["env"], episodes, device, seed))
    obs = venv.reset()
    state, starts = None, np.ones(episodes, dtype=bool)
    success = np.full(episodes, np.nan)
    ret = np.zeros(episodes)
    while np.isnan(success).any():
        action, state = model.predict(obs, state=state, episode_start=starts, deterministic=True)
        obs, _, dones, infos = venv.step(action)
        for i in np.flatnonzero(dones & np.isnan(success)):
            success[i] = float(infos[i]["is_success"])
            ret[i] = infos[i]["episode"]["r"]
        starts = dones
    venv.close()
    return float(success.mean()), float(ret.mean())


def sb3_worker(spec: dict, seed: int, a) -> None:
    """RecurrentPPO (sb3-contrib) on the batched task, evaluated greedily by training time."""
    t0 = time.time()
    import torch
    from sb3_contrib import RecurrentPPO
    from stable_baselines3.common.callbacks import BaseCallback

    from agents.common.config import make_env
    from agents.evaluation.snapshots import WeightSnapshots
    from agents.integrations.sb3 import to_vec_env

    torch.set_num_threads(a.threads)
    clock = EvalClock(a.logdir, spec, a.eval_every_seconds, a.bar)
    snapshots = WeightSnapshots() if a.snapshots else None
    budget = a.max_minutes * 60

    class Stop(BaseCallback):
        def _on_step(self) -> bool:
            return time.time() - t0 < budget and not clock.solved

        def _on_rollout_end(self) -> None:
            # (the update of this rollout's samples comes after this call: a snapshot
            # here holds the weights that the last rollout ended with, as evaluated)
            model = self.model
            if clock.due():
                clock.evaluate(model.policy, model.num_timesteps, lambda: sb3_greedy(
                    model, spec, a.eval_episodes, seed + EVAL_SEED_OFFSET, a.device), snapshots)
            elif snapshots is not None:
                snapshots.take(model.policy, model.num_timesteps)

    venv = to_vec_env(make_env(spec["env"], SB3_COPIES, a.device, seed))
    model = RecurrentPPO(
        "MlpLstmPolicy", venv, n_steps=128, batch_size=512, n_epochs=4, learning_rate=3e-4,
        gamma=spec["gamma"], ent_coef=spec["ent_coef"],
        policy_kwargs=dict(lstm_hidden_size=spec["hidden"]), tensorboard_log=a.logdir,
        device=a.device, seed=seed, verbose=0,
    )
    model.learn(10**12, callback=Stop(), tb_log_name="sb3", log_interval=1)


def new_workdir(out: Path) -> Path:
    """A fresh folder for one invocation's run logs, beside ``out``: two sweeps started in the
    same second (side by side, or into the same ``--out``) never share one."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(tempfile.mkdtemp(prefix=f"logs_{out.stem}_{stamp}_", dir=out.parent))


def sf_core(spec: dict, which: str) -> tuple[str, dict]:
    """The ``agents.sf_train`` core name and options of a peer run: the recipe's recall-rl core
    (``which="recall"``), or sample-factory's own GRU / LSTM of the same width and depth."""
    if which == "recall":
        return spec["core"], spec["core_kwargs"]
    from agents.integrations.sample_factory import SF_OWN_CORE_OPTIONS, SF_OWN_CORES

    own = f"sf_{spec['core']}"
    if own not in SF_OWN_CORES:
        raise ValueError(f"--sf-core own: sample-factory has no core of the recipe's kind "
                         f"{spec['core']!r}; accepted: {', '.join(c[3:] for c in SF_OWN_CORES)}")
    return own, {k: v for k, v in spec["core_kwargs"].items() if k in SF_OWN_CORE_OPTIONS}


def sf_argv(spec: dict, seed: int, a) -> list[str]:
    """``agents.sf_train`` words and flags of a peer run; ``--sf-flags`` come last, so they win."""
    core, core_kwargs = sf_core(spec, a.sf_core)
    words = [f"env={spec['env_id']}", f"core={core}",
             *(f"env.{k}={json.dumps(v)}" for k, v in spec["knobs"].items()),
             *(f"core.{k}={json.dumps(v)}" for k, v in core_kwargs.items()),
             f"threads={a.threads}"]
    flags = ["--batched_sampling=True", "--num_envs_per_worker=1", f"--recall_copies={SF_COPIES}",
             f"--rollout={spec['seq_len']}", f"--gamma={spec['gamma']}",
             f"--exploration_loss_coeff={spec['ent_coef']}", f"--seed={seed}",
             f"--train_for_seconds={int(a.max_minutes * 60)}", "--train_for_env_steps=1000000000000",
             "--experiment=peers", f"--train_dir={a.logdir}", "--save_every_sec=1000000",
             "--experiment_summaries_interval=10",
             f"--device={'gpu' if a.device.startswith('cuda') else 'cpu'}"]
    return words + flags + [f"--{f}" for f in a.sf_flags]


def sf_worker(spec: dict, seed: int, a) -> int:
    """sample-factory's APPO with the recipe's recall-rl core, evaluated greedily by training time."""
    import torch
    from sample_factory.algo.runners.runner import AlgoObserver
    from sample_factory.algo.utils.misc import ExperimentStatus
    from sample_factory.train import make_runner

    from agents.evaluation.snapshots import WeightSnapshots
    from agents.integrations.sample_factory import register_all
    from agents.integrations.sf_enjoy import play_episodes
    from agents.integrations.sf_train import parse_cfg

    register_all()
    torch.set_num_threads(a.threads)
    cfg = parse_cfg(sf_argv(spec, seed, a))
    clock = EvalClock(a.logdir, spec, a.eval_every_seconds, a.bar)

    snapshots = WeightSnapshots() if a.snapshots else None

    class Evaluate(AlgoObserver):
        def on_training_step(self, runner, training_iteration_since_resume: int) -> None:
            learner = runner.learners[0].learner  # its step count is current; the runner's lags
            model = learner.actor_critic
            if not clock.due():
                if snapshots is not None:
                    snapshots.take(model, learner.env_steps)
                return

            def play():
                with torch.no_grad():
                    succ, rets, _ = play_episodes(model, runner.cfg, a.eval_episodes, a.eval_episodes,
                                                  seed + EVAL_SEED_OFFSET, True, a.device)
                return sum(succ) / len(succ), sum(rets) / len(rets)

            clock.evaluate(model, int(learner.env_steps), play, snapshots)
            if clock.solved:
                runner.cfg.train_for_seconds = 0  # the runner stops after this training step

    cfg, runner = make_runner(cfg)
    runner.register_observer(Evaluate())
    status = runner.init()
    if status == ExperimentStatus.SUCCESS:
        status = runner.run()
    return int(status)


# -------------------------------------------------------------------------------- reading
class Curves:
    """Scalars of every TensorBoard event folder under a run's log dir, re-read on demand."""

    def __init__(self, logdir: str):
        self.logdir = logdir
        self.acc: dict[str, object] = {}

    def points(self, tag: str) -> list[tuple[float, int, float]]:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        for root, _, files in os.walk(self.logdir):  # os.walk: sf writes under a hidden folder
            if root not in self.acc and any(f.startswith("events.out.tfevents.") for f in files):
                self.acc[root] = EventAccumulator(root, size_guidance={"scalars": 0})
        out = []
        for acc in self.acc.values():
            acc.Reload()
            if tag in acc.Tags().get("scalars", []):
                out += [(e.wall_time, int(e.step), float(e.value)) for e in acc.Scalars(tag)]
        return sorted(out)

    def evals(self, metric: str) -> list[tuple[float, int, float, float]]:
        """(wall time, env steps, greedy metric, evaluation seconds) of each evaluation."""
        values = self.points(EVAL_TAGS[metric])
        seconds = {s: v for _, s, v in self.points("eval/seconds")}
        # An evaluation's seconds go with the last result logged at its step: snapshots
        # (--snapshots) may share a step with it, logged at their own earlier times.
        last = {s: i for i, (_, s, _) in enumerate(values)}
        return [(w, s, v, seconds.get(s, 0.0) if last[s] == i else 0.0)
                for i, (w, s, v) in enumerate(values)]


def time_to_bar(evals, launched: float, bar: float) -> dict:
    """From a run's evaluations: when the bar was first met, in training time and wall time.

    Training time = wall time since launch less every evaluation up to that one
    (each evaluation's wall time is taken as it ends).
    """
    spent, out = 0.0, {"solved": False, "evals": len(evals)}
    for wall, steps, value, secs in evals:
        spent += secs
        train_s = wall - launched - spent
        out.update(train_s=round(train_s, 1), steps=steps, last=value,
                   best=max(value, out.get("best", -math.inf)))
        if value >= bar and not out["solved"]:
            out.update(solved=True, solve_s=round(train_s, 1), solve_wall_s=round(wall - launched, 1),
                       steps_at_solve=steps)
    if evals and out["train_s"] > 0:
        out["sps"] = round(out["steps"] / out["train_s"])
    return out


# -------------------------------------------------------------------------------- running
def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return rev + ("+changes" if dirty else "")
    except OSError:
        return "unknown"


def run_one(fw: str, spec: dict, seed: int, a, workdir: Path) -> dict:
    """Launch one framework on one task and seed; stop at the bar or the cap; its JSON row."""
    logdir = workdir / f"{fw}_{spec['task']}_s{seed}"
    logdir.mkdir(parents=True, exist_ok=True)
    core = {"recall": spec["core"], "sb3": "lstm", "sf": spec["core"]}[fw]
    no_own_core = None  # --sf-core own on a recipe whose core sample-factory does not have
    if fw == "sf" and a.sf_core == "own":
        try:
            core = sf_core(spec, "own")[0]
        except ValueError as err:
            no_own_core = f"unsupported: {err}"
    row = {"framework": fw, "task": spec["task"], "seed": seed, "env": spec["env_id"],
           "knobs": spec["knobs"], "core": core,
           "hidden": spec["hidden"], "metric": spec["metric"], "bar": a.bar,
           "max_minutes": a.max_minutes, "threads": a.threads, "device": a.device,
           "eval_every_s": a.eval_every_seconds, "eval_episodes": a.eval_episodes,
           **({"snapshots": True} if a.snapshots else {}),
           **({"recall_overrides": a.recall_overrides} if fw == "recall" and a.recall_overrides else {}),
           **({"sf_flags": a.sf_flags} if fw == "sf" and a.sf_flags else {}),
           "commit": _commit(), "machine": f"{os.cpu_count()} CPUs {platform.machine()}",
           "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "load_before": round(os.getloadavg()[0], 2), "log": str(logdir / "stdout.txt")}
    why = no_own_core or unsupported(fw, spec)
    if why:
        return {**row, "status": why, "solved": False}
    cmd = _recall_cmd(spec, a, seed, logdir) if fw == "recall" else _worker_cmd(fw, spec, a, seed, logdir)
    curves, cap = Curves(str(logdir)), a.max_minutes * 60
    launched = time.time()
    with open(logdir / "stdout.txt", "w") as out:
        # SIGINT back to its default in the child: a background job (`peers ... &`) ignores it,
        # and the trainers stop cleanly on the Ctrl-C sent below only with Python's handler.
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=_default_sigint, env={**os.environ, "OMP_NUM_THREADS": str(a.threads)})
        last_note = 0.0
        while proc.poll() is None:
            time.sleep(2)
            elapsed = time.time() - launched
            res = time_to_bar(curves.evals(spec["metric"]), launched, a.bar)
            if elapsed - last_note >= 30:
                last_note = elapsed
                print(f"[peers]   {elapsed / 60:4.1f} min: {res.get('evals', 0)} evaluations, "
                      f"{spec['metric']} {res.get('last', float('nan')):.3f} at {res.get('steps', 0):,} steps",
                      file=sys.stderr, flush=True)
            if res["solved"] or elapsed > cap + 30:
                break
        if proc.poll() is None:  # solved or over the cap: Ctrl-C (both trainers save and flush)
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    res = time_to_bar([e for e in curves.evals(spec["metric"]) if e[0] - launched <= cap + 5],
                      launched, a.bar)
    row.update(res, returncode=proc.returncode, wall_s=round(time.time() - launched, 1),
               load_after=round(os.getloadavg()[0], 2))
    if res["solved"]:
        row["status"] = "solved"
    elif res["evals"] == 0:
        tail = (logdir / "stdout.txt").read_text(errors="replace").strip().splitlines()[-1:]
        row["status"] = f"failed: no evaluation logged (exit {proc.returncode}): {' '.join(tail)[:300]}"
    else:
        row["status"] = f"not solved in {a.max_minutes:g} min"
    return row


# --------------------------------------------------------------------------------- tables
def _median(xs):
    return statistics.median(xs) if xs else None


def render(rows: list[dict]) -> str:
    """Markdown: per task, each framework's time to the bar and the best peer's ratio to recall-rl."""
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    out = ["| task (level) | bar | " + " | ".join(NAMES[f] for f in FRAMEWORKS)
           + " | best peer / recall-rl | 3x target |", "|---|---|" + "---:|" * (len(FRAMEWORKS) + 2)]
    for task in tasks:
        mine = [r for r in rows if r["task"] == task]
        cells, medians, caps = [], {}, {}
        for fw in FRAMEWORKS:
            runs = [r for r in mine if r["framework"] == fw]
            if not runs:
                cells.append("-")
                continue
            # a run that crashed (or could not start) says nothing about the time to the bar
            ran = [r for r in runs if not r["status"].startswith(("unsupported", "failed"))]
            if not ran:
                cells.append(runs[0]["status"].split(":")[0])
                continue
            failed = f", {len(runs) - len(ran)} failed" if len(ran) < len(runs) else ""
            solved = [r["solve_s"] for r in ran if r.get("solved")]
            caps[fw] = max(r["max_minutes"] for r in ran) * 60
            core = f"{runs[0]['core']} {runs[0]['hidden']}"
            if len(solved) == len(ran):
                medians[fw] = _median(solved)
                cells.append(f"{medians[fw]:.0f} s ({core}, {len(solved)}/{len(ran)}{failed})")
            else:
                cells.append(f"not in {caps[fw] / 60:g} min ({core}, {len(solved)}/{len(ran)} solved{failed})")
        peers = {f: m for f, m in medians.items() if f != "recall"}
        ours = medians.get("recall")
        if ours is None:
            ratio, ok = "-", "no (recall-rl not solved)"
        elif peers:
            r = min(peers.values()) / ours
            ratio, ok = f"{r:.1f}x", "yes" if r >= 3 else "no"
        else:
            tried = [caps[f] for f in caps if f != "recall"]
            r = min(tried) / ours if tried else None
            ratio = f"> {r:.1f}x" if r else "-"
            ok = ("yes" if r >= 3 else "not shown (cap too short)") if r else "-"
        first = mine[0]
        level = ", ".join(f"{k}={v}" for k, v in first["knobs"].items())
        cells_txt = " | ".join(cells)
        out.append(f"| {first['env']} ({level}) | {first['metric']} >= {first['bar']} | {cells_txt} "
                   f"| {ratio} | {ok} |")
    out += ["", "| framework | task | seed | status | time to bar (s) | wall (s) | env steps at bar "
            "| steps/s | best greedy | evals | load before/after | commit |",
            "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        def g(k, f="{}", r=r):
            return f.format(r[k]) if r.get(k) is not None else "-"
        name = " ".join([NAMES[r["framework"]], *r.get("recall_overrides", []), *r.get("sf_flags", [])])
        out.append(f"| {name} | {r['task']} | {r['seed']} | {r['status']} "
                   f"| {g('solve_s')} | {g('solve_wall_s')} | {g('steps_at_solve', '{:,}')} "
                   f"| {g('sps', '{:,}')} | {g('best', '{:.3f}')} | {g('evals')} "
                   f"| {g('load_before')} / {g('load_after')} | {r['commit']} |")
    return "\n".join(out)


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        raise SystemExit(f"--out {path}: no such file (run the benchmark first)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", nargs="+", default=list(RECIPES), choices=list(RECIPES), metavar="TASK",
                   help=f"configs/env names (default all: {', '.join(RECIPES)})")
    p.add_argument("--frameworks", nargs="+", default=list(FRAMEWORKS), choices=list(FRAMEWORKS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--max-minutes", type=float, default=10.0, help="wall-clock cap per framework run")
    p.add_argument("--bar", type=float, default=0.9, help="greedy success (or return) counted as solved")
    p.add_argument("--eval-every-seconds", type=float, default=5.0,
                   help="training seconds between greedy evaluations")
    p.add_argument("--eval-episodes", type=int, default=256, help="episodes per evaluation")
    p.add_argument("--device", default="cpu", help="cpu or cuda (all frameworks)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads, all frameworks")
    p.add_argument("--recall-overrides", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra agents.train overrides for recall-rl (a probe, not its recipe)")
    p.add_argument("--sf-flags", nargs="*", default=[], metavar="FLAG=VALUE",
                   help="extra sample-factory flags for its APPO, without the dashes (a probe, not its "
                        "set-up; e.g. normalize_input=False); a flag given here wins over the script's")
    p.add_argument("--sf-core", choices=("recall", "own"), default="recall",
                   help="sample-factory's model core: the recipe's recall-rl core inside it (recall, "
                        "its learner then runs recall-rl's GRU kernels) or its own nn.GRU / nn.LSTM of "
                        "the same width (own: the library as its users run it)")
    p.add_argument("--snapshots", action="store_true",
                   help="every framework keeps its weights after each update and plays them at the "
                        "next evaluation, each logged at its own time: the bar to the update, not to "
                        "the evaluation (agents/evaluation/snapshots.py)")
    p.add_argument("--out", default="runs/peers/solve.jsonl",
                   help="JSON lines, one per run (appended); the runs' logs go beside it")
    p.add_argument("--table-only", action="store_true", help="print the table of --out and stop")
    p.add_argument("--logdir", help=argparse.SUPPRESS)
    p.add_argument("--_worker", dest="worker", choices=("sf", "sb3"), help=argparse.SUPPRESS)
    return p


def check_args(a) -> None:
    """One line naming the bad value and what is accepted."""
    for name, value, low in (("--max-minutes", a.max_minutes, 0), ("--eval-every-seconds",
                             a.eval_every_seconds, 0), ("--eval-episodes", a.eval_episodes, 0),
                             ("--threads", a.threads, 0)):
        if not value > low:
            raise SystemExit(f"error: {name} {value:g} is not accepted; accepted: > {low}")
    if not -1 <= a.bar <= 1:
        raise SystemExit(f"error: --bar {a.bar:g} is not accepted; accepted: -1 to 1")


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    check_args(a)
    if a.worker:
        spec = task_spec(a.tasks[0])
        if a.worker == "sb3":
            sb3_worker(spec, a.seeds[0], a)
            return 0
        return sf_worker(spec, a.seeds[0], a)
    out = Path(a.out)
    if a.table_only:
        print(render(read_rows(out)))
        return 0
    from agents.common.device import check_device

    try:
        check_device(a.device)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    workdir = new_workdir(out)
    jobs = [(t, fw, s) for t in a.tasks for s in a.seeds for fw in a.frameworks]
    for i, (task, fw, seed) in enumerate(jobs, 1):
        spec = task_spec(task)
        print(f"[peers] {i}/{len(jobs)}: {task} / {NAMES[fw]} / seed {seed} (cap {a.max_minutes:g} min)",
              file=sys.stderr, flush=True)
        row = run_one(fw, spec, seed, a, workdir)
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"[peers]   {row['status']}" + (f" in {row['solve_s']} s" if row.get("solved") else ""),
              file=sys.stderr, flush=True)
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, device "
          f"{a.device}, torch threads {a.threads}; cap {a.max_minutes:g} min per run; greedy bar "
          f"{a.bar}; rows of {out}:\n")
    print(render(read_rows(out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
