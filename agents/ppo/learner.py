"""PPO on sequences (Schulman et al. 2017; recurrent as in CleanRL's ppo_atari_lstm).

The rollout is cut into chunks of ``seq_len`` steps, each with the core state
stored at its start; minibatches are sets of (chunk, env) sequences, and the
policy evaluates a whole minibatch ``[seq_len, mb]`` with one core call. The
stored states come from the policy that acted, so from the second epoch on
they are slightly stale (as in R2D2's "stored state"); no burn-in.

Losses are named as in the paper / CleanRL: clipped surrogate ``pg_loss``,
(optionally clipped) ``v_loss``, ``entropy``; diagnostics ``approx_kl``
((ratio - 1) - log ratio), ``clipfrac``, ``grad_norm``. Nothing here reads a
tensor on the host: the statistics come back as tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from agents.common.adam import Adam
from agents.ppo.policy import Policy
from agents.ppo.return_norm import ReturnNorm
from agents.ppo.rollout import Rollout


@dataclass
class PPOConfig:
    num_envs: int = 256
    num_steps: int = 128  # rollout length T per env
    seq_len: int = 128  # training sequence length; divides num_steps
    learning_rate: float = 2.5e-4
    anneal_lr: bool = True
    adam_eps: float = 1e-5
    gamma: float = 0.99
    gae_lambda: float = 0.95
    num_minibatches: int = 4
    update_epochs: int = 4
    norm_adv: bool = True
    # The value head fits returns scaled by their running mean and std (agents.ppo.return_norm;
    # sample-factory's normalize_returns): tasks paying +-1/N a step need it. clip_vloss's
    # clip_coef then bounds the value's move in standard deviations: the recipes that
    # normalise turn clip_vloss off (with it, Autoencode's seed 0 needed 1.6x the env steps).
    normalize_returns: bool = False
    clip_coef: float = 0.2
    clip_vloss: bool = True
    ent_coef: float = 0.01
    # An entropy target instead of a fixed bonus (as SAC's temperature): the bonus starts
    # at ent_coef and, after every minibatch, grows while the entropy is below the target
    # and shrinks while above, by a factor exp(ent_coef_lr * gap). None: a fixed bonus.
    target_entropy: float | None = None
    ent_coef_lr: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    target_kl: float | None = None  # stops the epochs early; costs one host sync per epoch
    # Leave steps whose action the task ignored (env.actions_matter() False: a watch
    # phase, the steps before a choice) out of the policy loss, the entropy bonus and
    # the advantage normalisation. Their policy gradient is zero in expectation, pure
    # noise; on Ballet they are 64 of about 70 steps. The value loss keeps every step.
    mask_ignored_actions: bool = False
    # Weight of a self-supervised loss: the core's output predicts the next observation
    # (agents.ppo.next_obs; the policy gets the head when this is above 0). 0: off.
    next_obs_coef: float = 0.0
    next_obs_fraction: float = 0.125  # of each minibatch's steps that loss reads (its cost)
    # The training pass's large matrix products in bfloat16 (torch.autocast; weights, Adam,
    # the recurrence and the heads stay float32). "float32": none.
    precision: str = "float32"

    @property
    def steps_per_update(self) -> int:
        return self.num_envs * self.num_steps

    def validate(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r}; accepted: {', '.join(PRECISIONS)}")
        if self.num_steps % self.seq_len:
            raise ValueError(f"num_steps={self.num_steps} must be a multiple of seq_len={self.seq_len}")
        sequences = self.num_envs * (self.num_steps // self.seq_len)
        if sequences % self.num_minibatches:
            raise ValueError(
                f"{sequences} sequences (num_envs * num_steps / seq_len) do not split into "
                f"num_minibatches={self.num_minibatches}"
            )


PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16}
STAT_NAMES = ("pg_loss", "v_loss", "entropy", "approx_kl", "clipfrac", "grad_norm", "loss", "next_obs_loss",
              "ent_coef")


class PPO:
    def __init__(self, policy: Policy, cfg: PPOConfig):
        cfg.validate()
        if cfg.next_obs_coef > 0 and getattr(policy, "next_obs", None) is None:
            raise ValueError(f"next_obs_coef={cfg.next_obs_coef} needs a policy built with "
                             "predict_next_obs=True (agents.common.config.policy_spec sets it from algo)")
        if cfg.target_entropy is not None and (cfg.ent_coef <= 0 or cfg.ent_coef_lr <= 0):
            raise ValueError(f"target_entropy={cfg.target_entropy} needs ent_coef > 0 (the bonus it "
                             f"starts from) and ent_coef_lr > 0; got {cfg.ent_coef}, {cfg.ent_coef_lr}")
        if not 0.0 < cfg.next_obs_fraction <= 1.0:
            raise ValueError(f"next_obs_fraction={cfg.next_obs_fraction} must be in (0, 1]")
        if getattr(policy, "next_obs", None) is not None:
            policy.next_obs.fraction = cfg.next_obs_fraction
        self.policy = policy
        self.cfg = cfg
        self.optimizer = Adam(policy.parameters(), lr=cfg.learning_rate, eps=cfg.adam_eps)
        # The entropy bonus in force (a tensor: adapting it reads nothing on the host).
        device = next(policy.parameters()).device
        self.ent_coef = torch.tensor(cfg.ent_coef, dtype=torch.float32, device=device)
        self.return_norm = ReturnNorm().to(device) if cfg.normalize_returns else None
        # The training path, and a statistic's mean over ranks: in a run of several ranks,
        # agents.ppo.distributed puts DistributedDataParallel and an all-reduce here.
        self.evaluate = policy.evaluate_sequence
        self.mean_over_ranks = _same

    def set_progress(self, fraction_done: float) -> float:
        """Linear learning-rate annealing to 0; returns the rate now in force."""
        lr = self.cfg.learning_rate
        if self.cfg.anneal_lr:
            lr *= max(1.0 - fraction_done, 0.0)
        return self.set_lr(lr)

    def set_lr(self, lr: float) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def task_value(self, value: torch.Tensor) -> torch.Tensor:
        """A value the policy gave, on the task's reward scale."""
        return value if self.return_norm is None else self.return_norm.denormalize(value)

    def compute_returns(self, rollout: Rollout, last_value: torch.Tensor) -> None:
        """The rollout's advantages and value targets (normalised when ``normalize_returns``)."""
        if self.return_norm is None:
            rollout.compute_gae(last_value, self.cfg.gamma, self.cfg.gae_lambda)
        else:
            self.return_norm.returns(rollout, last_value, self.cfg.gamma, self.cfg.gae_lambda)

    def loss(self, mb: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The PPO loss of one minibatch of sequences, and its diagnostics."""
        cfg = self.cfg
        args = [mb["obs"], mb["state"], mb["starts"], mb["actions"], mb["prev_actions"], mb["prev_rewards"]]
        if getattr(self.policy, "oracle_critic", False):
            args.append(mb["hints"])  # the critic's privileged input
        lowp = PRECISIONS[cfg.precision]
        with torch.autocast(mb["starts"].device.type, dtype=lowp, enabled=lowp is not None):
            newlogp, entropy, newvalue, *aux = self.evaluate(*args)
        logratio = newlogp - mb["logprobs"]
        ratio = logratio.exp()
        # mean over the steps whose action mattered (every step unless masking)
        weight = mb["acting"].float() if cfg.mask_ignored_actions else None
        mean = _mean if weight is None else lambda x: _weighted_mean(x, weight)
        with torch.no_grad():
            approx_kl = mean((ratio - 1) - logratio)
            clipfrac = mean(((ratio - 1.0).abs() > cfg.clip_coef).float())

        adv = mb["advantages"]
        if cfg.norm_adv and weight is None:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        elif cfg.norm_adv:
            centred = adv - mean(adv)
            adv = centred / (mean(centred**2).sqrt() + 1e-8)
        pg_loss = mean(torch.max(
            -adv * ratio, -adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)
        ))

        returns, old_values = mb["returns"], mb["values"]
        if cfg.clip_vloss:
            clipped = old_values + (newvalue - old_values).clamp(-cfg.clip_coef, cfg.clip_coef)
            v_loss = 0.5 * torch.max((newvalue - returns) ** 2, (clipped - returns) ** 2).mean()
        else:
            v_loss = 0.5 * ((newvalue - returns) ** 2).mean()
        ent = mean(entropy)
        loss = pg_loss - self.ent_coef * ent + cfg.vf_coef * v_loss
        next_obs_loss = aux[0] if aux else torch.zeros((), device=loss.device)
        if aux and cfg.next_obs_coef > 0:
            loss = loss + cfg.next_obs_coef * next_obs_loss
        stats = dict(pg_loss=pg_loss, v_loss=v_loss, entropy=ent, approx_kl=approx_kl,
                     clipfrac=clipfrac, loss=loss, next_obs_loss=next_obs_loss, ent_coef=self.ent_coef)
        return loss, {k: v.detach() for k, v in stats.items()}

    def update(self, rollout: Rollout) -> dict[str, torch.Tensor]:
        """Several epochs of minibatch updates; returns the mean of each statistic (tensors)."""
        cfg = self.cfg
        data = rollout.sequences()
        n_seq = data["starts"].shape[1]
        mb_size = n_seq // cfg.num_minibatches
        device = data["starts"].device
        sums = torch.zeros(len(STAT_NAMES), device=device)
        count = 0
        params = [p for p in self.policy.parameters() if p.requires_grad]
        for _epoch in range(cfg.update_epochs):
            perm = torch.randperm(n_seq, device=device)
            for start in range(0, n_seq, mb_size):
                idx = perm[start : start + mb_size]
                mb = _select(data, idx)
                loss, stats = self.loss(mb)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                self.optimizer.step()
                if cfg.target_entropy is not None:
                    self._adapt_ent_coef(stats["entropy"])
                stats["grad_norm"] = grad_norm.detach()
                sums += torch.stack([stats[k].float() for k in STAT_NAMES])
                count += 1
            if cfg.target_kl is not None and float(
                    self.mean_over_ranks(stats["approx_kl"])) > cfg.target_kl:
                break
        means = sums / count
        return dict(zip(STAT_NAMES, means.unbind(), strict=True))

    def _adapt_ent_coef(self, entropy: torch.Tensor) -> None:
        """One step of the bonus toward the entropy target, in log space, kept in [1e-4, 1]."""
        gap = self.cfg.target_entropy - self.mean_over_ranks(entropy)
        log_coef = self.ent_coef.log() + self.cfg.ent_coef_lr * gap
        self.ent_coef.copy_(log_coef.exp().clamp(1e-4, 1.0))


def _mean(x: torch.Tensor) -> torch.Tensor:
    return x.mean()


def _weighted_mean(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (x * weight).sum() / weight.sum().clamp(min=1.0)


def _same(x: torch.Tensor) -> torch.Tensor:
    return x


def _select(data: dict, idx: torch.Tensor) -> dict:
    """Sequences ``idx`` of every tensor: dim 1 of ``[L, N, ...]`` tensors, dim 0 of states."""
    out = {}
    for key, value in data.items():
        if key == "state":
            out[key] = {k: v.index_select(0, idx) for k, v in value.items()}
        elif isinstance(value, dict):
            out[key] = {k: v.index_select(1, idx) for k, v in value.items()}
        else:
            out[key] = value.index_select(1, idx)
    return out
