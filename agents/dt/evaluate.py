"""Online evaluation of a decision-transformer checkpoint in batched envs.

    python -m agents.dt.evaluate checkpoint=<file or run dir> target_return=1.0 episodes=N
        [num_envs=512] [device=cpu] [seed=...] [env=<configs/env name or env id>] [env.<knob>=...]

(``python -m agents.evaluate`` hands DT checkpoints to this module.) Prints the
same JSON line as the PPO evaluation: success_rate, mean_return, episodes, env,
core (plus mean_length, env_knobs, global_step, context and target_return).

Every copy keeps its last K steps in a ring buffer. At step t the model reads
the window of its kind (DT-Mem: the steps since the last multiple of K, with
the memory the previous windows left; plain DT: the last K steps), acts
greedily from the observation token of step t, and, for DT-Mem, keeps the
memory after step t when t closes a window. The return-to-go starts at
``target_return`` and drops by each reward received.
"""

from __future__ import annotations

import sys
from typing import Any

import torch

from agents.common.checkpoint import load_checkpoint
from agents.common.cli import env_config, json_command
from agents.common.config import env_knobs, make_env
from agents.dt.model import DecisionTransformer
from agents.evaluation.episode_tally import EpisodeTally

EVAL_SEED_OFFSET = 1_000_000  # as agents.evaluate: evaluation episodes apart from training's


def model_from_checkpoint(ckpt: dict[str, Any], device) -> DecisionTransformer:
    if ckpt.get("kind") != "dt":
        raise ValueError(f"not a decision-transformer checkpoint (kind={ckpt.get('kind', 'ppo')!r}); "
                         "accepted: kind 'dt' from agents.dt.trainer")
    model = DecisionTransformer(**ckpt["dt"])
    model.load_state_dict(ckpt["model"])
    return model.to(device)


def check_env_fits(model: DecisionTransformer, env, env_id: str) -> None:
    if env.single_observation_space != model.observation_space or (
        env.single_action_space != model.action_space
    ):
        raise ValueError(
            f"env {env_id} does not fit the model: observation space {env.single_observation_space} "
            f"vs {model.observation_space}, action space {env.single_action_space} vs "
            f"{model.action_space}"
        )


class DTActor:
    """Greedy acting of a decision transformer in ``num_envs`` batched envs (see the module
    docstring): ``act(obs)`` picks every copy's action, ``observe(reward, done)`` books the step.

    Used by :func:`evaluate_dt` and by ``agents.evaluation.video.play_episodes`` (``agents.record``).
    """

    def __init__(self, model: DecisionTransformer, num_envs: int, target_return: float = 1.0,
                 rtg_scale: float = 1.0):
        self.model, self.n, self.K = model, num_envs, model.context
        self.target_return, self.rtg_scale = float(target_return), float(rtg_scale)
        self.device = device = model.device
        self.t = torch.zeros(num_envs, dtype=torch.int64, device=device)
        self.got = torch.zeros(num_envs, device=device)
        self.state = model.initial_state(num_envs, device)
        self.rows = torch.arange(num_envs, device=device)
        self.offsets = torch.arange(self.K, device=device)
        self.ring_obs: torch.Tensor | None = None  # [n, K, *obs_shape], made at the first act
        self.ring_act = torch.zeros(num_envs, self.K, dtype=torch.int64, device=device)
        self.ring_rtg = torch.zeros(num_envs, self.K, device=device)

    @property
    def rtg(self) -> torch.Tensor:
        """[n] the return-to-go the model is conditioned on at the current step."""
        return (self.target_return - self.got) / self.rtg_scale

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        model, K, rows, t = self.model, self.K, self.rows, self.t
        obs = obs.to(self.device)
        if self.ring_obs is None:
            self.ring_obs = obs.new_zeros(self.n, K, *obs.shape[1:])
        pos = t % K
        self.ring_obs[rows, pos] = obs
        self.ring_rtg[rows, pos] = self.rtg
        self.ring_act[rows, pos] = 0
        start = t - pos if model.uses_memory else (t - K + 1).clamp(min=0)
        steps = start[:, None] + self.offsets  # [n, K] timesteps of the window
        idx = steps % K
        last = t - start
        logits, new_state = model(
            self.ring_rtg.gather(1, idx), self.ring_obs[rows[:, None], idx],
            self.ring_act.gather(1, idx), steps, self.state, starts=t < K, last=last,
        )
        action = logits[rows, last].argmax(-1)
        self.last = last
        self.ring_act[rows, pos] = action
        if model.uses_memory:
            closes = (pos == K - 1).view(self.n, 1, 1)
            self.state = [torch.where(closes, new, old)
                          for new, old in zip(new_state, self.state, strict=True)]
        return action

    def memory_read(self):
        """Where each block's DT-Mem memory was read by the observation token of the last
        ``act`` (a ``memory_modules.Read`` over the slots), when its reads are recorded
        (``agents.evaluation.video.recording_reads``); None for the plain DT or when not recording."""
        from memory_modules import Read

        cores = [b.memory.core for b in self.model.blocks if b.memory is not None]
        if not cores or not cores[0].read_recording:
            return None
        token = 3 * self.last + 1  # tokens R, o, a per step: o_t acts
        weights = torch.stack([c.read_trace[token, self.rows] for c in cores], 1)
        return Read("slots", weights, tuple(f"block {i}" for i in range(len(cores))),
                    columns=tuple(str(n) for n in range(weights.shape[-1])))

    def observe(self, reward: torch.Tensor, done: torch.Tensor) -> None:
        reward, done = reward.to(self.device), done.to(self.device)
        self.got = torch.where(done, 0.0, self.got + reward)
        self.t = torch.where(done, 0, self.t + 1)


@torch.no_grad()
def evaluate_dt(
    model: DecisionTransformer,
    env,
    episodes: int,
    target_return: float = 1.0,
    rtg_scale: float = 1.0,
    max_steps: int = 1_000_000,
) -> dict[str, float]:
    """Exactly ``episodes`` greedy episodes (see ``EpisodeTally``), as agents.evaluate."""
    tally = EpisodeTally(episodes, env.num_envs, model.device)
    model.eval()
    actor = DTActor(model, env.num_envs, target_return, rtg_scale)
    obs, _ = env.reset()
    for step in range(max_steps):
        obs, reward, terminated, truncated, info = env.step(actor.act(obs))
        actor.observe(reward, terminated | truncated)
        tally.add(info)
        if step % 32 == 31 and tally.complete():
            break
    else:
        raise RuntimeError(f"{episodes} episodes did not finish within {max_steps} steps")
    return tally.result()


def core_name(model: DecisionTransformer) -> str:
    return "dtmem" if model.uses_memory else "none"


def evaluate_checkpoint(
    checkpoint: str,
    episodes: int = 512,
    num_envs: int = 512,
    device: str = "cpu",
    seed: int | None = None,
    env_cfg: dict[str, Any] | None = None,
    target_return: float | None = None,
) -> dict[str, Any]:
    ckpt = load_checkpoint(checkpoint, map_location=device)
    model = model_from_checkpoint(ckpt, device)
    env_cfg = env_cfg or ckpt["config"]["env"]
    if seed is None:
        seed = int(ckpt["config"]["seed"]) + EVAL_SEED_OFFSET
    if target_return is None:
        target_return = float(ckpt["config"]["eval"]["target_return"])
    env = make_env(env_cfg, min(num_envs, episodes), device, int(seed), check_actions=False)
    check_env_fits(model, env, env_cfg["id"])
    result = evaluate_dt(model, env, episodes, float(target_return),
                         float(ckpt["config"]["train"]["rtg_scale"]))
    return {
        **result,
        "env": env_cfg["id"],
        "core": core_name(model),
        "model": "dt",
        "context": model.context,
        "target_return": float(target_return),
        "env_knobs": env_knobs(env_cfg),
        "global_step": int(ckpt["global_step"]),
    }


def evaluate_from_args(args: Any, choice: str | None) -> dict[str, Any]:
    """``evaluate_checkpoint`` from command-line arguments (see :mod:`agents.common.cli`)."""
    saved = load_checkpoint(args.checkpoint)["config"]["env"]
    target = args.get("target_return")
    return evaluate_checkpoint(
        str(args.checkpoint),
        episodes=int(args.get("episodes", 512)),
        num_envs=int(args.get("num_envs", 512)),
        device=str(args.get("device", "cpu")),
        seed=args.get("seed"),
        env_cfg=env_config(args, choice, saved),
        target_return=None if target is None else float(target),
    )


def main(argv: list[str] | None = None) -> int:
    return json_command(sys.argv[1:] if argv is None else argv, __doc__, ("checkpoint",),
                        evaluate_from_args)


if __name__ == "__main__":
    sys.exit(main())
