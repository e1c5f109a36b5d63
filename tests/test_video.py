"""agents.evaluation.video: frames that explain themselves (the agent's pick apart from the right answer,
one step count, "(no effect)", the memory strip), in MP4 files and TensorBoard videos."""

from __future__ import annotations

import io

import imageio.v2 as imageio
import numpy as np
import torch
from PIL import Image

import envs
from agents.common.config import compose
from agents.dt.evaluate import DTActor
from agents.dt.model import DecisionTransformer
from agents.evaluation.memory_strip import EMPTY, FUTURE, HELD, READ, StepRead, draw_strip
from agents.evaluation.record import record_policy
from agents.evaluation.video import play_steps
from agents.ppo.policy import Policy
from agents.ppo.trainer import run

CHOICES = 4
PICTURE_HEIGHT = 150  # DelayedMatch's frame


def _policy(core="gru", seed=0, **cfg):
    env = envs.make_vec("recall/DelayedMatch-v0", 1, seed=seed, delay=1)
    torch.manual_seed(seed)
    return Policy(env.single_observation_space, env.single_action_space, core=core,
                  core_cfg=cfg or None), env


def _red(c) -> bool:
    return c[0] > 150 and c[1] < 110 and c[2] < 110


def _green(c) -> bool:
    return c[1] > 150 and c[0] < 140 and c[2] < 150


def _marks(frame: np.ndarray):
    """Per option of DelayedMatch's choice row: the colour of the bar under it and of its
    outline (options at x = 16 + 40 j, 32 px; bar at y 138..143; outline 3 px outside)."""
    bars, outlines = [], []
    for j in range(CHOICES):
        x = 16 + 40 * j
        bars.append(frame[139:143, x + 6 : x + 26].reshape(-1, 3).mean(0))
        outlines.append(frame[106:126, x - 3 : x - 1].reshape(-1, 3).mean(0))
    return bars, outlines


def test_decision_frames_of_the_mp4_mark_the_pick_apart_from_the_answer(tmp_path):
    """Decoded from the MP4: in a failed episode the agent's pick is red and another option
    has the green outline of the right answer; in a successful one the pick is green on it."""
    policy, env = _policy(seed=3)
    out = tmp_path / "episodes.mp4"
    info = record_policy(policy.eval(), env, out, episodes=12, fps=4)
    with imageio.get_reader(str(out)) as reader:
        frames = list(reader.iter_data())
    lengths = [e["length"] for e in info["episodes"]]
    assert len(frames) == sum(lengths) == 12 * 3
    outcomes = {e["success"] for e in info["episodes"]}
    assert outcomes == {True, False}, "seed 3 plays both a success and a failure"
    checked = set()
    for k, episode in enumerate(info["episodes"]):
        frame = frames[sum(lengths[: k + 1]) - 1]  # the choice: the episode's last step
        bars, outlines = _marks(frame)
        red = [j for j, c in enumerate(bars) if _red(c)]
        green_bar = [j for j, c in enumerate(bars) if _green(c)]
        answer = [j for j, c in enumerate(outlines) if _green(c)]
        assert len(answer) == 1, outlines
        if episode["success"]:
            assert red == [] and green_bar == answer
        else:
            assert green_bar == [] and len(red) == 1 and red != answer
        checked.add(episode["success"])
        first = frames[sum(lengths[:k])]  # the cue: nothing to pick, no mark
        assert not any(_red(c) or _green(c) for c in _marks(first)[0])
    assert checked == {True, False}


def test_panel_counts_steps_as_the_env_does_and_says_no_effect():
    policy, env = _policy()
    for steps, summary in play_steps(policy.eval(), env, 2):
        assert [s.t for s in steps] == list(range(summary["length"]))
        for s in steps:
            assert s.lines[1].split() == ["t", str(s.t)]
            assert s.matters == (s.t == summary["length"] - 1)  # only the choice counts
            assert ("(no effect)" in s.lines[2]) == (not s.matters)
        last = steps[-1].lines[-1]
        assert last[0] == ("success" if summary["success"] else "failure")


def test_strip_draws_held_steps_and_the_read_on_the_timeline():
    width, length, t = 64 + 92 + 100, 10, 5  # 100 pixels: 10 per step
    reads = [None] * length
    weights = np.zeros((1, 8))
    weights[0, 5] = 0.9  # 5 steps back from t = 5: step 0
    weights[0, 1] = 0.1
    stored = np.zeros(8, bool)
    stored[:6] = True
    reads[t] = StepRead("steps", weights, ("layer 0",), stored)
    strip = draw_strip(reads, t, width, "memory (test)")
    row = strip[16 + 6, 64:164]  # the middle of the row, one pixel per column
    colour = [tuple(row[10 * s + 5]) for s in range(length)]
    assert colour[0] == READ, "the step read most is at full brightness"
    assert colour[2] == HELD and colour[3] == HELD, "held steps not read are blue"
    assert colour[4] not in (HELD, READ, EMPTY) and colour[4][0] > HELD[0], "a weak read"
    assert all(c == FUTURE for c in colour[6:]), "steps after t are not there yet"


def test_every_core_has_a_strip_and_the_hcam_strip_lights_up():
    for core, cfg in [("gru", {}), ("hcam", {"chunk_size": 1, "max_chunks": 4}),
                      ("rmc", {}), ("mlp", {})]:
        policy, env = _policy(core, **cfg)
        steps, _ = next(play_steps(policy.eval(), env, 1))
        kinds = {s.read.kind if s.read else None for s in steps}
        assert kinds == {"mlp": {None}, "gru": {"change"}, "hcam": {"steps"}, "rmc": {"slots"}}[core]
        if core == "hcam":  # one-step chunks: from step 1 on, the read comes from stored steps
            assert all(s.read.weights[0].sum() > 0.99 for s in steps[1:])
    assert not policy.core.read_recording, "recording is off again after the video"


def test_decision_transformer_videos_show_the_memory_slots():
    env = envs.make_vec("recall/DelayedMatch-v0", 1, seed=0, delay=1)
    for memory in (True, False):
        torch.manual_seed(0)
        model = DecisionTransformer(env.single_observation_space, env.single_action_space,
                                    context=2, d_model=16, n_heads=2, max_timestep=8, memory=memory)
        steps, _ = next(play_steps(DTActor(model.eval(), 1), env, 1))
        if memory:
            read = steps[-1].read
            assert read.kind == "slots" and read.rows == ("block 0", "block 1")
            np.testing.assert_allclose(read.weights.sum(-1), 1.0, rtol=1e-5)
        else:
            assert all(s.read is None for s in steps)


def test_tensorboard_video_frames_carry_the_strip(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    summary = run(compose([
        f"runs_root={tmp_path}", "curriculum=null", "env.delay=2", "core=gtrxl", "core.window=4",
        "core.hidden_size=16", "algo.num_envs=8", "algo.num_steps=8", "algo.seq_len=8",
        "total_steps=64", "video_every=1", "progress=false", "eval.episodes=0",
        "eval.video_episodes=1", "threads=1",
    ]))
    run_dir = summary["checkpoint"].split("/checkpoints/")[0]
    acc = EventAccumulator(f"{run_dir}/tb", size_guidance={"images": 0})
    acc.Reload()
    event = acc.Images("eval/video")[-1]
    gif = Image.open(io.BytesIO(event.encoded_image_string))
    frames = []
    for i in range(gif.n_frames):
        gif.seek(i)
        frames.append(np.asarray(gif.convert("RGB")))
    assert len(frames) == 4  # cue, 2 delay steps, choice
    strip = frames[-1][PICTURE_HEIGHT:]
    assert strip.shape[0] >= 16 + 2 * 14, "two layer rows under the picture"
    yellow = (strip[..., 0] > 200) & (strip[..., 1] > 150) & (strip[..., 2] < 120)
    assert yellow.sum() > 20, "the choice step's read is drawn on the strip"
    with imageio.get_reader(summary["video"]) as reader:
        assert next(iter(reader.iter_data())).shape[:2] == frames[0].shape[:2]
