"""Checkpoints written by an earlier commit still load, act the same, resume and record.

The run dirs under ``tests/fixtures/checkpoints/`` were written once by
``tests/fixtures/make_checkpoints.py`` (one per kind: PPO, DT-Mem, sample-factory) and are committed
with what they did then (``expected.json``). A change to the checkpoint format, the
config keys, the policy's modules or its arithmetic shows up here as a failure, not as a
user's trained agent that no longer loads or quietly acts differently.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from fixtures.make_checkpoints import DT_RUN as DT
from fixtures.make_checkpoints import EVAL_EPISODES, OUT, evaluate_sf, trace
from fixtures.make_checkpoints import PPO_RUN as PPO
from fixtures.make_checkpoints import SF_RUN as SF

from agents.common.checkpoint import load_checkpoint
from agents.common.config import compose
from agents.evaluation.evaluate import main as evaluate_main
from agents.evaluation.record import main as record_main
from agents.ppo import trainer as train_mod

EXPECTED = json.loads((OUT / "expected.json").read_text())


def _evaluate(run_dir: Path, capsys) -> dict:
    assert evaluate_main([f"checkpoint={run_dir}", f"episodes={EVAL_EPISODES}", "threads=1"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.parametrize("run_dir", [PPO, DT], ids=["ppo", "dt"])
def test_an_old_checkpoint_evaluates_as_it_did(run_dir, capsys):
    assert _evaluate(run_dir, capsys) == EXPECTED[run_dir.name]["evaluate"]


def test_an_old_sample_factory_checkpoint_evaluates_as_it_did():
    """agents.sf_enjoy loads sample-factory's own experiment folder (config.json and the
    checkpoint of the recall-rl core inside its actor-critic) and plays as it did."""
    assert evaluate_sf(SF) == EXPECTED[SF.name]["evaluate"]


def test_an_old_ppo_policy_acts_as_it_did():
    want, got = EXPECTED[PPO.name]["trace"], trace(PPO)
    assert got["actions"] == want["actions"]
    for key in ("logprobs", "values"):
        torch.testing.assert_close(torch.tensor(got[key]), torch.tensor(want[key]),
                                   rtol=1e-5, atol=1e-6, msg=f"{key} changed")


def test_an_old_ppo_run_resumes_and_trains_on(tmp_path):
    run_dir = tmp_path / PPO.name
    shutil.copytree(PPO, run_dir)
    before = load_checkpoint(run_dir)["global_step"]
    overrides = [f"resume={run_dir}", f"total_steps={before + 128}", "threads=1"]
    train_mod.run(compose(overrides), overrides=overrides)
    after = load_checkpoint(run_dir)
    assert after["global_step"] == before + 128
    assert after["kind"] == "ppo"


def test_an_old_ppo_checkpoint_records_a_video(tmp_path, capsys):
    out = tmp_path / "episode.mp4"
    assert record_main([f"checkpoint={PPO}", f"out={out}", "episodes=1"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out.stat().st_size > 0 and info["frames"] > 0


def test_sampled_figures_do_not_depend_on_what_ran_before(capsys):
    """agents.evaluate seeds the sampled policy's draws from the evaluation seed, inside a
    fork of torch's generator: the same figures after any use of the generator, and the
    caller's stream untouched."""
    torch.manual_seed(123)
    first = _evaluate(PPO, capsys)
    torch.rand(1000)
    assert _evaluate(PPO, capsys) == first
    torch.manual_seed(5)
    _evaluate(PPO, capsys)
    after = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(3))
