"""Evaluate (and record) a policy trained by ``agents.sf_train``.

    python -m agents.sf_enjoy --experiment=DelayedMatch_gru --train_dir=runs/sf \\
        --episodes=500 --video=runs/sf/DelayedMatch_gru/eval.mp4

Reads the experiment's ``config.json`` (task, knobs, core, sizes), rebuilds
sample-factory's actor-critic with the recall core, loads the newest (or best)
checkpoint with ``torch.load(weights_only=False)`` (torch >= 2.6 defaults to
``weights_only=True``, which sample-factory 2.1.1's own loader does not
handle; the file comes from the user's own run, so it is trusted), and plays
``--episodes`` episodes on a batch of ``--copies`` copies seeded apart from
training. Prints one JSON line: episodes, success rate, mean return, mean
length, and the video path. Actions are the argmax of the policy unless
``--sample``. ``--video`` writes copy 0's first ``--video_episodes`` episodes
(MP4 through imageio-ffmpeg; ``.gif`` also works).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import numpy as np
import torch

import envs
from agents.common.cli import one_line_errors
from agents.common.device import check_device
from agents.integrations.sample_factory import (
    _one_hot_of,
    latest_checkpoint,
    load_checkpoint,
    parse_env_kwargs,
    register_all,
)


def load_policy(train_dir: str, experiment: str, kind: str = "latest", device: str = "cpu"):
    """(cfg, actor_critic) of a finished or running sf_train experiment."""
    from sample_factory.model.actor_critic import create_actor_critic
    from sample_factory.utils.attr_dict import AttrDict

    cfg_path = os.path.join(train_dir, experiment, "config.json")
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(
            f"no config.json for experiment {experiment!r} in {train_dir!r}: {cfg_path} is missing"
        )
    with open(cfg_path) as f:
        cfg = AttrDict(json.load(f))
    if "recall_core" not in cfg:
        raise ValueError(f"{cfg_path} was not written by agents.sf_train (no recall_core)")
    register_all()
    probe = envs.make_vec(cfg.env, 1, **parse_env_kwargs(cfg.env_kwargs))
    space = _one_hot_of(probe).out_space
    import gymnasium as gym

    obs_space = space if isinstance(space, gym.spaces.Dict) else gym.spaces.Dict({"obs": space})
    actor_critic = create_actor_critic(cfg, obs_space, probe.single_action_space)
    checkpoint = load_checkpoint(latest_checkpoint(train_dir, experiment, kind=kind), device)
    actor_critic.load_state_dict(checkpoint["model"])
    actor_critic.to(device).eval()
    return cfg, actor_critic


@torch.no_grad()
def play_episodes(ac, cfg, episodes: int, copies: int, seed: int, deterministic: bool = True,
                  device: str = "cpu", on_step=None) -> tuple[list[bool], list[float], list[int]]:
    """(success, return, length) of the first ``episodes`` episodes that end, played by the
    actor-critic ``ac`` of an sf_train run (``cfg``) on ``copies`` fresh copies seeded ``seed``.

    ``on_step(batch, done)`` is called after the reset (``done`` None) and after every
    step (the video uses it). The model's
    train/eval mode is put back afterwards, so a trainer may call this between updates.
    """
    from sample_factory.algo.utils.action_distributions import argmax_actions
    from sample_factory.algo.utils.rl_utils import prepare_and_normalize_obs
    from sample_factory.model.model_utils import get_rnn_size

    batch = envs.make_vec(cfg.env, copies, device=device, seed=seed, **parse_env_kwargs(cfg.env_kwargs))
    encode = _one_hot_of(batch)

    def as_dict(o):
        enc = encode(o)
        return dict(enc) if isinstance(enc, dict) else {"obs": enc}

    was_training = ac.training
    ac.eval()  # no running-statistics updates from evaluation episodes
    obs, _ = batch.reset(seed=seed)
    if on_step is not None:
        on_step(batch, None)
    rnn = torch.zeros(copies, get_rnn_size(cfg), device=device)
    successes, returns, lengths = [], [], []
    try:
        while len(successes) < episodes:
            out = ac(prepare_and_normalize_obs(ac, as_dict(obs)), rnn)
            actions = argmax_actions(ac.action_distribution()) if deterministic else out["actions"]
            obs, _, _, _, info = batch.step(actions.reshape(-1).long())
            done = info["done"]
            rnn = out["new_rnn_states"] * (~done).float()[:, None]
            if on_step is not None:
                on_step(batch, done)
            for i in done.nonzero().flatten().tolist():
                successes.append(bool(info["success"][i]))
                returns.append(float(info["episode_return"][i]))
                lengths.append(int(info["episode_length"][i]))
    finally:
        ac.train(was_training)
    return successes[:episodes], returns[:episodes], lengths[:episodes]


@torch.no_grad()
def evaluate(
    train_dir: str,
    experiment: str,
    episodes: int = 200,
    copies: int = 64,
    seed: int = 10_000,
    deterministic: bool = True,
    kind: str = "latest",
    video: str | None = None,
    video_episodes: int = 3,
    device: str = "cpu",
) -> dict[str, Any]:
    """Play ``episodes`` episodes with the trained policy; returns the summary dict."""
    for name, value, low in (("episodes", episodes, 1), ("copies", copies, 1), ("video_episodes", video_episodes, 1)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    cfg, ac = load_policy(train_dir, experiment, kind, device)
    frames: list[np.ndarray] = []
    recorded, fps = [0], [4]

    def record(batch, done):
        if done is None:  # after the reset
            fps[0] = batch.metadata.get("render_fps", 4)
            frames.append(batch.render(0))
        elif recorded[0] < video_episodes:
            frames.append(batch.render(0))
            recorded[0] += int(done[0])

    successes, returns, lengths = play_episodes(
        ac, cfg, episodes, copies, seed, deterministic, device, on_step=record if video else None)
    if video:
        _write_video(video, frames, fps=fps[0])
    return {
        "env": cfg.env,
        "core": cfg.recall_core,
        "episodes": len(successes),
        "success_rate": float(np.mean(successes)),
        "mean_return": float(np.mean(returns)),
        "mean_length": float(np.mean(lengths)),
        "video": video,
    }


def _write_video(path: str, frames: list[np.ndarray], fps: int) -> None:
    import imageio.v2 as imageio

    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    if path.endswith(".gif"):
        imageio.mimsave(path, frames, duration=1.0 / fps)
    else:
        # macro_block_size=1 keeps odd frame sizes as they are.
        imageio.mimsave(path, frames, fps=fps, macro_block_size=1)


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--experiment", required=True)
    p.add_argument("--train_dir", default="runs/sf")
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--copies", type=int, default=64)
    p.add_argument("--seed", type=int, default=10_000)
    p.add_argument("--sample", action="store_true", help="sample actions instead of argmax")
    p.add_argument("--checkpoint", choices=["latest", "best"], default="latest")
    p.add_argument("--video", default=None, help="write copy 0's episodes here (.mp4 or .gif)")
    p.add_argument("--video_episodes", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    check_device(a.device)
    torch.set_num_threads(a.threads)
    result = evaluate(
        a.train_dir,
        a.experiment,
        episodes=a.episodes,
        copies=a.copies,
        seed=a.seed,
        deterministic=not a.sample,
        kind=a.checkpoint,
        video=a.video,
        video_episodes=a.video_episodes,
        device=a.device,
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
