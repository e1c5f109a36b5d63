"""Episodes as frames: the env's rendering beside a text panel (step, action, reward).

Used by ``agents.record`` (MP4 through imageio-ffmpeg) and by training's
evaluation videos in TensorBoard. ``add_video`` writes the same summary as
``SummaryWriter.add_video`` (an animated GIF image summary) but encodes the GIF
with PIL, so it needs no moviepy.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image, ImageDraw

from agents.policy import Policy

PANEL_WIDTH = 176
BACKGROUND = (16, 16, 22)
TEXT = (230, 230, 230)


def compose_frame(frame: np.ndarray, lines: list[str]) -> np.ndarray:
    """``frame`` with a text panel on its right, padded to multiples of 16 pixels (for H.264)."""
    h, w = frame.shape[:2]
    height = max(h, 16 * len(lines) + 16)
    height += -height % 16
    width = w + PANEL_WIDTH
    width += -width % 16
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    canvas.paste(Image.fromarray(frame[..., :3].astype(np.uint8)), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((w + 10, 8 + 16 * i), line, fill=TEXT)
    return np.asarray(canvas, dtype=np.uint8).copy()


@torch.no_grad()
def play_episodes(
    policy: Policy, env, episodes: int, deterministic: bool = True
) -> tuple[list[np.ndarray], list[dict]]:
    """Play ``episodes`` episodes of copy 0 of ``env``; a frame per step, episode summaries.

    Each frame shows the state the agent acted in, the action it took there and
    the reward that action earned, so an episode of length L gives L frames.
    ``policy`` is a PPO :class:`Policy` or an ``agents.dt_eval.DTActor`` (a decision
    transformer acting greedily; its panel shows the return-to-go instead of the value).
    """
    from agents.dt_eval import DTActor

    dt = isinstance(policy, DTActor)
    device = policy.device
    n = env.num_envs
    obs, _ = env.reset()
    state = None if dt else policy.initial_state(n, device)
    starts = torch.ones(n, dtype=torch.bool, device=device)
    prev_a = torch.zeros(n, dtype=torch.int64, device=device)
    prev_r = torch.zeros(n, dtype=torch.float32, device=device)
    frames: list[np.ndarray] = []
    summaries: list[dict] = []
    ret, t = 0.0, 0
    while len(summaries) < episodes:
        picture = env.render(0)
        if dt:
            extra = f"rtg     {float(policy.rtg[0]):+.3f}"
            action = policy.act(obs)
        else:
            action, _, value, state = policy.act(obs, state, starts, prev_a, prev_r, deterministic)
            extra = f"value   {float(value[0]):+.3f}"
        obs, reward, terminated, truncated, info = env.step(action)
        done = terminated | truncated
        if dt:
            policy.observe(reward, done)
        a, r = int(action[0]), float(reward[0])
        ret += r
        t += 1
        frames.append(
            compose_frame(
                picture,
                [
                    f"episode {len(summaries) + 1}/{episodes}",
                    f"step    {t}",
                    f"action  {a}",
                    f"reward  {r:+.3f}",
                    f"return  {ret:+.3f}",
                    extra,
                ],
            )
        )
        if bool(done[0]):
            summaries.append(
                {"return": ret, "length": t, "success": bool(info["success"][0])}
            )
            ret, t = 0.0, 0
        starts, prev_a, prev_r = done, action, reward
    return frames, summaries


def write_mp4(path, frames: list[np.ndarray], fps: int = 4) -> None:
    import imageio.v2 as imageio

    with imageio.get_writer(str(path), fps=fps, codec="libx264", macro_block_size=16) as writer:
        for frame in frames:
            writer.append_data(frame)


def add_video(writer, tag: str, frames: list[np.ndarray], step: int, fps: int = 4) -> None:
    """An animated GIF image summary, as ``SummaryWriter.add_video`` writes (PIL, no moviepy)."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    images = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    images[0].save(
        buf, format="GIF", save_all=True, append_images=images[1:],
        duration=int(1000 / fps), loop=0,
    )
    h, w = frames[0].shape[:2]
    image = Summary.Image(height=h, width=w, colorspace=3, encoded_image_string=buf.getvalue())
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)
