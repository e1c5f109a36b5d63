"""agents.record: a readable MP4, one frame per step, the panel beside the env frame."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np

from agents.common.config import compose
from agents.evaluation.video import compose_frame
from agents.ppo.trainer import run

ROOT = Path(__file__).resolve().parent.parent


def test_record_writes_a_readable_mp4_with_a_frame_per_step(tmp_path):
    summary = run(compose([
        f"runs_root={tmp_path}", "curriculum=null", "env.delay=3", "env.cue_steps=2", "algo.num_envs=8",
        "algo.num_steps=8", "algo.seq_len=8", "algo.num_minibatches=1", "algo.update_epochs=1",
        "total_steps=64", "progress=false", "eval.episodes=0", "eval.video_episodes=0",
        "threads=1",
    ]))
    out = tmp_path / "videos" / "eval.mp4"
    proc = subprocess.run(
        [sys.executable, "-m", "agents.record", f"checkpoint={summary['checkpoint']}",
         f"out={out}", "episodes=3"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    episode_length = 2 + 3 + 1  # cue_steps + delay + the choice
    assert info["frames"] == 3 * episode_length
    assert [e["length"] for e in info["episodes"]] == [episode_length] * 3
    with imageio.get_reader(str(out)) as reader:  # its len() is inf: iterate, no list()
        frames = [frame for frame in reader.iter_data()]
    assert len(frames) == 3 * episode_length
    h, w = frames[0].shape[:2]
    assert h % 16 == 0 and w % 16 == 0 and frames[0].dtype == np.uint8


def test_compose_frame_adds_a_panel():
    frame = np.full((50, 70, 3), 200, np.uint8)
    out = compose_frame(frame, ["step 1", "action 2", "reward +1.000"])
    assert out.shape[0] % 16 == 0 and out.shape[1] % 16 == 0 and out.shape[1] > 70
    assert np.array_equal(out[:50, :70], frame)
    assert out[:, 70:].max() > 100, "the panel has text on it"
