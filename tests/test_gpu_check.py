"""benchmarks/gpu_check.py on a machine without a GPU: the one-line refusal and the report."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from benchmarks import gpu_check

ROOT = gpu_check.ROOT


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has nvidia-smi")
def test_without_a_gpu_make_gpu_check_stops_with_one_line():
    assert gpu_check.find_gpus() == []
    proc = subprocess.run(["python3", "benchmarks/gpu_check.py"], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines() == [gpu_check.no_gpu_line()]
    made = subprocess.run(["make", "-s", "gpu-check"], cwd=ROOT, capture_output=True, text=True)
    assert made.returncode != 0 and made.stderr.splitlines()[0] == gpu_check.no_gpu_line()


def _results(dm_sps, gru_sps):
    return {
        "gpus": ["NVIDIA H200, 143771 MiB, 580.159.03"], "torch": "2.13.0+cu130", "python": "3.12.3",
        "commit": "abc1234", "date": "2026-11-29T10:00:00+00:00", "threads": 1,
        "steps": [{"name": "cuda_tests", "returncode": 0, "seconds": 40.0, "log": "l/cuda_tests.log",
                   "tail": ["===== 14 passed, 700 deselected in 40.0s ====="]},
                  {"name": "env_throughput", "returncode": 0, "seconds": 90.0, "log": "l/env.log", "tail": []},
                  {"name": "training", "returncode": 1, "seconds": 5.0, "log": "l/training.log", "tail": []}],
        "env": {"rows": [
            {"kind": "batched", "env": "recall/DelayedMatch-v0", "num_envs": 16384,
             "recall": {"cuda": {"sps": dm_sps / 10}}},
            {"kind": "batched", "env": "recall/DelayedMatch-v0", "num_envs": 1048576,
             "recall": {"cuda": {"sps": dm_sps}}},
            {"kind": "batched", "env": "recall/Ballet-v0", "num_envs": 1048576,
             "recall": {"cuda": "failed: OutOfMemoryError: CUDA out of memory"}}]},
        "train": {"overrides": ["algo=ppo_one_epoch"], "rows": [
            {"core": "gru", "device": "cuda", "num_envs": 65536, "sps": gru_sps, "rollout_sps": 3e6},
            {"core": "lstm", "device": "cuda", "num_envs": 65536, "error": "OutOfMemoryError: x"}]},
        "training": {"command": "python -m agents.train experiment=gru_delayed_match device=cuda",
                     "seconds": 61.0, "success_rate": 1.0, "mean_return": 1.0, "global_step": 3011584},
    }


def test_the_report_states_the_targets_and_every_step():
    text = gpu_check.write_report(_results(1.3e9, 0.8e6))
    assert "| batched DelayedMatch >= 1.00 G steps/s | 1.30 G (eager, 1,048,576 copies) | yes |" in text
    assert "| GRU-128 PPO training >= 1.00 M env steps/s | 800.00 k (65,536 envs) | no (80% of it) |" in text
    assert "| cuda_tests | ok: 14 passed, 700 deselected in 40.0s | 40.0 |" in text
    assert "| training | failed (1) |" in text
    assert "| recall/Ballet-v0 | 1,048,576 | failed: OutOfMemoryError" in text
    assert "NVIDIA H200" in text and "commit abc1234" in text and "greedy success 1.000" in text
    # The compiled step counts when it is faster, and its build is in the report.
    res = _results(0.7e9, 2e6)
    res["compiled"] = {"rows": [{"env": "recall/DelayedMatch-v0", "num_envs": 1_048_576, "eager_sps": 0.7e9,
                                 "compiled_sps": 2.5e9, "program": {"compiled": True, "source": "built",
                                                                    "seconds": 41.0}}]}
    text = gpu_check.write_report(res)
    assert "| 2.50 G (compiled, 1,048,576 copies) | yes |" in text
    assert "| recall/DelayedMatch-v0 | 1,048,576 | 700.00 M | 2.50 G | 3.6x | built in 41.0 s |" in text
    empty = gpu_check.write_report({"steps": []})
    assert "| not measured |" in empty


def test_bad_max_envs_is_one_line():
    with pytest.raises(SystemExit, match=r"--max-envs 0 is not accepted; accepted: >= 1"):
        gpu_check.main(["--max-envs", "0"])
