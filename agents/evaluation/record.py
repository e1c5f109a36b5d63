"""Render greedy episodes of a checkpoint to an MP4 file.

    python -m agents.record checkpoint=<file or run dir> out=<file.mp4> episodes=K
        [fps=4] [greedy=true] [device=cpu] [seed=...] [env=<configs/env name or env id>] [env.<knob>=...]
        [target_return=...]   (decision-transformer checkpoints: the return they aim for)

One frame per step t (counted from 0, as the env's header counts): the state the
agent acted in, its action drawn apart from the right answer (green where scored
right, red where scored wrong); beside it a panel with the episode, t, the action
("(no effect)" where the env ignores it), the reward it earned, the return so far
and, at the last step, success or failure; under both the memory strip: where the
core read at this step (see ``agents.evaluation.video`` and ``agents.evaluation.memory_strip``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from agents.common.checkpoint import check_env_fits, load_checkpoint, policy_from_checkpoint
from agents.common.cli import env_config, json_command
from agents.common.config import make_env
from agents.dt import evaluate as dt_eval
from agents.evaluation.evaluate import EVAL_SEED_OFFSET
from agents.evaluation.video import play_episodes, write_mp4


def record_checkpoint(
    checkpoint: str,
    out: str | Path,
    episodes: int = 1,
    fps: int = 4,
    greedy: bool = True,
    device: str = "cpu",
    seed: int | None = None,
    env_cfg: dict | None = None,
    target_return: float | None = None,
) -> dict:
    """PPO checkpoints play their policy; decision-transformer ones (kind ``dt``) act as in
    ``agents.dt.evaluate`` (greedy, conditioned on ``target_return``, default the checkpoint's)."""
    ckpt = load_checkpoint(checkpoint, map_location=device)
    kind = ckpt.get("kind", "ppo")
    if kind not in ("ppo", "dt"):
        raise ValueError(f"{checkpoint} is a {kind} checkpoint; record plays PPO and DT ones")
    env_cfg = env_cfg or ckpt["config"]["env"]
    if seed is None:
        seed = int(ckpt["config"]["seed"]) + EVAL_SEED_OFFSET
    env = make_env(env_cfg, 1, device, seed, check_actions=False)
    if kind == "dt":
        model = dt_eval.model_from_checkpoint(ckpt, device).eval()
        dt_eval.check_env_fits(model, env, env_cfg["id"])
        if target_return is None:
            target_return = float(ckpt["config"]["eval"]["target_return"])
        policy = dt_eval.DTActor(model, 1, target_return, float(ckpt["config"]["train"]["rtg_scale"]))
    else:
        policy = policy_from_checkpoint(ckpt, device).eval()
        check_env_fits(policy, env, env_cfg["id"], checkpoint)
    return record_policy(policy, env, out, episodes, fps, greedy)


def record_policy(policy, env, out, episodes: int = 1, fps: int = 4, greedy: bool = True) -> dict:
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    frames, summaries = play_episodes(policy, env, episodes, deterministic=greedy)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_mp4(out, frames, fps)
    return {"out": str(out), "frames": len(frames), "episodes": summaries}


def _record(args: Any, choice: str | None) -> dict:
    saved = load_checkpoint(args.checkpoint)["config"]["env"]
    target = args.get("target_return")
    return record_checkpoint(
        str(args.checkpoint),
        args.out,
        episodes=int(args.get("episodes", 1)),
        fps=int(args.get("fps", 4)),
        greedy=bool(args.get("greedy", True)),
        device=str(args.get("device", "cpu")),
        seed=args.get("seed"),
        env_cfg=env_config(args, choice, saved),
        target_return=None if target is None else float(target),
    )


def main(argv: list[str] | None = None) -> int:
    return json_command(sys.argv[1:] if argv is None else argv, __doc__, ("checkpoint", "out"),
                        _record)


if __name__ == "__main__":
    sys.exit(main())
