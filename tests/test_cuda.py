"""CUDA runs what the CPU runs (skipped without a CUDA device; `make gpu-check` runs them)."""

from __future__ import annotations

import pytest
import torch

import envs
from agents.common.config import compose
from agents.ppo import trainer as train_mod

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return torch.equal(a.cpu(), b.cpu())


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_cuda_env_plays_the_cpu_episodes(env_id):
    # Counter-based RNG (envs/rng.py): the episodes depend on (seed, copy) alone, not the device.
    cpu, gpu = (envs.make_vec(env_id, 64, device=d, seed=3) for d in ("cpu", "cuda"))
    assert _same(cpu.reset(seed=3)[0], gpu.reset(seed=3)[0])
    actions = torch.randint(0, cpu.single_action_space.n, (40, 64), generator=torch.Generator().manual_seed(0))
    for a in actions:
        out_c, out_g = cpu.step(a), gpu.step(a.cuda())
        for x, y in zip(out_c[:4], out_g[:4], strict=True):
            assert _same(x, y)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])  # bfloat16: algo.precision's autocast
def test_cuda_training_runs_and_keeps_its_rollouts_on_the_device(tmp_path, precision):
    cfg = compose([f"runs_root={tmp_path}", "device=cuda", "env=delayed_match", "env.delay=2",
                   f"algo.precision={precision}",
                   "total_steps=2048", "algo.num_envs=64", "algo.num_steps=16", "algo.seq_len=16",
                   "eval.episodes=64", "eval.num_envs=64", "eval.video_episodes=0", "progress=false"])
    summary = train_mod.run(cfg)
    assert summary["global_step"] == 2048 and 0.0 <= summary["eval"]["success_rate"] <= 1.0
