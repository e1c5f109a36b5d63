"""recall-rl's PPO vs sample-factory's APPO vs sb3-contrib's RecurrentPPO, side by side.

    python -m benchmarks.peers --budget-seconds 300
    python -m benchmarks.peers --tasks delayed_match --frameworks recall sf --budget-seconds 60

Same tasks (DelayedMatch with delay 32; NBack with n = 2), the same recurrent
core size (hidden 128: recall-rl's GRU core, sample-factory with the same GRU
core through ``agents.sf_integration``, sb3-contrib's LSTM, its only choice),
the same machine and torch thread count, one framework at a time, each in its
own process with a wall-clock budget (``--budget-seconds``, startup included).

Every framework logs its own training success rate to TensorBoard
(recall-rl ``charts/success_rate``, sample-factory
``policy_stats/avg_success``, SB3 ``rollout/success_rate``); this script reads
those event files afterwards, so nothing is timed inside the frameworks:

* steps/s: env steps between the first and the last logged point, over the
  wall-clock between them (training throughput, startup excluded);
* seconds to success: wall-clock from launching the process to the first
  logged success rate >= ``--target`` (0.95), or "not reached";
* final success: the last success rate logged within the budget (training episodes, each
  framework's own running average: SB3 and sample-factory over the last 100
  episodes, recall-rl over the episodes of the last update).

With ``--stop-at-target`` a framework stops as soon as it reaches the target,
which saves time but makes "final success" the success at that point.

Settings per framework are the ones a user would pick for this machine:
recall-rl's acceptance experiments (``configs/experiment/gru_delayed_match.yaml``,
with its success-gated delay curriculum 4, 8, 16, 32, and ``gru_nback.yaml``;
success before the curriculum reaches delay 32 counts as 0), sample-factory in serial synchronous mode
with batched sampling of 64 copies (its fastest CPU set-up here; the
single-env sampler is far slower) and rollout = recurrence = 64 so that one
BPTT sequence spans a delay-32 episode, SB3 with 16 envs in one process
(``to_vec_env``). Numbers are printed as a markdown table; none are stored.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMEWORKS = ("recall", "sf", "sb3")
NAMES = {"recall": "recall-rl PPO (GRU 128)", "sf": "sample-factory APPO (GRU 128)",
         "sb3": "sb3-contrib RecurrentPPO (LSTM 128)"}
# task -> (recall-rl experiment, env id, knobs)
TASKS = {
    "delayed_match": ("gru_delayed_match", "recall/DelayedMatch-v0", {"delay": 32}),
    "nback": ("gru_nback", "recall/NBack-v0", {"n": 2}),
}
TAGS = {"recall": "charts/success_rate", "sf": "policy_stats/avg_success", "sb3": "rollout/success_rate"}


# ------------------------------------------------------------------------- launchers
def _recall_cmd(task, budget, device, logdir, threads, target, stop):
    experiment, _, knobs = TASKS[task]
    return [
        sys.executable, "-m", "agents.train", f"experiment={experiment}", "core.hidden_size=128",
        *[f"env.{k}={v}" for k, v in knobs.items()],
        f"device={device}", f"threads={threads}", "total_steps=1000000000", "progress=false",
        f"runs_root={logdir}", "name=peers", "eval.episodes=0", "eval.video_episodes=0",
        "checkpoint_every=1000000",
    ]


def _sf_cmd(task, budget, device, logdir, threads, target, stop):
    _, env_id, knobs = TASKS[task]
    return [
        sys.executable, "-m", "agents.sf_train", f"env={env_id}", "core=gru", "core.hidden_size=128",
        *[f"env.{k}={v}" for k, v in knobs.items()], f"threads={threads}",
        "--batched_sampling=True", "--num_envs_per_worker=1", "--recall_copies=64", "--rollout=64",
        f"--train_for_seconds={max(1, int(budget) - 20)}", "--train_for_env_steps=1000000000",
        "--experiment=peers", f"--train_dir={logdir}", "--experiment_summaries_interval=2",
        "--flush_summaries_interval=5", "--save_every_sec=100000",
        f"--device={'gpu' if device.startswith('cuda') else 'cpu'}",
    ]


def _sb3_cmd(task, budget, device, logdir, threads, target, stop):
    return [
        sys.executable, "-m", "benchmarks.peers", "--_sb3-worker", task, "--budget-seconds", str(budget),
        "--device", device, "--threads", str(threads), "--target", str(target), "--logdir", logdir,
        *(["--stop-at-target"] if stop else []),
    ]


LAUNCH = {"recall": _recall_cmd, "sf": _sf_cmd, "sb3": _sb3_cmd}


def sb3_worker(task: str, budget: float, device: str, threads: int, logdir: str, target: float, stop: bool):
    """RecurrentPPO on a batched env through envs.sb3.to_vec_env, stopped by wall clock."""
    t0 = time.time()
    import numpy as np
    import torch
    from sb3_contrib import RecurrentPPO
    from stable_baselines3.common.callbacks import BaseCallback

    import envs
    from envs.sb3 import to_vec_env

    torch.set_num_threads(threads)
    _, env_id, knobs = TASKS[task]

    class Budget(BaseCallback):
        def _on_step(self) -> bool:
            return time.time() - t0 < budget

        def _on_rollout_end(self) -> None:
            buf = self.model.ep_success_buffer
            if stop and len(buf) >= 20 and float(np.mean(buf)) >= target:
                self.model._stop = True

    class Stopper(Budget):
        def _on_step(self) -> bool:
            return super()._on_step() and not getattr(self.model, "_stop", False)

    venv = to_vec_env(envs.make_vec(env_id, 16, device="cpu", seed=0, **knobs))
    model = RecurrentPPO(
        "MlpLstmPolicy", venv, n_steps=128, batch_size=512, n_epochs=4, learning_rate=3e-4,
        ent_coef=0.01, policy_kwargs=dict(lstm_hidden_size=128), tensorboard_log=logdir,
        device=device, seed=0, verbose=0,
    )
    model.learn(10**12, callback=Stopper(), tb_log_name="sb3", log_interval=1)


# ---------------------------------------------------------------------------- reading
def read_curve(logdir: str, tag: str) -> list[tuple[float, int, float]]:
    """(wall_time, step, value) of ``tag`` in every TensorBoard event file under ``logdir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points = []
    folders = {
        root for root, _, files in os.walk(logdir) if any(f.startswith("events.out.tfevents.") for f in files)
    }  # os.walk, not glob: sample-factory writes under a hidden ".summary" folder
    for folder in sorted(folders):
        acc = EventAccumulator(folder, size_guidance={"scalars": 0})
        acc.Reload()
        if tag in acc.Tags().get("scalars", []):
            points += [(e.wall_time, int(e.step), float(e.value)) for e in acc.Scalars(tag)]
    return sorted(points)


def success_curve(fw: str, task: str, logdir: str) -> list[tuple[float, int, float]]:
    """The success curve of a run on the benchmark's task itself.

    recall-rl's DelayedMatch experiment trains through a delay curriculum (4, 8, 16, 32);
    success logged while an easier delay is in force is not success on the task, so it
    counts as 0 here (the curriculum's stage is logged at the same step as the success).
    """
    points = read_curve(logdir, TAGS[fw])
    knobs = TASKS[task][2]
    for knob, final in knobs.items():
        stage = {step: value for _, step, value in read_curve(logdir, f"curriculum/{knob}")}
        if stage:
            points = [(w, s, v if stage.get(s, final) == final else 0.0) for w, s, v in points]
    return points


def summarize(points, launched: float, target: float, budget: float | None = None) -> dict:
    """Steps/s, seconds to ``target`` and final success from one curve, cut at the budget.

    A trainer may run on for a few seconds after Ctrl-C; points logged after
    ``launched + budget`` are ignored so every framework is judged on the same time.
    """
    if budget is not None:
        points = [p for p in points if p[0] - launched <= budget]
    if len(points) < 2:
        return {"sps": None, "to_target": None, "final": points[-1][2] if points else None, "steps": 0}
    (w0, s0, _), (w1, s1, v1) = points[0], points[-1]
    reached = next((w for w, _, v in points if v >= target), None)
    return {
        "sps": (s1 - s0) / (w1 - w0) if w1 > w0 else None,
        "to_target": None if reached is None else reached - launched,
        "final": v1,
        "steps": s1,
    }


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_one(fw, task, args, workdir) -> dict:
    logdir = os.path.join(workdir, f"{fw}_{task}")
    os.makedirs(logdir, exist_ok=True)
    cmd = LAUNCH[fw](task, args.budget_seconds, args.device, logdir, args.threads, args.target, args.stop_at_target)
    launched = time.time()
    with open(os.path.join(logdir, "stdout.txt"), "w") as out:
        # SIGINT back to its default in the child: a shell's background job (`peers ... &`)
        # ignores it, Python then installs no KeyboardInterrupt handler, and the trainers
        # could not stop cleanly on the Ctrl-C below.
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=_default_sigint)
        poll_target = args.stop_at_target and fw != "sb3"
        # recall-rl and sample-factory get Ctrl-C at the budget (both stop cleanly on it;
        # sample-factory flushes its summaries every 5 s). The SB3 worker stops itself at
        # the budget counted from its own start, so it gets a short grace period.
        limit = args.budget_seconds + (30 if fw == "sb3" else 0)
        while proc.poll() is None:
            time.sleep(1)
            elapsed = time.time() - launched
            if elapsed > limit:
                break
            if poll_target:
                pts = success_curve(fw, task, logdir)
                if pts and pts[-1][2] >= args.target:
                    break
        if proc.poll() is None:  # out of budget: Ctrl-C (both trainers save and flush on it)
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    res = summarize(success_curve(fw, task, logdir), launched, args.target, args.budget_seconds + 5)
    res["returncode"] = proc.returncode
    res["log"] = os.path.join(logdir, "stdout.txt")
    return res


def _fmt(res) -> list[str]:
    sps = "n/a" if res["sps"] is None else f"{res['sps']:,.0f}"
    tt = "not reached" if res["to_target"] is None else f"{res['to_target']:.0f}"
    fin = "n/a" if res["final"] is None else f"{res['final']:.3f}"
    return [sps, tt, fin, f"{res['steps']:,}"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget-seconds", type=float, default=300.0, help="wall clock per framework and task")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--frameworks", nargs="+", default=list(FRAMEWORKS), choices=list(FRAMEWORKS))
    p.add_argument("--device", default="cpu", help="cpu or cuda (all frameworks)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads, all frameworks")
    p.add_argument("--target", type=float, default=0.95, help="success rate counted as solved")
    p.add_argument("--stop-at-target", action="store_true", help="stop a framework once it reaches the target")
    p.add_argument("--workdir", default=None, help="keep logs here (default: a temporary folder, removed)")
    p.add_argument("--logdir", help=argparse.SUPPRESS)
    p.add_argument("--_sb3-worker", dest="sb3_worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.budget_seconds <= 0:
        raise SystemExit(f"--budget-seconds must be > 0, got {args.budget_seconds}")
    if args.threads < 1:
        raise SystemExit(f"--threads must be >= 1, got {args.threads}")
    if not 0 < args.target <= 1:
        raise SystemExit(f"--target must be in (0, 1], got {args.target}")
    if args.sb3_worker:
        sb3_worker(args.sb3_worker, args.budget_seconds, args.device, args.threads, args.logdir,
                   args.target, args.stop_at_target)
        return 0

    workdir = args.workdir or tempfile.mkdtemp(prefix="peers_")
    load_before = os.getloadavg()[1]
    rows = []
    try:
        for task in args.tasks:
            for fw in args.frameworks:
                print(f"[peers] {task} / {fw} (budget {args.budget_seconds:.0f} s)...", file=sys.stderr, flush=True)
                res = run_one(fw, task, args, workdir)
                print(f"[peers]   {json.dumps(res)}", file=sys.stderr, flush=True)
                rows.append((task, fw, res))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    knobs = {t: ", ".join(f"{k}={v}" for k, v in TASKS[t][2].items()) for t in args.tasks}
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"device {args.device}, torch threads {args.threads}; budget {args.budget_seconds:.0f} s "
          f"per run; target success {args.target}; load average (5 min) before {load_before:.1f}, "
          f"after {os.getloadavg()[1]:.1f}")
    print()
    print(f"| task | framework | steps/s | seconds to success >= {args.target} | final success | env steps |")
    print("|---|---|---:|---:|---:|---:|")
    for task, fw, res in rows:
        print(f"| {TASKS[task][1]} ({knobs[task]}) | {NAMES[fw]} | " + " | ".join(_fmt(res)) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
