"""Offline training of a decision transformer (plain or DT-Mem) on a Minari dataset.

    python -m agents.train_dt dataset=<dir> core=dtmem context=16 [memory=false]
        [train.updates=200] [device=cuda] [name=...] [dt_experiment=<name>]
    python -m agents.train_dt dataset=<second task> finetune=memory init=<checkpoint> [lora_rank=4]
    python -m agents.train_dt dataset=<longer delay> init=<checkpoint>   (warm start: all weights)

Config: ``configs/train_dt.yaml`` (core options from the ``core`` group; only
``dtmem`` is a DT memory), sized to finish in minutes on a CPU; ``dt_experiment=long``
is the longer recipe (2000 updates). A run writes ``runs/<name>/<timestamp>/``:
``config.yaml``, ``tb/`` (TensorBoard), ``checkpoints/latest.pt`` (atomic, as
PPO's; ``kind: dt``), and at the end prints the JSON line of an online
evaluation (``agents.dt.evaluate``) with ``target_return``.

Batches. DT-Mem (``memory=true``): a batch is ``batch_size`` whole episodes,
each cut into consecutive aligned windows of ``context`` steps processed in
order, the memory of each block carried from one window to the next. The loss
of all windows is summed and back-propagated once; ``train.bptt_windows=k``
detaches the carried memory every k windows (truncated BPTT; 0 = through the
whole episode, the default, since our episodes are a few windows long).
Plain DT (``memory=false``): ``batch_size`` windows of ``context`` steps, each
ending at a step drawn from those with a loss (so a task whose only decision is
its last step still gives every window a label). Loss: cross-entropy of the action at
the steps where the action matters (the dataset's ``infos/decision``; all
steps with ``train.loss_steps=all``).

``finetune=memory`` starts from ``init`` and trains only the memory cores'
parameters (``lora_rank=r > 0``: only rank-r adapters on the memory cores'
linear maps, merged into the weights when saved).

``global_step`` counts gradient updates.
"""

from __future__ import annotations

import copy
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
from torch import nn
from torch.nn import functional as F
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from agents.common.adam import Adam
from agents.common.checkpoint import (
    CHECKPOINT_DIR,
    LATEST,
    load_checkpoint,
    rng_state,
    save_checkpoint,
)
from agents.common.cli import check_hydra_args, launch
from agents.common.config import env_knobs, make_env
from agents.common.device import check_device, set_up_cpu
from agents.common.results import dt_results_row, write_results
from agents.common.run_dir import new_run_dir
from agents.common.signals import GracefulStop
from agents.dt.collect import load_dataset
from agents.dt.evaluate import EVAL_SEED_OFFSET, check_env_fits, core_name, evaluate_dt
from agents.dt.model import DecisionTransformer

FINETUNE_CHOICES = ("none", "memory")
LOSS_STEPS = ("decision", "all")


# ------------------------------------------------------------------------------- data
class EpisodeTensors:
    """A dataset's episodes padded to one length, on the training device."""

    def __init__(self, dataset, device, rtg_scale: float):
        eps = dataset.storage.get_episodes(dataset.episode_indices)  # one pass over the file
        if not eps:
            raise ValueError("the dataset has no episodes")
        n, L = len(eps), max(len(e["actions"]) for e in eps)
        obs0 = np.asarray(eps[0]["observations"])
        self.obs = np.zeros((n, L, *obs0.shape[1:]), dtype=obs0.dtype)
        self.actions = np.zeros((n, L), dtype=np.int64)
        rewards = np.zeros((n, L), dtype=np.float32)
        self.decision = np.zeros((n, L), dtype=bool)
        self.lengths = np.zeros(n, dtype=np.int64)
        for i, e in enumerate(eps):
            T = len(e["actions"])
            self.obs[i, :T] = np.asarray(e["observations"])[:T]
            self.actions[i, :T] = np.asarray(e["actions"]).reshape(T)
            rewards[i, :T] = np.asarray(e["rewards"]).reshape(T)
            self.decision[i, :T] = np.asarray(e["infos"].get("decision", np.ones(T, bool))).reshape(T)
            self.lengths[i] = T
        rtg = np.flip(np.cumsum(np.flip(rewards, 1), 1), 1) / rtg_scale
        to = lambda a: torch.as_tensor(np.ascontiguousarray(a), device=device)  # noqa: E731
        self.obs, self.actions, self.rtg = to(self.obs), to(self.actions), to(rtg)
        self.decision, self.lengths = to(self.decision), to(self.lengths)
        self.count, self.max_length = n, L
        self.has_decision = all("decision" in e["infos"] for e in eps)


# ---------------------------------------------------------------------------- LoRA
class LoRALinear(nn.Module):
    """A frozen linear map plus a trainable rank-r update B A (B starts at zero)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float = 1.0):
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.lora_a = nn.Parameter(torch.randn(rank, base.in_features, device=base.weight.device)
                                   / base.in_features**0.5)
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        self.scale = alpha

    @property
    def weight(self) -> torch.Tensor:  # DTMemCore.write reads .weight/.bias directly
        return self.base.weight + self.scale * self.lora_b @ self.lora_a

    @property
    def bias(self):
        return self.base.bias

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


def add_lora(module: nn.Module, rank: int) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, LoRALinear(child, rank))
        else:
            add_lora(child, rank)


def merge_lora(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every adapter folded into a plain Linear."""
    model = copy.deepcopy(model)

    def fold(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, LoRALinear):
                lin = nn.Linear(child.base.in_features, child.base.out_features,
                                bias=child.base.bias is not None, device=child.base.weight.device)
                with torch.no_grad():
                    lin.weight.copy_(child.weight)
                    if child.bias is not None:
                        lin.bias.copy_(child.bias)
                setattr(module, name, lin)
            else:
                fold(child)

    fold(model)
    return model


# ---------------------------------------------------------------------------- trainer
def check_dataset_fits(spec: dict[str, Any], env, dataset: str, init: str) -> None:
    """Fine-tuning keeps the checkpoint's encoder and head: the dataset's spaces must be its own."""
    for what, space in (("observation", env.single_observation_space),
                        ("action", env.single_action_space)):
        saved = spec[f"{what}_space"]
        try:
            same = bool(space == saved)
        except ValueError:  # MultiDiscrete spaces of different lengths do not broadcast
            same = False
        if not same:
            raise ValueError(
                f"dataset={dataset} has {what} space {space}, but the checkpoint init={init} "
                f"was trained on {what} space {saved}; fine-tuning needs the same {what} space"
            )


def _choice(name: str, value: str, accepted: tuple[str, ...]) -> str:
    if value not in accepted:
        raise ValueError(f"{name}={value!r}; accepted: {', '.join(accepted)}")
    return value


class DTTrainer:
    def __init__(self, cfg: DictConfig, run_dir: Path):
        self.cfg, self.run_dir = cfg, run_dir
        self.ckpt_path = run_dir / CHECKPOINT_DIR / LATEST
        self.started = time.time()  # the wall time of results.json
        set_up_cpu(cfg)  # torch threads, glibc's freed-memory reuse
        self.device = torch.device(cfg.device)
        seed = int(cfg.seed)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(seed)

        finetune = _choice("finetune", str(cfg.finetune), FINETUNE_CHOICES)
        self.loss_steps = _choice("train.loss_steps", str(cfg.train.loss_steps), LOSS_STEPS)
        dataset, self.env_cfg = load_dataset(cfg.dataset)
        self.env = make_env(self.env_cfg, 1, "cpu", 0)
        self.data = EpisodeTensors(dataset, self.device, float(cfg.train.rtg_scale))

        if finetune == "memory":
            if not cfg.get("init"):
                raise ValueError("finetune=memory needs init=<checkpoint of a trained DT-Mem>")
            init = load_checkpoint(cfg.init, map_location=self.device)
            if init.get("kind") != "dt" or not init["dt"]["memory"]:
                raise ValueError(f"init={cfg.init} is not a DT-Mem checkpoint (kind dt, memory on)")
            check_dataset_fits(init["dt"], self.env, cfg.dataset, cfg.init)
            self.model = DecisionTransformer(**init["dt"]).to(self.device)
            self.model.load_state_dict(init["model"])
        elif cfg.get("init"):
            # Warm start (e.g. a curriculum over a task's delay): the checkpoint's model and
            # weights, all of them trained; only the context may change (no weight depends on it).
            init = load_checkpoint(cfg.init, map_location=self.device)
            if init.get("kind") != "dt":
                raise ValueError(f"init={cfg.init} is not a decision-transformer checkpoint")
            if bool(init["dt"]["memory"]) != bool(cfg.memory):
                raise ValueError(f"init={cfg.init} has memory={init['dt']['memory']}, "
                                 f"but memory={cfg.memory} was asked for")
            check_dataset_fits(init["dt"], self.env, cfg.dataset, cfg.init)
            spec = {**init["dt"], "context": int(cfg.context)}
            if spec.get("timestep", "episode") == "episode" and (
                    self.data.max_length > spec["max_timestep"]):
                raise ValueError(f"dataset={cfg.dataset} has episodes of {self.data.max_length} "
                                 f"steps, beyond the checkpoint's max_timestep "
                                 f"{spec['max_timestep']} (set model.max_timestep when training "
                                 "the first stage, or model.timestep=window)")
            self.model = DecisionTransformer(**spec).to(self.device)
            self.model.load_state_dict(init["model"])
        else:
            core = str(cfg.core.name)
            if core != "dtmem":
                raise ValueError(f"core={core!r}: the decision transformer's memory is dtmem; "
                                 "accepted: core=dtmem (memory=false for the plain DT)")
            mem = {k: cfg.core[k] for k in ("hidden_size", "mem_slots", "num_heads")}
            m = cfg.model
            self.model = DecisionTransformer(
                self.env.single_observation_space, self.env.single_action_space,
                context=int(cfg.context), d_model=int(m.d_model), n_layers=int(m.n_layers),
                n_heads=int(m.n_heads), dropout=float(m.dropout), embed_dim=int(m.embed_dim),
                max_timestep=int(m.max_timestep or self.data.max_length),
                memory=bool(cfg.memory), memory_cfg=mem,
                timestep=str(m.get("timestep", "episode")),
            ).to(self.device)
        check_env_fits(self.model, self.env, self.env_cfg["id"])

        if finetune == "memory":
            for p in self.model.parameters():
                p.requires_grad_(False)
            if int(cfg.lora_rank) > 0:
                for b in self.model.blocks:
                    add_lora(b.memory.core, int(cfg.lora_rank))
                params = [p for n, p in self.model.named_parameters() if "lora_" in n]
            else:
                params = self.model.memory_parameters()
                for p in params:
                    p.requires_grad_(True)
        else:
            params = list(self.model.parameters())
        self.params = params
        t = cfg.train
        self.optimizer = Adam(params, lr=float(t.lr), weight_decay=float(t.weight_decay))  # AdamW
        self.updates = int(t.updates)
        self.update = 0
        self.writer = SummaryWriter(str(run_dir / "tb"))
        self.writer.add_text("config", "```\n" + OmegaConf.to_yaml(cfg) + "\n```", 0)
        n_train = sum(p.numel() for p in params)
        self.writer.add_text("model", f"trainable parameters: {n_train}", 0)

    # ------------------------------------------------------------------- batches
    def _loss(self, logits, actions, mask):
        ce = F.cross_entropy(logits.flatten(0, 1), actions.flatten(), reduction="none")
        mask = mask.flatten().float()
        right = (logits.argmax(-1).flatten() == actions.flatten()).float()
        return (ce * mask).sum(), (right * mask).sum(), mask.sum()

    def _mask(self, idx, steps):
        d = self.data
        valid = steps < d.lengths[idx, None]
        if self.loss_steps == "decision":
            valid = valid & d.decision[idx[:, None], steps.clamp(max=d.max_length - 1)]
        return valid

    def _batch_memory(self, idx):
        """Whole episodes as consecutive windows, the memory carried across them."""
        d, K, B = self.data, self.model.context, len(idx)
        windows = math.ceil(d.max_length / K)
        bptt = int(self.cfg.train.bptt_windows)
        state = self.model.initial_state(B, self.device)
        first = torch.ones(B, dtype=torch.bool, device=self.device)
        later = torch.zeros_like(first)
        total = torch.zeros(3, device=self.device)
        offsets = torch.arange(K, device=self.device)
        for w in range(windows):
            steps = w * K + offsets
            steps = steps.expand(B, K)
            clamped = steps.clamp(max=d.max_length - 1)
            logits, state = self.model(
                d.rtg[idx[:, None], clamped], d.obs[idx[:, None], clamped],
                d.actions[idx[:, None], clamped], steps, state, first if w == 0 else later,
            )
            total = total + torch.stack(self._loss(logits, d.actions[idx[:, None], clamped],
                                                   self._mask(idx, steps)))
            if bptt and (w + 1) % bptt == 0:
                state = [s.detach() for s in state]
        return total

    def _batch_plain(self, idx):
        """Windows of K steps ending at a random loss step of their episode.

        The usual DT samples windows anywhere; with ``loss_steps=decision`` a task whose only
        decision is its last step (DelayedMatch) would then give most windows no loss at all.
        Ending the window at a step drawn from those with a loss keeps every window useful and
        puts that step last, where acting (a sliding window of the last K steps) puts it.
        """
        d, K, B = self.data, self.model.context, len(idx)
        steps_all = torch.arange(d.max_length, device=self.device).expand(B, -1)
        weight = self._mask(idx, steps_all).float()
        weight = torch.where(weight.sum(1, keepdim=True) > 0, weight, 1.0)  # no loss step: any
        end = torch.multinomial(weight, 1, generator=self.gen).squeeze(1)
        start = (end - K + 1).clamp(min=0)
        steps = start[:, None] + torch.arange(K, device=self.device)
        clamped = steps.clamp(max=d.max_length - 1)
        logits, _ = self.model(
            d.rtg[idx[:, None], clamped], d.obs[idx[:, None], clamped],
            d.actions[idx[:, None], clamped], steps,
        )
        return torch.stack(self._loss(logits, d.actions[idx[:, None], clamped],
                                      self._mask(idx, steps)))

    def _lr(self) -> float:
        t = self.cfg.train
        warm = int(t.warmup)
        if self.update < warm:
            scale = (self.update + 1) / warm
        else:
            progress = (self.update - warm) / max(1, self.updates - warm)
            scale = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        return float(t.lr) * scale

    # ------------------------------------------------------------------- loop
    def save(self) -> Path:
        model = merge_lora(self.model) if int(self.cfg.get("lora_rank") or 0) > 0 else self.model
        payload = {
            "kind": "dt",
            "model": model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "dt": self.model.spec(),
            "config": OmegaConf.to_container(self.cfg, resolve=True) | {"env": self.env_cfg},
            "env_id": self.env_cfg["id"],
            "global_step": self.update,
            "update": self.update,
            "rng": rng_state(),
        }
        return save_checkpoint(self.ckpt_path, payload)

    def train(self) -> dict[str, Any]:
        cfg, t = self.cfg, self.cfg.train
        bar = tqdm(total=self.updates, unit="upd", dynamic_ncols=True, disable=not cfg.progress,
                   desc=f"DT{'-Mem' if self.model.uses_memory else ''} K={self.model.context}")
        batch = int(t.batch_size)
        self.model.train()
        t0, stop = time.perf_counter(), GracefulStop()
        # Stop signals (agents.common.signals) end the loop between two updates, never inside one.
        with stop:
            while self.update < self.updates and not stop.requested:
                lr = self._lr()
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                idx = torch.randint(self.data.count, (batch,), generator=self.gen,
                                    device=self.device)
                total = (self._batch_memory(idx) if self.model.uses_memory
                         else self._batch_plain(idx))
                loss = total[0] / total[2].clamp(min=1)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = nn.utils.clip_grad_norm_(self.params, float(t.grad_clip))
                self.optimizer.step()
                self.update += 1
                if self.update % int(cfg.log_every) == 0 or self.update == self.updates:
                    host = torch.stack([loss.detach(), total[1] / total[2].clamp(min=1),
                                        grad_norm]).tolist()
                    if not math.isfinite(host[0]):
                        raise RuntimeError(f"non-finite loss at update {self.update}; the last "
                                           f"checkpoint {self.ckpt_path} is kept")
                    w = self.writer
                    w.add_scalar("losses/action_loss", host[0], self.update)
                    w.add_scalar("charts/action_accuracy", host[1], self.update)
                    w.add_scalar("losses/grad_norm", host[2], self.update)
                    w.add_scalar("charts/learning_rate", lr, self.update)
                    w.add_scalar("charts/updates_per_s",
                                 self.update / (time.perf_counter() - t0), self.update)
                    bar.set_postfix(loss=f"{host[0]:.3f}", acc=f"{host[1]:.3f}", refresh=False)
                bar.update(1)
                if cfg.checkpoint_every and self.update % int(cfg.checkpoint_every) == 0:
                    self.save()
            bar.close()
            path = self.save()  # under the handlers: a second signal exits, the last file whole
        interrupted = stop.requested
        summary: dict[str, Any] = {"run_dir": str(self.run_dir), "checkpoint": str(path),
                                   "global_step": self.update, "interrupted": interrupted,
                                   "exit_status": stop.exit_status}
        if interrupted:
            print(f"{stop.name}: stopped at update {self.update}: checkpoint saved to {path}",
                  file=sys.stderr, flush=True)
        elif int(cfg.eval.episodes):
            summary["eval"] = self.evaluate()
            print(json.dumps(summary["eval"]), flush=True)
        if not interrupted:
            write_results(self, summary, dt_results_row)
        self.writer.close()
        return summary

    def evaluate(self) -> dict[str, Any]:
        ev = self.cfg.eval
        episodes = int(ev.episodes)
        env = make_env(self.env_cfg, min(int(ev.num_envs), episodes), str(self.device),
                       int(self.cfg.seed) + EVAL_SEED_OFFSET, check_actions=False)
        model = merge_lora(self.model) if int(self.cfg.get("lora_rank") or 0) > 0 else self.model
        result = evaluate_dt(model, env, episodes, float(ev.target_return),
                             float(self.cfg.train.rtg_scale))
        self.model.train()
        self.writer.add_scalar("eval/success_rate", result["success_rate"], self.update)
        self.writer.add_scalar("eval/mean_return", result["mean_return"], self.update)
        return {**result, "env": self.env_cfg["id"], "core": core_name(self.model), "model": "dt",
                "context": self.model.context, "target_return": float(ev.target_return),
                "env_knobs": env_knobs(self.env_cfg),
                "global_step": self.update, "run_dir": str(self.run_dir)}


def run(cfg: DictConfig) -> dict[str, Any]:
    if cfg.get("dataset") in (None, "???"):
        raise ValueError("dataset=<dir of a Minari dataset written by agents.collect> is required")
    check_device(cfg.device)
    with new_run_dir(cfg) as run_dir:
        cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
        cfg.run_dir = str(run_dir)
        OmegaConf.save(cfg, run_dir / "config.yaml")
        trainer = DTTrainer(cfg, run_dir)
    return trainer.train()


def main() -> None:
    """``python -m agents.train_dt dataset=<dir> [key=value ...]``: one run, or a sweep with ``-m``."""
    try:  # a bad override (unknown key or config name) as one line, before Hydra
        composed = check_hydra_args(sys.argv[1:], "train_dt", ("core", "dt_experiment"))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    launch(lambda cfg, overrides: run(cfg), "train_dt", composed,
           (ValueError, FileNotFoundError, RuntimeError))


if __name__ == "__main__":
    main()
