"""sample-factory 2.1.1 integration: envs, cores as ModelCores, real APPO training and evaluation."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
from agents.integrations.sample_factory import (
    SFCore,
    StateLayout,
    core_state_size,
    make_sf_env,
    register_all,
    resolve_env_id,
)
from agents.integrations.sf_train import build_argv, parse_cfg
from memory_modules import CORES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHORT = ["env=DelayedMatch", "env.delay=1", "env.num_choices=2", "env.num_symbols=4"]
# Small settings so the attention cores' state vectors stay small in tests.
SMALL = {
    "gtrxl": ["core.window=8", "core.hidden_size=32"],
    "hcam": ["core.chunk_size=4", "core.max_chunks=4", "core.hidden_size=32"],
    "dtmem": ["core.hidden_size=32"],
    "rmc": ["core.head_size=8"],
}


@pytest.fixture(scope="module", autouse=True)
def _registered():
    torch.set_num_threads(1)
    register_all()


def _task_or_skip(env_id):
    try:
        return envs.task_class(env_id)
    except ModuleNotFoundError as e:  # a task registered before its module has landed
        pytest.skip(f"{env_id}: {e}")


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_every_task_is_a_sample_factory_env(env_id):
    from sample_factory.algo.utils.context import global_env_registry

    assert env_id in global_env_registry()
    _task_or_skip(env_id)
    env = make_sf_env(env_id, None, {"env_id": 3})
    assert isinstance(env.observation_space, gym.spaces.Box)
    assert env.observation_space.dtype == np.float32
    raw = envs.make_vec(env_id, 1).single_observation_space
    n_parts = len(raw.nvec) if isinstance(raw, gym.spaces.MultiDiscrete) else None
    obs, _ = env.reset(seed=1)
    env.action_space.seed(1)
    ended = 0
    # Longer than the longest time limit of an easy level (Ballet's 320 steps), so an episode
    # ends even where random actions never finish one (Ballet's walk can miss both dancers).
    for _ in range(700):
        assert env.observation_space.contains(obs)
        if n_parts is not None:  # one-hot: one 1 per component
            assert obs.sum() == n_parts and set(np.unique(obs)) <= {0.0, 1.0}
        obs, _, term, trunc, info = env.step(env.action_space.sample())
        if term or trunc:
            ended += 1
            assert info["episode_extra_stats"]["success"] in (0.0, 1.0)
            obs, _ = env.reset()
    assert ended > 0


def test_batched_sf_env_matches_the_batch():
    class Cfg:
        batched_sampling = True
        recall_copies = 8
        env_kwargs = json.dumps({"delay": 2})

    env = make_sf_env("recall/DelayedMatch-v0", Cfg(), {"env_id": 1})
    assert env.num_agents == 8 and env.is_multiagent
    ref = envs.make_vec("recall/DelayedMatch-v0", 8, first_copy=8, delay=2)
    obs, _ = env.reset(seed=4)
    ref_obs, _ = ref.reset(seed=4)
    assert obs["obs"].shape == (8, env.observation_space["obs"].shape[0])
    for _ in range(12):
        a = torch.randint(0, 4, (8,))
        obs, rew, term, trunc, info = env.step(a)
        r_obs, r_rew, *_, r_info = ref.step(a)
        torch.testing.assert_close(rew, r_rew)
        torch.testing.assert_close(info["success"], r_info["success"].float())
        # one-hot of the same observation: index of the 1s = offsets + symbols
        assert torch.equal(obs["obs"].sum(1), torch.full((8,), float(r_obs.shape[1])))


def test_minigrid_rooms_are_batched_sample_factory_envs():
    from sample_factory.algo.utils.context import global_env_registry

    class Cfg:
        batched_sampling = True
        recall_copies = 4
        env_kwargs = "{}"

    assert set(envs.MINIGRID_IDS) <= set(global_env_registry())
    env = make_sf_env("MiniGrid-MemoryS7-v0", Cfg(), {"env_id": 1})
    ref = envs.make_vec("MiniGrid-MemoryS7-v0", 4, first_copy=4)
    width = 7 * 7 * sum(ref.symbol_counts)  # (object, colour, state) ids one-hot per cell
    assert env.observation_space["obs"].shape == (width,)
    obs, _ = env.reset(seed=3)
    ref_obs, _ = ref.reset(seed=3)
    for _ in range(30):
        # every cell's three ids, each a 1 at its own offset
        assert torch.equal(obs["obs"].sum(1), torch.full((4,), 7.0 * 7 * 3))
        a = torch.randint(0, 3, (4,))
        obs, rew, term, trunc, info = env.step(a)
        ref_obs, r_rew, r_term, *_ = ref.step(a)
        torch.testing.assert_close(rew, r_rew)
        assert torch.equal(term, r_term)
    Cfg.batched_sampling = False
    with pytest.raises(ValueError, match="MiniGrid-MemoryS7-v0 runs batched only"):
        make_sf_env("MiniGrid-MemoryS7-v0", Cfg(), {"env_id": 0})


def test_resolve_env_id_and_bad_names():
    assert resolve_env_id("DelayedMatch") == "recall/DelayedMatch-v0"
    assert resolve_env_id("NBack-v0") == "recall/NBack-v0"
    assert resolve_env_id("minigrid_memory") == "MiniGrid-MemoryS7-v0"
    assert resolve_env_id("MiniGrid-MemoryS11-v0") == "MiniGrid-MemoryS11-v0"
    assert build_argv(["env=minigrid_memory", "env.room=S11"])[0] == "--env=MiniGrid-MemoryS11-v0"
    assert "--batched_sampling=True" in build_argv(["env=MiniGrid-MemoryS9-v0"])
    with pytest.raises(ValueError, match="runs batched only; accepted: --batched_sampling=True"):
        build_argv(["env=minigrid_memory", "--batched_sampling=False"])
    with pytest.raises(ValueError, match="env.room='S8' is not a MiniGrid Memory room; accepted: S7, S9"):
        build_argv(["env=minigrid_memory", "env.room=S8"])
    with pytest.raises(ValueError, match="only MiniGrid's Memory rooms have a room"):
        build_argv(["env=delayed_match", "env.room=S9"])
    with pytest.raises(ValueError, match="unknown env 'Nope'.*recall/DelayedMatch-v0"):
        resolve_env_id("Nope")
    with pytest.raises(ValueError, match="unknown env"):
        make_sf_env("recall/Nope-v0")


@pytest.mark.parametrize("core", CORES)
def test_core_sequence_path_equals_acting_path(core):
    """The learner's PackedSequence path (sample-factory's own build_rnn_inputs, zeroing
    at episode ends) gives the outputs the acting path gave, step by step."""
    from sample_factory.algo.learning.rnn_utils import build_core_out_from_seq, build_rnn_inputs

    cfg = parse_cfg([*SHORT, f"core={core}", *SMALL.get(core, [])])
    assert cfg.rnn_size == core_state_size(cfg.recall_core, json.loads(cfg.recall_core_kwargs))
    torch.manual_seed(0)
    c = SFCore(cfg, 10).eval()
    B, T = 5, 12
    x = torch.randn(B * T, 10)
    dones = (torch.rand(B, T) < 0.25).float()
    dones[0, 3] = dones[0, 4] = 1.0  # a one-step episode
    h = torch.zeros(B, cfg.rnn_size)
    ys, hs = [], []
    xs = x.view(B, T, 10)
    with torch.no_grad():
        for t in range(T):
            hs.append(h)
            y, h = c(xs[:, t], h)
            assert torch.all(h[:, 0] == 1.0)  # alive after every step
            ys.append(y)
            h = h * (1 - dones[:, t : t + 1])  # what sample-factory does at episode ends
        y_act = torch.stack(ys, 1).reshape(B * T, -1)
        seq, h0, inv = build_rnn_inputs(x, dones.reshape(-1), torch.stack(hs, 1).reshape(B * T, -1), T)
        out, _ = c(seq, h0)
        y_seq = build_core_out_from_seq(out, inv)
    torch.testing.assert_close(y_seq, y_act, atol=1e-5, rtol=1e-4)
    # a zeroed vector is a real episode start: same output as a fresh initial state
    with torch.no_grad():
        fresh = c.core.initial_state(B, "cpu")
        y0, _ = c.core(xs[:, :1].transpose(0, 1), fresh, torch.ones(1, B, dtype=torch.bool))
        y1, _ = c(xs[:, 0], torch.zeros(B, cfg.rnn_size))
    torch.testing.assert_close(y1, y0[0])


def test_state_layout_roundtrip_keeps_bools():
    state = {"b": torch.tensor([[True, False], [False, True]]), "a": torch.randn(2, 3, 4)}
    lay = StateLayout(state)
    assert lay.size == 1 + 2 + 12
    vec = lay.flatten(state, 2, torch.zeros(2, lay.size))
    assert torch.all(vec[:, 0] == 1)
    back = lay.unflatten(vec)
    assert back["b"].dtype == torch.bool and torch.equal(back["b"], state["b"])
    torch.testing.assert_close(back["a"], state["a"])


def test_state_layout_leaves_out_what_the_core_rebuilds():
    """GTrXL's cached keys and values (and their float64 checksum, which a float32 vector
    could not carry) stay out of sample-factory's state vector: the vector is as long as
    the cache and its mask alone, and the core rebuilds the rest at each step."""
    from memory_modules import make_core

    core = make_core("gtrxl", 8, hidden_size=32, window=8, num_layers=2)
    full = core.initial_state(1, "cpu")
    lay = StateLayout(full, core.derived_state_keys())
    assert lay.size == 1 + 2 * 8 * 32 + 8  # alive + cache0, cache1 + valid
    assert core_state_size("gtrxl", {"hidden_size": 32, "window": 8}) == lay.size
    assert set(lay.unflatten(lay.flatten(full, 1, torch.zeros(1, lay.size)))) == {"cache0", "cache1", "valid"}


def test_a_flag_given_twice_sizes_the_batch_by_its_last_value():
    """benchmarks/peers.py puts --sf-flags after the recipe's own --rollout; sample-factory
    reads the last, so the batch (one synchronous iteration's samples over
    num_batches_per_epoch) must be cut from it too, or sample-factory refuses the ratio."""
    words = [*SHORT, "--batched_sampling=True", "--recall_copies=64", "--rollout=51", "--rollout=102"]
    assert "--batch_size=1632" in build_argv(words)  # 64 copies x 102 steps / 4 batches
    cfg = parse_cfg(words)
    assert (cfg.rollout, cfg.batch_size) == (102, 1632)


@pytest.mark.parametrize("core, rnn_type", [("sf_gru", "gru"), ("sf_lstm", "lstm")])
def test_sample_factorys_own_core_is_its_torch_rnn(core, rnn_type):
    """core=sf_gru / sf_lstm: sample-factory's ModelCoreRNN (nn.GRU / nn.LSTM) of that width,
    none of recall-rl's code in the model, and the evaluation plays it like any other."""
    from sample_factory.algo.utils.make_env import make_env_func_batched
    from sample_factory.model.actor_critic import create_actor_critic
    from sample_factory.model.core import ModelCoreRNN
    from sample_factory.utils.attr_dict import AttrDict

    from agents.integrations.sf_enjoy import play_episodes

    words = [*SHORT, f"core={core}", "core.hidden_size=24", "--batched_sampling=True"]
    argv = build_argv(words)
    assert {"--rnn_size=24", f"--rnn_type={rnn_type}", "--rnn_num_layers=1"} <= set(argv)
    register_all()
    cfg = parse_cfg(words)
    env = make_env_func_batched(cfg, AttrDict(worker_index=0, vector_index=0, env_id=0))
    ac = create_actor_critic(cfg, env.observation_space, env.action_space)
    env.close()
    assert type(ac.core) is ModelCoreRNN and ac.core.core.hidden_size == 24
    assert isinstance(ac.core.core, torch.nn.GRU if rnn_type == "gru" else torch.nn.LSTM)
    successes, returns, _ = play_episodes(ac, cfg, 12, 4, seed=3)
    assert len(successes) == 12 and all(-1.0 <= r <= 1.0 for r in returns)


def test_sample_factorys_own_core_refuses_other_options():
    with pytest.raises(ValueError, match="core 'sf_gru' does not take window; accepted options: "
                                         "hidden_size, num_layers"):
        build_argv([*SHORT, "core=sf_gru", "core.window=4"])
    with pytest.raises(ValueError, match=r"core.hidden_size=0 is out of range; accepted: an int >= 1"):
        build_argv([*SHORT, "core=sf_gru", "core.hidden_size=0"])
    with pytest.raises(ValueError, match="unknown core 'sf_rmc'; accepted: .*sf_gru, sf_lstm"):
        build_argv([*SHORT, "core=sf_rmc"])


def test_bad_settings():
    with pytest.raises(ValueError, match="missing env="):
        build_argv(["core=gru"])
    with pytest.raises(ValueError, match="unknown core 'nope'; accepted: mlp"):
        build_argv([*SHORT, "core=nope"])
    with pytest.raises(ValueError, match="--rnn_size is set from the core"):
        build_argv([*SHORT, "--rnn_size=64"])
    with pytest.raises(ValueError, match="unknown setting 'foo=1'"):
        build_argv([*SHORT, "foo=1"])
    with pytest.raises(ValueError, match="delay=-1 is out of range"):
        build_argv(["env=DelayedMatch", "env.delay=-1"])
    with pytest.raises(ValueError, match="unknown option"):
        build_argv([*SHORT, "core.nope=3"])
    with pytest.raises(ValueError, match="threads"):
        build_argv([*SHORT, "threads=0"])
    cfg = parse_cfg([*SHORT, "core=gru"])
    cfg.rnn_size = 7
    with pytest.raises(ValueError, match="needs a state vector of 129 floats"):
        SFCore(cfg, 10)


def test_batched_sampling_takes_one_env_per_worker():
    """The README's batched line needs no --num_envs_per_worker; more than one is refused in one
    line (sample-factory's sequential wrapper cannot read a batched env's infos)."""
    batched = [*SHORT, "--batched_sampling=True", "--recall_copies=64"]
    argv = build_argv(batched)
    assert "--num_envs_per_worker=1" in argv and "--batch_size=512" in argv  # 64 x 32 / 4
    assert "--num_envs_per_worker=16" in build_argv(SHORT)  # the non-batched default stays
    with pytest.raises(ValueError, match=r"--num_envs_per_worker must be 1, got 16; accepted: 1"):
        build_argv([*batched, "--num_envs_per_worker=16"])
    cfg = parse_cfg(batched)
    cfg.num_envs_per_worker = 2
    with pytest.raises(ValueError, match=r"must be 1, got 2"):
        make_sf_env("recall/DelayedMatch-v0", cfg, {"env_id": 0})


def _sf_train(args, timeout):
    cmd = [sys.executable, "-m", "agents.sf_train", *args]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def test_appo_trains_and_is_evaluated(tmp_path):
    """Real APPO (batched sampling, serial, synchronous) on DelayedMatch delay 1, 2 choices:
    about 60k steps; then agents.sf_enjoy evaluates the checkpoint and records a video."""
    from agents.integrations.sf_enjoy import evaluate

    _sf_train(
        [
            *SHORT,
            "core=gru",
            "core.hidden_size=32",
            "--batched_sampling=True",
            "--num_envs_per_worker=1",
            "--recall_copies=64",
            "--train_for_env_steps=60000",
            "--seed=0",
            "--experiment=dm_gru",
            f"--train_dir={tmp_path}",
        ],
        timeout=240,
    )
    video = str(tmp_path / "eval.mp4")
    result = evaluate(str(tmp_path), "dm_gru", episodes=300, video=video, video_episodes=2)
    assert result["episodes"] == 300
    assert result["success_rate"] >= 0.8, result  # chance is 0.5
    assert os.path.getsize(video) > 0
    # the CLI prints the same summary as JSON
    res = subprocess.run(
        [sys.executable, "-m", "agents.sf_enjoy", "--experiment=dm_gru", f"--train_dir={tmp_path}", "--episodes=50"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["episodes"] == 50 and 0.0 <= summary["success_rate"] <= 1.0


def test_appo_trains_on_a_minigrid_room_by_name(tmp_path):
    """sf_train takes MiniGrid by its config name and room knob (batched for it), and
    sf_enjoy evaluates the checkpoint on the same room."""
    from agents.integrations.sf_enjoy import evaluate

    _sf_train(["env=minigrid_memory", "env.room=S9", "core=gru", "core.hidden_size=32",
               "--recall_copies=16", "--rollout=16", "--train_for_env_steps=2000", "--seed=0",
               "--experiment=mg_gru", f"--train_dir={tmp_path}"], timeout=240)
    cfg = json.loads((tmp_path / "mg_gru" / "config.json").read_text())
    assert cfg["env"] == "MiniGrid-MemoryS9-v0" and cfg["batched_sampling"] is True
    result = evaluate(str(tmp_path), "mg_gru", episodes=4)
    assert result["episodes"] == 4 and 0.0 <= result["success_rate"] <= 1.0


def test_appo_single_env_path_and_resume(tmp_path):
    """The default (non-batched) sampler steps single gymnasium envs, here with the RMC core; a second
    run of the same experiment resumes from its checkpoint through our trusted loader."""
    args = [
        *SHORT,
        "core=rmc",
        "core.head_size=8",
        "--num_envs_per_worker=4",
        "--rollout=8",
        "--experiment=dm_rmc",
        f"--train_dir={tmp_path}",
    ]
    _sf_train([*args, "--train_for_env_steps=256"], timeout=180)
    ckpts = os.listdir(tmp_path / "dm_rmc" / "checkpoint_p0")
    assert any(c.startswith("checkpoint_") for c in ckpts)
    res = _sf_train([*args, "--train_for_env_steps=512"], timeout=180)
    log = res.stdout + res.stderr
    assert "Loading state from checkpoint" in log or "Loaded experiment state" in log, log[-2000:]
