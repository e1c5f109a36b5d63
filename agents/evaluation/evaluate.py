"""Evaluation of a checkpoint, batched: greedy and sampled.

    python -m agents.evaluate checkpoint=<file or run dir> episodes=N
        [num_envs=512] [device=cpu] [seed=...] [deterministic=true|false]
        [env=<configs/env name or env id>] [env.<knob>=...]

Prints one JSON line: ``greedy`` and ``sampled`` (each success_rate,
mean_return, mean_length, episodes) on the same episodes' seeds, the greedy
figures again at the top level, env, core and the env knobs.
``deterministic=true`` (or ``false``) runs only the greedy (or sampled) policy.
Both matter: a greedy policy in a gridworld can loop where sampling escapes. By default the env is the one the
checkpoint was trained on; ``env=`` and ``env.<knob>=`` change it (e.g. a
longer delay). An env whose spaces do not fit the policy is a clear error.
Evaluation episodes are seeded apart from training (seed = training seed + 10**6); the
sampled policy's draws are seeded from the same seed, so the figures repeat exactly.
Decision-transformer checkpoints are handed to ``agents.dt.evaluate``.
"""

from __future__ import annotations

import sys
from typing import Any

import torch

from agents.common.checkpoint import check_env_fits, load_checkpoint, policy_from_checkpoint
from agents.common.cli import env_config, json_command
from agents.common.config import env_knobs, make_env
from agents.evaluation.episode_tally import EpisodeTally
from agents.ppo.policy import Policy

EVAL_SEED_OFFSET = 1_000_000


@torch.no_grad()
def evaluate_policy(
    policy: Policy, env, episodes: int, deterministic: bool = True, max_steps: int = 1_000_000
) -> dict[str, float]:
    """Run exactly ``episodes`` episodes over the env's copies (see ``EpisodeTally``)."""
    device = policy.device
    n = env.num_envs
    tally = EpisodeTally(episodes, n, device)
    obs, _ = env.reset()
    state = policy.initial_state(n, device)
    starts = torch.ones(n, dtype=torch.bool, device=device)
    prev_a = torch.zeros(n, dtype=torch.int64, device=device)
    prev_r = torch.zeros(n, dtype=torch.float32, device=device)
    policy.eval()
    for step in range(max_steps):
        action, _, _, state = policy.act(obs, state, starts, prev_a, prev_r, deterministic)
        obs, reward, terminated, truncated, info = env.step(action)
        tally.add(info)
        starts, prev_a, prev_r = terminated | truncated, action, reward
        if step % 32 == 31 and tally.complete():
            break
    else:
        raise RuntimeError(f"{episodes} episodes did not finish within {max_steps} steps")
    return tally.result()


MODES = {"greedy": True, "sampled": False}


def evaluate_modes(
    policy: Policy, make_eval_env, episodes: int, deterministic: bool | None = None
) -> dict[str, Any]:
    """``greedy`` and ``sampled`` results (or the one ``deterministic`` picks), each on a
    fresh env from ``make_eval_env()``; the top level repeats the first mode's figures."""
    if deterministic is not None and not isinstance(deterministic, bool):
        raise ValueError(f"deterministic={deterministic!r} must be true, false or unset (both)")
    modes = [m for m, greedy in MODES.items() if deterministic in (None, greedy)]
    out: dict[str, Any] = {m: evaluate_policy(policy, make_eval_env(), episodes, MODES[m])
                           for m in modes}
    return {**out[modes[0]], **out}


def evaluate_checkpoint(
    checkpoint: str,
    episodes: int = 512,
    num_envs: int = 512,
    device: str = "cpu",
    seed: int | None = None,
    env_cfg: dict[str, Any] | None = None,
    deterministic: bool | None = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint file (or run dir) on its own env or on ``env_cfg``.

    Torch's generator is forked for the call (building the policy and the sampled
    actions draw from it), so the caller's stream is left as it was, and seeded from the
    evaluation seed, so the sampled figures are the same in every process."""
    dev = torch.device(device)
    with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
        return _evaluate_checkpoint(checkpoint, episodes, num_envs, device, seed, env_cfg,
                                    deterministic)


def _evaluate_checkpoint(checkpoint, episodes, num_envs, device, seed, env_cfg, deterministic):
    ckpt = load_checkpoint(checkpoint, map_location=device)
    policy = policy_from_checkpoint(ckpt, device)
    env_cfg = env_cfg or ckpt["config"]["env"]
    if seed is None:
        seed = int(ckpt["config"]["seed"]) + EVAL_SEED_OFFSET

    def make_eval_env():
        return make_env(env_cfg, min(num_envs, episodes), device, seed, check_actions=False)

    check_env_fits(policy, make_eval_env(), env_cfg["id"], checkpoint)
    torch.manual_seed(seed)  # the sampled actions' draws (the caller's generator is forked)
    result = evaluate_modes(policy, make_eval_env, episodes, deterministic)
    return {
        **result,
        "env": env_cfg["id"],
        "core": ckpt["policy"]["core"],
        "env_knobs": env_knobs(env_cfg),
        "global_step": int(ckpt["global_step"]),
    }


def _evaluate(args: Any, choice: str | None) -> dict[str, Any]:
    ckpt = load_checkpoint(args.checkpoint)
    if ckpt.get("kind", "ppo") == "dt":  # decision transformers have their own evaluation
        from agents.dt import evaluate as dt_eval

        return dt_eval.evaluate_from_args(args, choice)
    return evaluate_checkpoint(
        str(args.checkpoint),
        episodes=int(args.get("episodes", 512)),
        num_envs=int(args.get("num_envs", 512)),
        device=str(args.get("device", "cpu")),
        seed=args.get("seed"),
        env_cfg=env_config(args, choice, ckpt["config"]["env"]),
        deterministic=args.get("deterministic"),
    )


def main(argv: list[str] | None = None) -> int:
    return json_command(sys.argv[1:] if argv is None else argv, __doc__, ("checkpoint",), _evaluate)


if __name__ == "__main__":
    sys.exit(main())
