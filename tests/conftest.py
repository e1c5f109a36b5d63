"""Shared test set-up.

The tests run many small tensor ops; on a 2-core machine torch's intra-op
thread pool costs more than it gains there (and under load it is an order of
magnitude slower), so the suite runs torch on one thread.
"""

import torch

torch.set_num_threads(1)


import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# Four tiny runs (2 cores x 2 delays, two updates of 8 envs each): enough for a table
# with two columns and a horizon curve with two points.
TINY_SWEEP = ["core=mlp,gru", "env=delayed_match", "env.delay=2,4", "seed=0", "name=tiny",
              "total_steps=128", "algo.num_envs=8", "algo.num_steps=8", "algo.seq_len=8",
              "eval.episodes=8", "eval.num_envs=8", "eval.video_episodes=0", "progress=false"]


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory):
    """A real multirun through the joblib launcher (2 parallel jobs), run from an empty
    folder: (that folder, the sweep folder, the finished process with ``stdout_text``)."""
    cwd = tmp_path_factory.mktemp("sweep")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "agents.train", "-m", *TINY_SWEEP,
                             "hydra.launcher.n_jobs=2"],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        proc.stdout_text, stderr = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    (sweep,) = (cwd / "runs" / "tiny").iterdir()
    return cwd, sweep, proc


@pytest.fixture
def short_delayed_match(tmp_path):
    """``run(*overrides)``: a short PPO run on DelayedMatch (delay 2, 2 choices; chance 0.5,
    about 7 s on one thread) with extra config overrides; its greedy success rate."""
    from agents.common.config import compose
    from agents.ppo import trainer as train_mod

    def run(*overrides: str) -> float:
        cfg = compose([f"runs_root={tmp_path}", "curriculum=null", "env.delay=2", "env.num_choices=2",
                       "algo.num_envs=64", "algo.num_steps=16", "algo.seq_len=16",
                       "total_steps=120000", "progress=false", "eval.episodes=256",
                       "eval.num_envs=256", "eval.video_episodes=0", "threads=1", *overrides])
        return train_mod.run(cfg)["eval"]["greedy"]["success_rate"]

    return run
