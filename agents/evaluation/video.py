"""Episodes as frames: the env's rendering beside a text panel, the memory strip below.

Used by ``agents.record`` (MP4 through imageio-ffmpeg) and by training's
evaluation videos in TensorBoard. ``add_video`` writes the same summary as
``SummaryWriter.add_video`` (an animated GIF image summary) but encodes the GIF
with PIL, so it needs no moviepy.

A frame is one step t of an episode (t counted from 0, as the env's own header
counts it): the state the agent acted in, with its action drawn on it apart from
the right answer (``env.render(0, action=a)``: green right, red wrong where the
action is scored); the panel names the action, says "(no effect)" where the env
ignores it, and gives the reward it earned; the strip under both shows where the
core read at this step (``agents.evaluation.memory_strip``).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

from agents.evaluation.memory_strip import StepRead, draw_strip, step_read
from agents.ppo.policy import Policy

PANEL_WIDTH = 176
BACKGROUND = (16, 16, 22)
TEXT = (230, 230, 230)
SUCCESS = (60, 220, 90)
FAILURE = (235, 50, 50)

Line = str | tuple[str, tuple[int, int, int]]


def compose_frame(frame: np.ndarray, lines: list[Line], strip: np.ndarray | None = None) -> np.ndarray:
    """``frame`` with a text panel on its right (a line is text, or (text, colour)) and
    ``strip`` under both, padded to multiples of 16 pixels (for H.264)."""
    h, w = frame.shape[:2]
    height = max(h, 16 * len(lines) + 16)
    width = w + PANEL_WIDTH
    if strip is not None:
        width = max(width, strip.shape[1])
        height += strip.shape[0]
    height += -height % 16
    width += -width % 16
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    canvas.paste(Image.fromarray(frame[..., :3].astype(np.uint8)), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        text, colour = (line, TEXT) if isinstance(line, str) else line
        draw.text((w + 10, 8 + 16 * i), text, fill=colour)
    if strip is not None:
        canvas.paste(Image.fromarray(strip), (0, max(h, 16 * len(lines) + 16)))
    return np.asarray(canvas, dtype=np.uint8).copy()


def strip_width(frame: np.ndarray) -> int:
    return max(frame.shape[1] + PANEL_WIDTH, 400)


@contextlib.contextmanager
def recording_reads(policy):
    """Memory reads recorded while inside (PPO policies' cores; decision transformers'
    DT-Mem memories), switched off again after, so training pays nothing."""
    from memory_modules import MemoryCore

    model = policy.model if hasattr(policy, "model") else policy
    cores = [m for m in model.modules() if isinstance(m, MemoryCore)]
    for core in cores:
        core.record_reads(True)
    try:
        yield
    finally:
        for core in cores:
            core.record_reads(False)


def _action_text(env, action: int, matters: bool) -> str:
    names = getattr(env, "action_names", ())
    text = f"action  {action}" + (f" {names[action]}" if action < len(names) else "")
    return text + ("" if matters else " (no effect)")


def _memory_title(policy) -> str:
    name = getattr(policy, "core_name", None)
    if name is None:  # a decision transformer
        return "memory (dt-mem)" if policy.model.uses_memory else "memory (plain dt)"
    return f"memory ({name})"


@dataclass
class Step:
    """One step of a played episode: what a video frame is made of."""

    t: int  # the step's index in its episode, from 0 (as the env's header counts)
    picture: np.ndarray  # env.render(0, action=action): the state acted in, the action marked
    lines: list[Line]  # the panel
    read: StepRead | None  # where the core read (None: nothing recorded)
    action: int
    matters: bool  # whether the env used the action at this step


@torch.no_grad()
def play_steps(policy: Policy, env, episodes: int, deterministic: bool = True
               ) -> Iterator[tuple[list[Step], dict]]:
    """Play ``episodes`` episodes of copy 0 of ``env``; yield each one's steps and summary.

    ``policy`` is a PPO :class:`Policy` or an ``agents.dt.evaluate.DTActor`` (a decision
    transformer acting greedily; its panel shows the return-to-go instead of the value).
    """
    from agents.dt.evaluate import DTActor

    dt = isinstance(policy, DTActor)
    device = policy.device
    n = env.num_envs
    with recording_reads(policy):
        obs, _ = env.reset()
        state = None if dt else policy.initial_state(n, device)
        starts = torch.ones(n, dtype=torch.bool, device=device)
        prev_a = torch.zeros(n, dtype=torch.int64, device=device)
        prev_r = torch.zeros(n, dtype=torch.float32, device=device)
        steps: list[Step] = []
        ret, played = 0.0, 0
        while played < episodes:
            if dt:
                extra = f"rtg     {float(policy.rtg[0]):+.3f}"
                action = policy.act(obs)
                read = policy.memory_read()
            else:
                action, _, value, state = policy.act(obs, state, starts, prev_a, prev_r, deterministic)
                extra = f"value   {float(value[0]):+.3f}"
                read = policy.core.last_read()
            a, t = int(action[0]), len(steps)
            picture = env.render(0, action=a)
            matter = env.actions_matter()  # None: every action matters
            matters = matter is None or bool(matter[0])
            obs, reward, terminated, truncated, info = env.step(action)
            done = terminated | truncated
            if dt:
                policy.observe(reward, done)
            r = float(reward[0])
            ret += r
            lines: list[Line] = [f"episode {played + 1}/{episodes}", f"t       {t}",
                                 _action_text(env, a, matters), f"reward  {r:+.3f}",
                                 f"return  {ret:+.3f}", extra]
            end = bool(done[0])
            if end:
                success = bool(info["success"][0])
                lines.append(("success" if success else "failure", SUCCESS if success else FAILURE))
            steps.append(Step(t, picture, lines, step_read(read), a, matters))
            if end:
                played += 1
                yield steps, {"return": ret, "length": t + 1, "success": success}
                steps, ret = [], 0.0
            starts, prev_a, prev_r = done, action, reward


def play_episodes(
    policy: Policy, env, episodes: int, deterministic: bool = True
) -> tuple[list[np.ndarray], list[dict]]:
    """Play ``episodes`` episodes of copy 0 of ``env``: a frame per step, episode summaries."""
    title = _memory_title(policy)
    frames: list[np.ndarray] = []
    summaries: list[dict] = []
    for steps, summary in play_steps(policy, env, episodes, deterministic):
        frames += episode_frames(steps, title)
        summaries.append(summary)
    return frames, summaries


def episode_frames(steps: list[Step], title: str) -> list[np.ndarray]:
    """The frames of one finished episode: its length is known, so every strip shares one
    timeline."""
    reads = [step.read for step in steps]
    width = max(strip_width(step.picture) for step in steps)
    return [compose_frame(step.picture, step.lines, draw_strip(reads, step.t, width, title))
            for step in steps]


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
