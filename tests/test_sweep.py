"""Multiruns: each job's run folder is named by what varies across the sweep."""

from __future__ import annotations

import json

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from agents.common.config import CONFIG_DIR
from agents.common.results import read_results
from agents.common.sweep import job_name, planned_jobs, swept_keys


def test_multirun_writes_one_named_run_folder_per_job_under_runs(tiny_sweep):
    cwd, sweep, proc = tiny_sweep
    assert [p.name for p in cwd.iterdir()] == ["runs"], "a multirun writes nothing outside runs/"
    runs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    # env=delayed_match and seed=0 are the same in every job, so they stay out of the names
    assert runs == ["core=gru,env.delay=2", "core=gru,env.delay=4",
                    "core=mlp,env.delay=2", "core=mlp,env.delay=4"]
    assert (sweep / "multirun.yaml").is_file()
    # Hydra's job name is the command's, though its code lives in agents/ppo/trainer.py
    assert OmegaConf.load(sweep / "multirun.yaml").hydra.job.name == "train"
    pids: set[int] = set()
    for name in runs:
        run = sweep / name
        assert (run / "config.yaml").is_file() and any((run / "tb").iterdir())
        row = read_results(run / "results.json")
        core, delay = name.split(",")
        assert row["core"] == core.split("=")[1]
        assert row["env_knobs"]["delay"] == int(delay.split("=")[1])
        assert row["env"] == "recall/DelayedMatch-v0" and row["seed"] == 0
        assert row["env_steps"] == 128 and row["run_dir"] == str(run.relative_to(cwd))
        assert row["eval"]["greedy"]["episodes"] == 8
        assert row["memory_horizon"] == row["env_knobs"]["delay"] + 2
        assert row["memory"] == ("long-term" if row["core"] == "mlp" else "short-term")
        (events,) = (run / "tb").iterdir()  # events.out.tfevents.<time>.<host>.<pid>.0
        pids.add(int(events.name.split(".")[-2]))
    assert proc.pid not in pids, "the jobs ran in the launcher's worker processes"
    lines = [json.loads(x) for x in proc.stdout_text.splitlines() if x.startswith("{")]
    assert len(lines) == 4


def test_swept_keys_and_job_names():
    cfg = compose_hydra(["+x=1"])
    cfg.hydra.overrides.task = ["core=mlp,gru", "env=delayed_match", "env.delay=4,16", "seed=0"]
    assert swept_keys(cfg) == {"core", "env.delay"}
    cfg.hydra.overrides.task = ["core=mlp,gru", "env=delayed_match", "env.delay=4,16"]
    cfg.hydra.sweeper.params = {"seed": "0,1", "name": "horizon"}
    swept = swept_keys(cfg)
    assert swept == {"core", "env.delay", "seed"}
    job = ["core=hcam", "env=delayed_match", "env.delay=64", "seed=1", "+sweep=horizon"]
    assert job_name(job, swept) == "core=hcam,env.delay=64,seed=1"
    assert planned_jobs(cfg) == 2 * 2 * 2
    # a single value on the command line narrows a swept param of the config
    cfg.hydra.overrides.task = ["core=mlp,gru", "seed=3"]
    assert swept_keys(cfg) == {"core"}
    assert job_name(["hydra.launcher.n_jobs=2", "algo=a/b"], None) == "algo=a-b"
    assert job_name(["memory=False", "env.distractors=true"], None) == (
        "env.distractors=true,memory=false")


def compose_hydra(overrides):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def test_launcher_configs():
    local = compose_hydra([]).hydra.launcher
    assert local._target_.endswith("JoblibLauncher") and local.n_jobs == 2
    slurm = compose_hydra(["hydra/launcher=slurm", "sweep=horizon"]).hydra
    assert slurm.launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    # submitit's own files go under the sweep folder, which is under runs_root
    assert slurm.launcher.submitit_folder.startswith(slurm.sweep.dir)
    assert slurm.sweep.dir.startswith("runs/horizon/")


def test_horizon_sweep_config_derives_each_run_from_its_delay():
    from omegaconf import OmegaConf

    from agents.common.sweep import doubling

    assert list(doubling(4, 4)) == [4] and list(doubling(4, 100)) == [4, 8, 16, 32, 64, 100]
    hydra_cfg = compose_hydra(["sweep=horizon"]).hydra
    params = {k: str(v).split(",") for k, v in hydra_cfg.sweeper.params.items()}
    assert params == {"core": ["mlp", "gru", "lstm", "gtrxl", "hcam", "rmc"],
                      "env.delay": ["4", "16", "64", "256"], "seed": ["0", "1"]}
    expect = {4: (256, 12, [4]), 16: (256, 36, [4, 8, 16]), 64: (248, 132, [4, 8, 16, 32, 64]),
              256: (56, 516, [4, 8, 16, 32, 64, 128, 256])}
    for delay, (num_envs, num_steps, values) in expect.items():
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
            cfg = compose(config_name="config",
                          overrides=["sweep=horizon", f"env.delay={delay}", "core=hcam"])
        cfg = OmegaConf.to_container(cfg, resolve=True)
        algo = cfg["algo"]
        assert (algo["num_envs"], algo["num_steps"], algo["seq_len"]) == (num_envs, num_steps, num_steps)
        assert num_envs % algo["num_minibatches"] == 0 and num_steps == 2 * (delay + 2)
        assert cfg["curriculum"]["values"] == values
        assert cfg["total_steps"] == cfg["horizon_budget"]["hcam"] and cfg["name"] == "horizon"


def test_a_failed_job_does_not_end_the_sweep(tmp_path, monkeypatch):
    """A NaN loss fails its job; the other jobs of the sweep still run, and the sweep
    exits non-zero at the end (joblib with one job runs in this process, so the
    poisoned loss reaches it)."""
    import sys

    import pytest
    import torch

    from agents.ppo import trainer as train_mod
    from agents.ppo.learner import PPO

    real_loss = PPO.loss

    def poisoned(self, mb):
        loss, stats = real_loss(self, mb)
        if torch.initial_seed() == 1:  # only the seed=1 job (the trainer seeds torch)
            loss = loss * float("nan")
            stats["loss"] = loss.detach()
        return loss, stats

    monkeypatch.setattr(PPO, "loss", poisoned)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [
        "agents.train", "--config-path", str(CONFIG_DIR), "-m", "seed=1,2", "name=nan", "hydra.launcher.n_jobs=1", "curriculum=null",
        "total_steps=64", "algo.num_envs=8", "algo.num_steps=8", "algo.seq_len=8",
        "eval.episodes=8", "eval.num_envs=8", "eval.video_episodes=0", "progress=false"])
    # the in-process jobs leave their multirun HydraConfig behind (Hydra's singletons): put
    # the old ones back, or later runs in this process would take themselves for sweep jobs
    from hydra.core.singleton import Singleton

    singletons = Singleton.get_state()
    try:
        with pytest.raises(SystemExit) as exit_:
            train_mod.main()
    finally:
        Singleton.set_state(singletons)
    assert exit_.value.code == 1
    (sweep,) = (tmp_path / "runs" / "nan").iterdir()
    assert not (sweep / "seed=1" / "results.json").exists()
    assert (sweep / "seed=2" / "results.json").is_file(), "the job after the failed one ran"
