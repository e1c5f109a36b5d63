"""Recurrent PPO training: the Hydra entry point.

    python -m agents.train env=delayed_match core=hcam env.delay=64 \\
        algo.num_envs=512 device=cuda seed=3 total_steps=5_000_000
    python -m agents.train experiment=gru_delayed_match
    python -m agents.train resume=runs/default/20260101-120000

Everything of a run goes to ``runs/<name>/<timestamp>/``: ``config.yaml`` (the
resolved config), ``tb/`` (TensorBoard), ``checkpoints/latest.pt``,
``videos/``, ``results.json`` (agents/common/results.py). A multirun (``-m``) puts its
runs in ``runs/<name>/<timestamp>/<overrides>/`` (agents/common/sweep.py). The rollout
loop keeps everything on the env's device; the logged scalars cross to the host
once per update, in one transfer.

Faults (see ``agents.common.signals``): SIGINT (Ctrl-C), SIGTERM, SIGHUP and SIGUSR1
finish the update in progress, write the checkpoint, print how to resume and
exit with 128 + the signal's number; a second one exits at once. A checkpoint
holds everything the next update reads (weights, optimizer, env state of every
copy, core state and last observations, every RNG, the lr schedule), so a run
stopped (or killed) and resumed ends bit-identical to one that was not, on CPU.
A non-finite loss stops the run with a message and leaves the last good
checkpoint as it was. A run that fails to start leaves no run folder behind.

Several GPUs or nodes: ``torchrun --nproc_per_node=N -m agents.train ...`` trains
one run data-parallel (``agents.ppo.distributed``): each rank steps its own
``algo.num_envs`` copies, ``total_steps`` and the logged steps count all ranks'
steps, and rank 0 alone writes the run's files.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from agents.common.checkpoint import (
    CHECKPOINT_DIR,
    LATEST,
    check_checkpoint_fits,
    load_checkpoint,
    previous_path,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from agents.common.cli import check_hydra_args, launch
from agents.common.config import (
    check_env_knobs,
    env_overrides,
    make_env,
    make_policy,
    policy_spec,
    ppo_config,
    to_dict,
)
from agents.common.device import check_device, set_up_cpu
from agents.common.results import write_results
from agents.common.run_dir import new_run_dir
from agents.common.signals import GracefulStop
from agents.common.tree import tree_map
from agents.evaluation.evaluate import EVAL_SEED_OFFSET, MODES, evaluate_modes
from agents.evaluation.snapshots import WeightSnapshots
from agents.ppo.curriculum import Curriculum
from agents.ppo.distributed import (
    REPEAT_GRACE_S,
    NullWriter,
    Ranks,
    check_launch,
    check_world_size,
    process_group,
)
from agents.ppo.learner import PPO
from agents.ppo.lr_schedule import LinearDecay
from agents.ppo.rollout import Rollout
from envs import rng

# Top-level keys a resumed run may change from the command line (others come from the run).
RESUMABLE_KEYS = ("total_steps", "device", "threads", "progress", "checkpoint_every",
                  "video_every", "eval_every", "eval_every_seconds", "eval")
GROUPS = ("env", "core", "algo", "experiment")
# What one rollout hands the next (and a checkpoint keeps): the observation, core state,
# episode starts and previous action/reward of every env copy.
CARRY = ("obs", "state", "starts", "prev_a", "prev_r")


class EnvConfigError(ValueError):
    """The composed env config holds knobs its task does not have."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped without saving the bad weights."""


# ---------------------------------------------------------------------------------- run dirs
def _resume_config(cfg: DictConfig, overrides: list[str]) -> tuple[DictConfig, Path]:
    """The resumed run's own config, with the few run settings the command line may change."""
    run_dir = Path(cfg.resume)
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        raise FileNotFoundError(f"resume={run_dir}: no config.yaml there (is it a run dir?)")
    run_cfg = OmegaConf.load(saved)
    for item in overrides:
        key = item.lstrip("+~").split("=", 1)[0]
        top = key.split(".", 1)[0]
        if key == "resume":
            continue
        if top in RESUMABLE_KEYS:
            OmegaConf.update(run_cfg, key, OmegaConf.select(cfg, key), force_add=True)
        else:
            print(f"resume: ignoring {item!r} (a resumed run keeps its own {top})", file=sys.stderr)
    run_cfg.resume = str(run_dir)
    return run_cfg, run_dir


def _resume_checkpoint(run_dir: Path) -> dict | None:
    """The run's checkpoint; None for a run killed before it wrote its first one."""
    latest = run_dir / CHECKPOINT_DIR / LATEST
    if not latest.exists() and not previous_path(latest).exists():
        print(f"resume: {run_dir} has no checkpoint yet: starting it from the beginning",
              file=sys.stderr, flush=True)
        return None
    return load_checkpoint(run_dir, map_location="cpu")


def _num_updates(cfg: DictConfig, world_size: int = 1) -> int:
    steps = ppo_config(cfg.algo).steps_per_update * world_size
    return max(1, math.ceil(int(cfg.total_steps) / steps))


def _save_config(cfg: DictConfig, run_dir: Path) -> None:
    tmp = run_dir / ".config.yaml.tmp"
    OmegaConf.save(cfg, tmp)
    tmp.replace(run_dir / "config.yaml")


# ------------------------------------------------------------------------------- training
def run(cfg: DictConfig, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Train (or resume) one run; returns a summary (run_dir, global_step, eval, ...).

    Under torchrun every process calls this, and joins the run's process group first.
    """
    if cfg.get("resume"):
        cfg, run_dir = _resume_config(cfg, list(overrides))
        check_device(cfg.device)
        with process_group(cfg.device) as ranks:
            return _resume(cfg, run_dir, ranks)
    check_device(cfg.device)
    try:
        check_env_knobs(cfg.env)
    except ValueError as err:  # e.g. an experiment's knobs on another task (env=...)
        raise EnvConfigError(str(err)) from None
    with process_group(cfg.device) as ranks:
        if not ranks.is_main:  # rank 0 makes the folder and resolves the config
            run_dir, resolved = ranks.broadcast(None)
            return Trainer(OmegaConf.create(resolved), Path(run_dir), None, ranks).train()
        with new_run_dir(cfg) as run_dir:
            cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
            cfg.run_dir = str(run_dir)
            OmegaConf.save(cfg, run_dir / "config.yaml")
            ranks.broadcast((str(run_dir), OmegaConf.to_container(cfg)))
            trainer = Trainer(cfg, run_dir, None, ranks)
        return trainer.train()


def _resume(cfg: DictConfig, run_dir: Path, ranks: Ranks) -> dict[str, Any]:
    ckpt = _resume_checkpoint(run_dir)
    if ckpt is not None:
        check_world_size(int(ckpt.get("world_size", 1)), ranks.world_size, run_dir)
    if (ckpt is not None and ckpt.get("finished", True)
            and ckpt["update"] >= _num_updates(cfg, ranks.world_size)):
        # Nothing to add: no evaluation again, no video overwritten.
        if ranks.is_main:
            print(f"run {run_dir} is complete ({ckpt['global_step']} steps, total_steps="
                  f"{cfg.total_steps}); nothing to do. Resume with a larger total_steps= to "
                  "train it further.", file=sys.stderr, flush=True)
        return {"run_dir": str(run_dir), "global_step": int(ckpt["global_step"]),
                "checkpoint": ckpt["_source"], "interrupted": False, "complete": True}
    saved = OmegaConf.load(run_dir / "config.yaml")
    saved.resume = cfg.resume
    if OmegaConf.to_yaml(cfg) != OmegaConf.to_yaml(saved) and ranks.is_main:
        _save_config(cfg, run_dir)  # e.g. a new total_steps: a later resume starts from it
    return Trainer(cfg, run_dir, ckpt, ranks).train()


class Trainer:
    def __init__(self, cfg: DictConfig, run_dir: Path, ckpt: dict | None,
                 ranks: Ranks | None = None):
        self.cfg = cfg
        # This process's rank in a run of several (agents.ppo.distributed); one rank by default.
        self.ranks = ranks or Ranks(torch.device(cfg.device))
        self.run_dir = run_dir
        self.ckpt_path = run_dir / CHECKPOINT_DIR / LATEST
        self.started = time.time()  # the wall time of results.json
        set_up_cpu(cfg)  # torch threads, glibc's freed-memory reuse
        self.device = self.ranks.device
        seed = rng.check_seed(cfg.seed)
        # The final evaluation's env is seeded seed + EVAL_SEED_OFFSET: refuse now, not at the end.
        rng.check_seed(seed + EVAL_SEED_OFFSET, f"seed + {EVAL_SEED_OFFSET} (evaluation)")
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

        if float(cfg.get("eval_every_seconds") or 0) < 0:
            raise ValueError(f"eval_every_seconds={cfg.eval_every_seconds} must be >= 0 (0: none)")
        self.algo = ppo_config(cfg.algo)
        self.steps_per_update = self.algo.steps_per_update * self.ranks.world_size  # all ranks'
        self.global_step = 0
        self.update = 0
        self.finished = False  # the loop ran to the end (the final evaluation may follow)
        if ckpt is not None:
            self.global_step = int(ckpt["global_step"])
            self.update = int(ckpt["update"])
        self.curriculum = Curriculum(cfg.get("curriculum"), cfg.env)
        if ckpt is not None:
            self.curriculum.stage = int(ckpt.get("curriculum_stage", 0))
        self.env = self._make_train_env()
        self.curriculum.check_spaces(self.env)
        self.spec = policy_spec(cfg, self.env)
        self.policy = make_policy(self.spec).to(self.device)
        self.policy.env_id = cfg.env.id
        self.ppo = PPO(self.policy, self.algo)
        if self.ranks.parallel:  # same initial weights everywhere, then draws of its own
            rank_seed = self.ranks.seed(seed)
            random.seed(rank_seed)
            np.random.seed(rank_seed)
            torch.manual_seed(rank_seed)
        self.num_updates = _num_updates(cfg, self.ranks.world_size)
        self.schedule = LinearDecay(0, self.algo.learning_rate, self.num_updates, self.algo.anneal_lr)
        self.carry: dict[str, Any] | None = None  # keys CARRY
        self._keep_previous = True
        self._saved_update: int | None = None
        if ckpt is not None:
            self._restore(ckpt)
        # purge_step drops events a crashed run logged after its last checkpoint (those
        # logged at the checkpoint's own step came before it and stay); a run restarted
        # from the beginning (killed before its first checkpoint) drops them all.
        purge = self.global_step + 1 if ckpt is not None else (0 if cfg.get("resume") else None)
        self.writer = (SummaryWriter(str(run_dir / "tb"), purge_step=purge) if self.ranks.is_main
                       else NullWriter())
        if ckpt is None:
            self.writer.add_text("config", "```\n" + OmegaConf.to_yaml(cfg) + "\n```", 0)
        self.ranks.wrap(self.ppo)  # last: DDP starts from the weights all ranks now hold

    # ------------------------------------------------------------------ checkpoints
    def _restore(self, ckpt: dict) -> None:
        check_checkpoint_fits(ckpt, self.spec, self.cfg.env.id)
        self.policy.load_state_dict(ckpt["model"])
        self.ppo.optimizer.load_state_dict(ckpt["optimizer"])
        if "ent_coef" in ckpt:  # the adapted bonus (algo.target_entropy); older files: algo.ent_coef
            self.ppo.ent_coef.copy_(torch.as_tensor(ckpt["ent_coef"]))
        if self.ppo.return_norm is not None and "return_norm" in ckpt:
            self.ppo.return_norm.load_state_dict(ckpt["return_norm"])
        if "lr_schedule" in ckpt:
            saved = LinearDecay(**ckpt["lr_schedule"])
        else:  # written before schedules were stored: planned over that run's own total_steps
            saved = LinearDecay(0, self.algo.learning_rate, _num_updates(OmegaConf.create(
                ckpt["config"])), self.algo.anneal_lr)
        self.schedule = saved.replan(self.update, self.num_updates)
        if self.schedule != saved and self.ranks.is_main and self.schedule.anneal:
            print(f"lr schedule: total_steps changed; re-planned from lr "
                  f"{self.schedule.start_lr:.4g} at update {self.schedule.start} to 0 at update "
                  f"{self.num_updates}", file=sys.stderr, flush=True)
        own = ckpt if self.ranks.rank == 0 else ckpt["other_ranks"][self.ranks.rank - 1]
        if "env_state" in own:
            self.env.load_state_dict(own["env_state"])
            self.carry = tree_map(lambda x: x.to(self.device), own["carry"])
        else:
            print("resume: the checkpoint holds no env state (an older format): continuing on "
                  "fresh episodes", file=sys.stderr, flush=True)
        # A damaged latest.pt must not push the good previous one out at the next save.
        self._keep_previous = Path(ckpt["_source"]).name == LATEST
        set_rng_state(own["rng"])  # last: nothing between here and the first update draws

    def save(self) -> Path:
        """Write the checkpoint (rank 0, with every rank's env copies, carry and RNG)."""
        own = {"rng": rng_state(), "env_state": self.env.state_dict(), "carry": self.carry}
        ranks = self.ranks.gather(own)
        path = self._write(ranks) if self.ranks.is_main else self.ckpt_path
        self.ranks.barrier()  # no rank goes on (or exits) before the file is in place
        return path

    def _write(self, ranks: list[dict]) -> Path:
        payload = {
            "kind": "ppo",
            "model": self.policy.state_dict(),
            "optimizer": self.ppo.optimizer.state_dict(),
            "ent_coef": self.ppo.ent_coef.item(),
            **({} if self.ppo.return_norm is None else {"return_norm": self.ppo.return_norm.state_dict()}),
            "config": to_dict(self.cfg),
            "policy": self.spec,
            "env_id": self.cfg.env.id,
            "global_step": self.global_step,
            "update": self.update,
            "curriculum_stage": self.curriculum.stage,
            "finished": self.finished,
            "lr_schedule": self.schedule.state_dict(),
            **ranks[0],
        }
        if self.ranks.parallel:
            payload.update(world_size=self.ranks.world_size, other_ranks=ranks[1:])
        # A checkpoint's TensorBoard events reach the disk first: a run killed after the
        # save resumes after them and never logs them again.
        self.writer.flush()
        # Saved twice at one update (periodic, then final): previous stays an earlier one.
        keep = self._keep_previous and self._saved_update != self.update
        path = save_checkpoint(self.ckpt_path, payload, keep_previous=keep)
        self._keep_previous, self._saved_update = True, self.update
        return path

    def _make_train_env(self):
        # A new curriculum stage starts fresh episodes on a seed of its own (a resumed run
        # then loads the env state it had).
        seed = (int(self.cfg.seed) + 7919 * self.update) % rng.SEED_LIMIT
        # Rank r plays its own shard of the copies: those of a batch of world_size * num_envs.
        return make_env(self.curriculum.env_cfg(), self.algo.num_envs, str(self.device), seed,
                        check_actions=False, first_copy=self.ranks.first_copy(self.algo.num_envs))

    def _fresh_episodes(self) -> dict[str, Any]:
        """Reset every env copy: first observations, initial core state, all starts."""
        obs, _ = self.env.reset()
        B, dev = self.algo.num_envs, self.device
        return {"obs": obs, "state": self.policy.initial_state(B, dev),
                "starts": torch.ones(B, dtype=torch.bool, device=dev),
                "prev_a": torch.zeros(B, dtype=torch.int64, device=dev),
                "prev_r": torch.zeros(B, dtype=torch.float32, device=dev)}

    def _weights_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.policy.parameters())

    # ------------------------------------------------------------------ main loop
    def train(self) -> dict[str, Any]:
        cfg = self.cfg
        bar = tqdm(
            total=self.num_updates * self.steps_per_update, initial=self.global_step,
            unit="step", unit_scale=True, dynamic_ncols=True,
            disable=not cfg.progress or not self.ranks.is_main,
            desc=f"{cfg.core.name} on {cfg.env.id}",
        )
        summary: dict[str, Any] = {"run_dir": str(self.run_dir), "interrupted": False}
        with GracefulStop(repeat_grace=REPEAT_GRACE_S if self.ranks.parallel else 0.0) as stop:
            try:
                self._loop(bar, stop)
            except KeyboardInterrupt:
                # Only where no handler could be installed (training outside the main
                # thread): the update it cut is half done, so nothing is saved.
                print(f"\ninterrupted inside update {self.update + 1}: dropped it; the last "
                      f"checkpoint {self.ckpt_path} is kept", file=sys.stderr, flush=True)
                summary.update(interrupted=True, exit_status=130)
            finally:
                bar.close()
                self.writer.flush()
            # (asked of every rank again: one may have been signalled in the last update)
            if not summary["interrupted"] and self.ranks.stop_requested(stop):
                # Still under the handlers: a second signal during this save exits at once,
                # and the atomic rename leaves the last checkpoint whole.
                summary.update(interrupted=True, signal=stop.name, exit_status=stop.exit_status)
                self._stop_message(stop.name)
        summary["global_step"] = self.global_step
        summary["checkpoint"] = str(self.ckpt_path)
        if not summary["interrupted"]:
            self.finished = True
            summary.update(self._finish())
        self.writer.close()
        return summary

    def _stop_message(self, name: str) -> None:
        if not self._weights_finite():
            print(f"{name}: weights are not finite; kept the last checkpoint {self.ckpt_path}",
                  file=sys.stderr, flush=True)
            return
        path = self.save()
        if self.ranks.is_main:
            print(f"{name}: stopped after update {self.update}/{self.num_updates} (step "
                  f"{self.global_step}); checkpoint saved to {path}. Continue with:\n"
                  f"    {self.ranks.launch()} resume={self.run_dir}", file=sys.stderr, flush=True)

    def _loop(self, bar, stop: GracefulStop) -> None:
        cfg, algo, policy, device = self.cfg, self.algo, self.policy, self.device
        B, T = algo.num_envs, algo.num_steps
        env = self.env
        if self.carry is None:
            self.carry = self._fresh_episodes()
        obs, state, starts, prev_a, prev_r = (self.carry[k] for k in CARRY)
        rollout = Rollout(T, B, algo.seq_len, obs, state, device)
        ep_return = torch.zeros(T, B, device=device)
        ep_length = torch.zeros(T, B, device=device)
        ep_success = torch.zeros(T, B, dtype=torch.bool, device=device)
        session_steps, t_start = 0, time.perf_counter()
        every_s = float(cfg.get("eval_every_seconds") or 0)
        next_eval = time.perf_counter() + every_s  # training time only: set after each evaluation
        # eval.snapshots: the weights of every update between two evaluations, played at the
        # next one (agents/evaluation/snapshots.py)
        snapshots = (WeightSnapshots() if cfg.eval.get("snapshots") and (every_s or cfg.get("eval_every"))
                     else None)

        # Between two iterations is the one safe point: a stop request waits for it.
        while self.update < self.num_updates and not self.ranks.stop_requested(stop):
            lr = self.ppo.set_lr(self.schedule(self.update))
            policy.train()
            with torch.no_grad():
                for t in range(T):
                    rollout.store_state(t, state)
                    hint = None
                    if policy.oracle_critic:  # the critic's privileged input (training only)
                        hint = env.oracle_actions()
                        rollout.store_hint(t, hint)
                    # The rollout copied the state it trains from, so the core may
                    # write the next state over this one (HCAM's ring buffer).
                    action, logp, value, state = policy.act(obs, state, starts, prev_a, prev_r,
                                                            hint=hint, reuse_state=True)
                    rollout.store_step(t, obs, starts, prev_a, prev_r, action, logp, value)
                    if algo.mask_ignored_actions:
                        rollout.store_acting(t, env.actions_matter())
                    obs, reward, terminated, truncated, info = env.step(action)
                    done = terminated | truncated
                    learn_reward = reward
                    if "final_observation" in info:
                        # A time limit is not a terminal state: bootstrap from V(final obs),
                        # read with the state that follows this step.
                        # (an oracle critic reads the step's hint: the final state's own
                        # is gone with the reset, and one move changes it little)
                        v_final = policy.truncation_values(info["final_observation"], state,
                                                           truncated, action, reward, hint)
                        # (zero where no time limit cut: a terminal state is worth nothing)
                        v_final = torch.where(truncated, self.ppo.task_value(v_final), 0.0)
                        learn_reward = reward + algo.gamma * v_final
                    rollout.store_outcome(t, learn_reward, done)
                    ep_return[t] = info["episode_return"]
                    ep_length[t] = info["episode_length"]
                    ep_success[t] = info["success"]
                    starts, prev_a, prev_r = done, action, reward
                last_value = policy.value(obs, state, starts, prev_a, prev_r,
                                          hint=env.oracle_actions() if policy.oracle_critic else None)
            self.ppo.compute_returns(rollout, last_value)
            stats = self.ppo.update(rollout)

            self.update += 1
            self.global_step += self.steps_per_update
            session_steps += self.steps_per_update
            # Every logged number of this update crosses to the host in this one transfer.
            dones = rollout.dones.float()
            returns, values = rollout.returns, rollout.values
            var_y = returns.var()
            explained_var = 1 - (returns - values).var() / var_y
            host = self.ranks.reduce_log(torch.stack([
                dones.sum(),
                (ep_return * dones).sum(),
                (ep_length * dones).sum(),
                (ep_success.float() * dones).sum(),
                explained_var,
                *stats.values(),
            ]), sums=4).tolist()  # episode counts and sums over all ranks; the rest averaged
            n_ep, ret_sum, len_sum, succ_sum, ev = host[:5]
            s = dict(zip(stats.keys(), host[5:], strict=True))
            if not math.isfinite(s["loss"]):
                raise NonFiniteLossError(
                    f"non-finite loss ({s['loss']}) at update {self.update}, step "
                    f"{self.global_step}: stopping. The last good checkpoint is kept at "
                    f"{self.ckpt_path}" + ("" if self.ckpt_path.exists() else " (none written yet)")
                )
            sps = session_steps / (time.perf_counter() - t_start)
            self._log(n_ep, ret_sum, len_sum, succ_sum, ev, s, sps, lr)
            bar.update(self.steps_per_update)
            if n_ep:
                bar.set_postfix(sps=f"{sps:,.0f}", success=f"{succ_sum / n_ep:.3f}",
                                refresh=False)
            self.carry = dict(zip(CARRY, (obs, state, starts, prev_a, prev_r), strict=True))
            if n_ep and self.curriculum.advance(succ_sum / n_ep):
                env = self.env = self._make_train_env()
                self.carry = self._fresh_episodes()
                obs, state, starts, prev_a, prev_r = (self.carry[k] for k in CARRY)
                if self.ranks.is_main:
                    print(f"curriculum: {self.curriculum.describe()} from step "
                          f"{self.global_step}", file=sys.stderr, flush=True)
            if cfg.checkpoint_every and self.update % int(cfg.checkpoint_every) == 0:
                self.save()
            if not self.ranks.is_main:
                continue  # videos and evaluations: rank 0's (the weights are the same)
            if cfg.video_every and self.update % int(cfg.video_every) == 0:
                self._video()
            if (cfg.get("eval_every") and self.update % int(cfg.eval_every) == 0) or (
                    every_s and time.perf_counter() >= next_eval):
                self._evaluate(int(cfg.eval.get("during_episodes", 128)), snapshots)
                next_eval = time.perf_counter() + every_s
            elif snapshots is not None:
                snapshots.take(self.policy, self.global_step, self.update)

    def _log(self, n_ep, ret_sum, len_sum, succ_sum, ev, s, sps, lr) -> None:
        w, step = self.writer, self.global_step
        if n_ep:
            w.add_scalar("charts/episodic_return", ret_sum / n_ep, step)
            w.add_scalar("charts/success_rate", succ_sum / n_ep, step)
            w.add_scalar("charts/episode_length", len_sum / n_ep, step)
        w.add_scalar("charts/SPS", sps, step)
        if self.curriculum.active:
            w.add_scalar("curriculum/stage", self.curriculum.stage + 1, step)
            for knob, value in self.curriculum.knob_values().items():
                if isinstance(value, (int, float)):  # a room name, say, is in curriculum/stage
                    w.add_scalar(f"curriculum/{knob}", value, step)
        w.add_scalar("charts/learning_rate", lr, step)
        w.add_scalar("losses/policy_loss", s["pg_loss"], step)
        w.add_scalar("losses/value_loss", s["v_loss"], step)
        w.add_scalar("losses/entropy", s["entropy"], step)
        if self.algo.target_entropy is not None:
            w.add_scalar("losses/ent_coef", s["ent_coef"], step)
        w.add_scalar("losses/approx_kl", s["approx_kl"], step)
        w.add_scalar("losses/clipfrac", s["clipfrac"], step)
        if self.ppo.cfg.next_obs_coef > 0:
            w.add_scalar("losses/next_obs_loss", s["next_obs_loss"], step)
        w.add_scalar("losses/explained_variance", ev, step)
        w.add_scalar("losses/grad_norm", s["grad_norm"], step)

    def _eval_env(self, num_envs: int):
        seed = int(self.cfg.seed) + EVAL_SEED_OFFSET
        return make_env(self.cfg.env, num_envs, str(self.device), seed, check_actions=False)

    def _video(self) -> None:
        # (imported here: video and record load PIL and the decision transformer, 20-30 ms
        # of a start that time-to-solve counts; docs/benchmarks.md)
        from agents.evaluation.video import add_video, play_episodes

        frames, _ = play_episodes(self.policy, self._eval_env(1), 1, deterministic=True)
        add_video(self.writer, "eval/video", frames, self.global_step, int(self.cfg.eval.fps))
        self.policy.train()

    def _evaluate(self, episodes: int, snapshots: WeightSnapshots | None = None) -> dict[str, Any]:
        """Greedy and sampled evaluation now, logged as ``eval/<mode>_*`` at this step;
        first the weights of ``snapshots`` (each update's since the last evaluation), each
        logged at its own step and wall-clock time.

        It runs on its own RNG stream (the global one is restored after), so a run
        that evaluates every few updates trains exactly as one that does not, and
        resumes bit-identically whether or not an evaluation fell between.
        """
        started = time.perf_counter()
        if snapshots:
            with snapshots.replay(self.policy) as each:
                for snap in each:
                    self._log_eval(self._play(episodes, snap.update), snap.steps, snap.walltime)
        result = self._play(episodes, self.update)
        self._log_eval(result, self.global_step)
        # How long this evaluation held training up (benchmarks/peers.py subtracts it).
        self.writer.add_scalar("eval/seconds", time.perf_counter() - started, self.global_step)
        return result

    def _play(self, episodes: int, update: int) -> dict[str, Any]:
        ev = self.cfg.eval
        n = min(int(ev.num_envs), episodes)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(self.cfg.seed) + update)
            result = evaluate_modes(self.policy, lambda: self._eval_env(n), episodes,
                                    ev.get("deterministic"))
        self.policy.train()
        return result

    def _log_eval(self, result: dict[str, Any], step: int, walltime: float | None = None) -> None:
        for mode in MODES:
            if mode in result:
                for key in ("success_rate", "mean_return"):
                    self.writer.add_scalar(f"eval/{mode}_{key}", result[mode][key], step,
                                           walltime=walltime)

    def _finish(self) -> dict[str, Any]:
        """Final checkpoint, greedy evaluation (its JSON line printed), final video."""
        out: dict[str, Any] = {"checkpoint": str(self.save())}
        if not self.ranks.is_main:
            return out
        ev = self.cfg.eval
        if ev.episodes:
            out["eval"] = {**self._evaluate(int(ev.episodes)), "env": self.cfg.env.id,
                           "core": self.cfg.core.name, "global_step": self.global_step,
                           "run_dir": str(self.run_dir)}
        if ev.video_episodes:
            from agents.evaluation.record import record_policy

            rec = record_policy(self.policy, self._eval_env(1), self.run_dir / "videos" / "final.mp4",
                                int(ev.video_episodes), int(ev.fps))
            out["video"] = rec["out"]
        tensorboard = Path(sys.executable).parent / "tensorboard"
        print(f"run: {self.run_dir}  (TensorBoard: {tensorboard} --logdir {self.cfg.runs_root})"
              + (f"  video: {out['video']}" if "video" in out else ""), file=sys.stderr, flush=True)
        if "eval" in out:
            print(json.dumps(out["eval"]), flush=True)
        write_results(self, out)
        return out


def main() -> None:
    """``python -m agents.train [key=value ...]``: one run, or a sweep with ``-m``."""
    try:  # env=<id> -> env=<name>, and unknown envs and knobs as one line, before Hydra
        sys.argv[1:] = env_overrides(sys.argv[1:])
        check_launch(sys.argv[1:])
        composed = check_hydra_args(sys.argv[1:], "config", ("core", "algo", "experiment"))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    # Expected failures (bad knob, bad device, damaged checkpoint...): one line.
    launch(run, "config", composed, (NonFiniteLossError, ValueError, FileNotFoundError))


if __name__ == "__main__":
    main()
