"""Decision transformer with DT-Mem: causality, memory across windows, learning, CLI round trip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import envs
from agents.common.config import make_env
from agents.dt.collect import OraclePolicy, collect_episodes, write_dataset
from agents.dt.model import DecisionTransformer
from agents.dt.trainer import DTTrainer

ROOT = Path(__file__).resolve().parent.parent


def _model(memory=True, context=6):
    torch.manual_seed(0)
    env = envs.make_vec("recall/DelayedMatch-v0", 1, delay=4)
    return DecisionTransformer(env.single_observation_space, env.single_action_space,
                               context=context, d_model=32, n_layers=2, n_heads=2, dropout=0.0,
                               memory=memory, memory_cfg={"hidden_size": 32, "mem_slots": 4,
                                                          "num_heads": 2}).eval()


def _window(B=3, T=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.stack([torch.randint(3, (B, T), generator=g)] +
                      [torch.randint(9, (B, T), generator=g) for _ in range(5)], -1)
    return (torch.rand(B, T, generator=g), obs, torch.randint(4, (B, T), generator=g),
            torch.arange(T).expand(B, T))


@pytest.mark.parametrize("memory", [True, False])
def test_causal(memory):
    model = _model(memory)
    rtg, obs, act, ts = _window()
    base, _ = model(rtg, obs, act, ts)
    rtg2, obs2, act2 = rtg.clone(), obs.clone(), act.clone()
    act2[:, 3] = (act[:, 3] + 1) % 4  # a_3 is seen from step 4 on
    obs2[:, 4, 1] = (obs[:, 4, 1] + 1) % 9
    rtg2[:, 4] += 1.0
    out, _ = model(rtg2, obs2, act2, ts)
    diff = (out - base).abs().amax(-1)
    assert diff[:, :4].max() == 0
    assert (diff[:, 4] > 1e-4).all()


def test_partial_window_equals_prefix_and_its_memory():
    """Acting recomputes the window so far: it must equal the full window's prefix."""
    model = _model()
    rtg, obs, act, ts = _window()
    full, _ = model(rtg, obs, act, ts)
    part, mem_part = model(rtg[:, :3], obs[:, :3], act[:, :3], ts[:, :3])
    assert torch.allclose(part, full[:, :3], atol=1e-5)
    _, mem_at = model(rtg, obs, act, ts, last=torch.full((3,), 2))
    for a, b in zip(mem_part, mem_at, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_memory_carries_across_windows_and_resets():
    model = _model()
    rtg, obs, act, ts = _window()
    _, state_a = model(rtg, obs, act, ts)
    obs_b = obs.clone()
    obs_b[:, 0, 1] = (obs[:, 0, 1] + 1) % 9
    _, state_b = model(rtg, obs_b, act, ts)
    rtg2, obs2, act2, ts2 = _window(seed=1)
    out_a, _ = model(rtg2, obs2, act2, ts2 + 6, state_a)
    out_b, _ = model(rtg2, obs2, act2, ts2 + 6, state_b)
    assert (out_a - out_b).abs().max() > 1e-4  # the earlier window reaches this one
    starts = torch.ones(3, dtype=torch.bool)
    out_a, _ = model(rtg2, obs2, act2, ts2 + 6, state_a, starts)
    out_b, _ = model(rtg2, obs2, act2, ts2 + 6, state_b, starts)
    assert torch.equal(out_a, out_b)  # an episode start wipes it
    plain = _model(memory=False)
    assert plain.initial_state(3, "cpu") == []


def test_bad_input():
    env = envs.make_vec("recall/DelayedMatch-v0", 1)
    with pytest.raises(ValueError, match="context must be a positive int, got 0"):
        DecisionTransformer(env.single_observation_space, env.single_action_space, context=0)
    with pytest.raises(ValueError, match=r"unknown memory option\(s\) \['slots'\]"):
        DecisionTransformer(env.single_observation_space, env.single_action_space,
                            memory_cfg={"slots": 4})
    model = _model(context=6)
    rtg, obs, act, ts = _window(T=6)
    with pytest.raises(ValueError, match="window of 7 steps exceeds the context of 6"):
        model(torch.cat([rtg, rtg[:, :1]], 1), torch.cat([obs, obs[:, :1]], 1),
              torch.cat([act, act[:, :1]], 1), torch.arange(7).expand(3, 7))


def _dataset(root, cfg, episodes=512):
    env = make_env(cfg, 64, "cpu", 0, final_observation=True)
    write_dataset(root, "dm-oracle-v0", collect_episodes(env, OraclePolicy(env), episodes),
                  cfg, env, {"policy": "oracle"})
    return root


def _cfg(**over):
    base = OmegaConf.load(ROOT / "configs" / "train_dt.yaml")
    base.pop("defaults")
    base.pop("hydra")
    core = {"core": {"name": "dtmem", "hidden_size": 32, "mem_slots": 4, "num_heads": 2}}
    return OmegaConf.merge(base, core, over)


def test_tiny_dtmem_learns_short_delay_beyond_its_context(tmp_path):
    """Delay 1, context K = 1 step: the cue (xi = 2 > K) is only reachable through the memory."""
    env_cfg = {"id": "recall/DelayedMatch-v0", "delay": 1, "num_symbols": 4, "num_choices": 2}
    data = _dataset(tmp_path / "data", env_cfg)
    cfg = _cfg(dataset=str(data), context=1, progress=False, checkpoint_every=0, log_every=50,
               model={"d_model": 32, "n_layers": 1, "n_heads": 2, "dropout": 0.0},
               train={"batch_size": 64, "updates": 300, "lr": 3e-3, "warmup": 10},
               eval={"episodes": 400, "num_envs": 400})
    (tmp_path / "run").mkdir()
    summary = DTTrainer(cfg, tmp_path / "run").train()
    assert summary["eval"]["episodes"] == 400
    # Chance 0.5; 400 episodes put chance +- 0.025 (one std), so 0.65 is six std above it.
    assert summary["eval"]["success_rate"] >= 0.65
    assert (tmp_path / "run" / "checkpoints" / "latest.pt").is_file()


def _run(args, cwd, parse=True):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]) if parse else None


def test_collect_train_evaluate_round_trip(tmp_path):
    out = _run(["agents.collect", "env=delayed_match", "env.delay=2", "episodes=64",
                f"out={tmp_path / 'ds'}", "progress=false"], tmp_path)
    assert out["episodes"] == 64 and out["mean_return"] == 1.0
    _run(["agents.train_dt", f"dataset={tmp_path / 'ds'}", "core=dtmem", "context=2",
          "train.updates=3", "train.batch_size=8", "model.d_model=16", "core.hidden_size=16",
          "eval.episodes=0", "progress=false", f"runs_root={tmp_path / 'runs'}"], ROOT, parse=False)
    run_dir = next((tmp_path / "runs" / "dt").iterdir())
    # agents.evaluate hands kind-"dt" checkpoints to agents.dt.evaluate.
    result = _run(["agents.evaluate", f"checkpoint={run_dir}", "target_return=1.0", "episodes=16"], ROOT)
    assert result["episodes"] == 16 and result["env"] == "recall/DelayedMatch-v0"
    assert result["core"] == "dtmem" and 0.0 <= result["success_rate"] <= 1.0
    assert set(result) >= {"success_rate", "mean_return", "episodes", "env", "core"}


def tiny_cfg(tmp_path, updates: int):
    """A tiny DT-Mem on 16 oracle episodes of DelayedMatch (delay 1), no evaluation."""
    dm = {"id": "recall/DelayedMatch-v0", "delay": 1, "num_symbols": 4, "num_choices": 2}
    data = _dataset(tmp_path / "dm", dm, episodes=16)
    return _cfg(dataset=str(data), context=2, progress=False, checkpoint_every=0,
                model={"d_model": 16, "n_layers": 1, "n_heads": 2, "dropout": 0.0},
                core={"hidden_size": 16}, train={"batch_size": 4, "updates": updates},
                eval={"episodes": 0})


def test_finetune_on_other_observation_space_names_both(tmp_path):
    cfg = tiny_cfg(tmp_path, updates=1)
    (tmp_path / "run").mkdir()
    ckpt = DTTrainer(cfg, tmp_path / "run").train()["checkpoint"]
    nback = {"id": "recall/NBack-v0", "n": 1, "length": 4, "num_symbols": 2}
    env = make_env(nback, 4, "cpu", 0, final_observation=True)
    write_dataset(tmp_path / "nb", "nb-oracle-v0", collect_episodes(env, OraclePolicy(env), 8),
                  nback, env, {"policy": "oracle"})
    ft = OmegaConf.merge(cfg, {"dataset": str(tmp_path / "nb"), "finetune": "memory",
                               "init": ckpt})
    (tmp_path / "ft").mkdir()
    with pytest.raises(ValueError) as err:
        DTTrainer(ft, tmp_path / "ft")
    msg = str(err.value)
    assert "observation space MultiDiscrete([3 5 5 5])" in msg  # the checkpoint's
    assert "observation space MultiDiscrete([3 2])" in msg  # the dataset's
    assert "init=" in msg and "dataset=" in msg


@pytest.mark.parametrize("memory", [True, False])
def test_record_renders_a_dt_checkpoint_a_frame_per_step(tmp_path, memory):
    import imageio.v2 as imageio

    env_cfg = {"id": "recall/DelayedMatch-v0", "delay": 3, "num_symbols": 4, "num_choices": 2}
    data = _dataset(tmp_path / "data", env_cfg, episodes=16)
    cfg = _cfg(dataset=str(data), context=2, memory=memory, progress=False, checkpoint_every=0,
               model={"d_model": 16, "n_layers": 1, "n_heads": 2, "dropout": 0.0},
               core={"hidden_size": 16}, train={"batch_size": 4, "updates": 2},
               eval={"episodes": 0})
    (tmp_path / "run").mkdir()
    ckpt = DTTrainer(cfg, tmp_path / "run").train()["checkpoint"]
    out = tmp_path / "dt.mp4"
    info = _run(["agents.record", f"checkpoint={ckpt}", f"out={out}", "episodes=3"], ROOT)
    episode_length = 1 + 3 + 1  # cue, delay, choice
    assert info["frames"] == 3 * episode_length
    assert [e["length"] for e in info["episodes"]] == [episode_length] * 3
    with imageio.get_reader(str(out)) as reader:  # its len() is inf: iterate
        frames = [frame for frame in reader.iter_data()]
    assert len(frames) == 3 * episode_length


def test_window_timesteps_do_not_depend_on_the_windows_place_in_the_episode():
    torch.manual_seed(0)
    env = envs.make_vec("recall/DelayedMatch-v0", 1, delay=4)
    kw = dict(context=6, d_model=32, n_layers=1, n_heads=2, dropout=0.0, max_timestep=64,
              memory_cfg={"hidden_size": 32, "mem_slots": 4, "num_heads": 2})
    rtg, obs, act, ts = _window()
    for timestep, same in (("window", True), ("episode", False)):
        model = DecisionTransformer(env.single_observation_space, env.single_action_space,
                                    timestep=timestep, **kw).eval()
        a, _ = model(rtg, obs, act, ts)
        b, _ = model(rtg, obs, act, ts + 12)
        assert torch.allclose(a, b, atol=1e-6) == same
    with pytest.raises(ValueError, match="timestep='step'; accepted: episode, window"):
        DecisionTransformer(env.single_observation_space, env.single_action_space, timestep="step")


def test_init_warm_starts_every_weight_with_a_new_context(tmp_path):
    env_cfg = {"id": "recall/DelayedMatch-v0", "delay": 1, "num_symbols": 4, "num_choices": 2}
    data = _dataset(tmp_path / "data", env_cfg, episodes=16)
    cfg = _cfg(dataset=str(data), context=2, progress=False, checkpoint_every=0,
               model={"d_model": 16, "n_layers": 1, "n_heads": 2, "dropout": 0.0,
                      "timestep": "window"},
               core={"hidden_size": 16}, train={"batch_size": 4, "updates": 1},
               eval={"episodes": 0})
    (tmp_path / "a").mkdir()
    first = DTTrainer(cfg, tmp_path / "a")
    ckpt = first.train()["checkpoint"]
    (tmp_path / "b").mkdir()
    warm = DTTrainer(OmegaConf.merge(cfg, {"init": ckpt, "context": 3}), tmp_path / "b")
    assert warm.model.context == 3 and warm.model.timestep == "window"
    for (name, a), b in zip(first.model.state_dict().items(), warm.model.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    assert all(p.requires_grad for p in warm.model.parameters())
    with pytest.raises(ValueError, match="memory=False was asked for"):
        DTTrainer(OmegaConf.merge(cfg, {"init": ckpt, "memory": False}), tmp_path / "b")
