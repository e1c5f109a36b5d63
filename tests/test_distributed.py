"""Data-parallel training (agents/ppo/distributed.py): two ranks on the CPU with gloo.

The ranks are started by a fork server (one interpreter start for the whole file,
not one per rank) with torchrun's variables set, so they run the same code path as
under torchrun; one test launches the real CLI through torchrun. A fork server, not
a fork of the test process: a child of the test process would inherit whatever
threads and locks earlier tests left there (a rank of this file hung in a CI run).
Training is tiny (DelayedMatch delay 2, 8 envs x 8 steps per rank, GRU 16).
"""

from __future__ import annotations

import copy
import faulthandler
import json
import multiprocessing
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from agents.common.checkpoint import load_checkpoint
from agents.common.config import compose, make_env, make_policy, policy_spec, ppo_config
from agents.common.signals import GracefulStop
from agents.common.tree import tree_map
from agents.evaluation.evaluate import evaluate_checkpoint
from agents.ppo import distributed
from agents.ppo import trainer as train_mod
from agents.ppo.distributed import Ranks, check_world_size, process_group, world_from_env
from agents.ppo.learner import PPO
from agents.ppo.rollout import Rollout

ROOT = Path(__file__).resolve().parent.parent
SPU = 64  # steps per update and rank: 8 envs x 8 steps
TINY = [
    "curriculum=null", "env.delay=2", "algo.num_envs=8", "algo.num_steps=8", "algo.seq_len=8",
    "algo.num_minibatches=2", "algo.update_epochs=2", "core.hidden_size=16",
    "policy.hidden_size=16", "policy.head_hidden=16", "progress=false", "threads=1",
    "checkpoint_every=0", "eval.episodes=0", "eval.video_episodes=0",
]
UPDATES = 6


# --------------------------------------------------------------------------- helpers
def _free_ports(n: int) -> list[int]:
    """``n`` distinct ports free now (all held open until all are picked)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _rank_main(payload: bytes, rank: int, world: int, port: int, out: Path,
               stack_after: float) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    # A rank still running near the deadline writes every thread's stack: where it hangs.
    stacks = open(out / f"rank{rank}.stack", "w")  # noqa: SIM115 (open until os._exit)
    faulthandler.dump_traceback_later(stack_after, file=stacks)
    try:
        target, args = pickle.loads(payload)
        result = {"value": target(rank, *args)}
    except BaseException:
        result = {"error": traceback.format_exc()}
    faulthandler.cancel_dump_traceback_later()
    torch.save(result, out / f"rank{rank}.pt")
    os._exit(0)  # not the fork server's exit handlers


def _context():
    ctx = multiprocessing.get_context("forkserver")
    # Imported once in the server, so each rank starts with them loaded (and the server
    # is given the test process's sys.path, where this module is found).
    ctx.set_forkserver_preload(["torch", "agents.train"])
    return ctx


def _no_result(out: Path, rank: int, proc) -> dict:
    status = "hung (killed at the deadline)" if proc.exitcode == -signal.SIGKILL else (
        f"exit code {proc.exitcode}")
    stack = out / f"rank{rank}.stack"
    text = stack.read_text() if stack.exists() else ""
    return {"error": f"no result: {status}" + (f"; its threads then:\n{text}" if text else "")}


def _ranks(target, *args, world: int = 2, timeout: float = 240) -> list:
    """``target(rank, *args)`` in ``world`` processes forming one process group (as
    torchrun's variables make it); each rank's return value, in rank order."""
    ctx = _context()
    (port,) = _free_ports(1)
    # Plain pickle bytes: multiprocessing's own pickler would put tensors in shared memory,
    # where every rank would update the same weights.
    payload = pickle.dumps((target, args))
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        procs = [ctx.Process(target=_rank_main,
                             args=(payload, r, world, port, out, max(1.0, timeout - 10)))
                 for r in range(world)]
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        results = [torch.load(out / f"rank{r}.pt", weights_only=False)
                   if (out / f"rank{r}.pt").exists() else _no_result(out, r, p)
                   for r, p in enumerate(procs)]
    for r, res in enumerate(results):
        assert "error" not in res, f"rank {r}:\n{res['error']}"
    return [res["value"] for res in results]


def _train(rank: int, overrides: list[str], cwd: Path, signal_at: tuple[int, int] | None = None):
    """One rank of a run: its summary, final weights, first observations, and each update's
    logged numbers before and after their reduction over ranks."""
    os.chdir(cwd / f"rank{rank}")
    seen: dict = {"local": [], "logged": []}
    Trainer = train_mod.Trainer
    real_train, real_fresh, real_log = Trainer.train, Trainer._fresh_episodes, Trainer._log
    real_reduce = Ranks.reduce_log

    def train(self):
        seen["trainer"] = self
        return real_train(self)

    def fresh(self):
        carry = real_fresh(self)
        seen.setdefault("first_obs", carry["obs"].clone())
        return carry

    def reduce_log(self, values, sums):
        seen["local"].append(values.clone())
        out = real_reduce(self, values, sums)
        seen["logged"].append(out.clone())
        return out

    def log(self, *args):
        real_log(self, *args)
        if signal_at == (rank, self.update):
            os.kill(os.getpid(), signal.SIGTERM)

    # a rank's own process: patching its classes leaves the test process's as they are
    Trainer.train, Trainer._fresh_episodes, Trainer._log = train, fresh, log
    Ranks.reduce_log = reduce_log
    summary = train_mod.run(compose(overrides), overrides)
    t = seen.pop("trainer")
    return {**seen, "summary": summary, "weights": t.policy.state_dict(),
            "optimizer": t.ppo.optimizer.state_dict()}


def _run_two_ranks(tmp: Path, *extra: str, signal_at=None) -> list[dict]:
    for r in range(2):
        (tmp / f"rank{r}").mkdir(parents=True, exist_ok=True)
    return _ranks(_train, [*TINY, *extra], tmp, signal_at)


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _same_optimizer(a: dict, b: dict) -> bool:
    return all(torch.equal(sa[k], sb[k]) for sa, sb in zip(a["state"].values(),
                                                           b["state"].values(), strict=True)
               for k in sa)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """A 2-rank run of UPDATES updates; runs_root is relative, each rank in its own folder."""
    tmp = tmp_path_factory.mktemp("straight")
    ranks = _run_two_ranks(tmp, "runs_root=runs", f"total_steps={UPDATES * 2 * SPU}",
                           "eval.episodes=16", "eval.num_envs=16")
    (run_dir,) = (tmp / "rank0" / "runs" / "run").iterdir()
    return tmp, run_dir, ranks


# ------------------------------------------------------------------------ one run, two ranks
def test_both_ranks_end_with_identical_weights(straight):
    _, _, (r0, r1) = straight
    assert _same_weights(r0["weights"], r1["weights"])
    assert _same_optimizer(r0["optimizer"], r1["optimizer"])
    assert r0["summary"]["global_step"] == r1["summary"]["global_step"] == UPDATES * 2 * SPU


def test_the_ranks_play_their_own_shards_of_the_episodes(straight):
    _, _, (r0, r1) = straight
    assert not torch.equal(r0["first_obs"], r1["first_obs"])
    # rank r plays copies r * 8 ... of the run's seed: a batch of 16 copies, cut in two
    cfg = compose(TINY)
    whole, _ = make_env(cfg.env, 16, "cpu", int(cfg.seed)).reset()
    assert torch.equal(r0["first_obs"], whole[:8]) and torch.equal(r1["first_obs"], whole[8:])


def test_logged_numbers_are_reduced_over_ranks(straight):
    """Episode count, return, length and success summed; losses and the rest averaged."""
    _, _, (r0, r1) = straight
    logged = torch.stack(r0["logged"])
    local0, local1 = torch.stack(r0["local"]), torch.stack(r1["local"])
    assert len(logged) == UPDATES and torch.equal(logged, torch.stack(r1["logged"]))
    assert not torch.equal(local0, local1)
    torch.testing.assert_close(logged[:, :4], local0[:, :4] + local1[:, :4])
    torch.testing.assert_close(logged[:, 4:], (local0[:, 4:] + local1[:, 4:]) / 2)


def test_only_rank_0_writes_files(straight):
    tmp, run_dir, _ = straight
    assert not list((tmp / "rank1").rglob("*")), "rank 1 wrote files"
    assert {p.name for p in run_dir.iterdir()} == {"config.yaml", "tb", "checkpoints",
                                                   "results.json"}
    assert len(list((run_dir / "tb").iterdir())) == 1
    ckpt = load_checkpoint(run_dir)
    assert ckpt["world_size"] == 2 and len(ckpt["other_ranks"]) == 1
    assert (ckpt["update"], ckpt["global_step"]) == (UPDATES, UPDATES * 2 * SPU)
    row = json.loads((run_dir / "results.json").read_text())
    assert row["env_steps"] == UPDATES * 2 * SPU and row["world_size"] == 2
    assert row["eval"]["greedy"]["episodes"] == 16
    # the checkpoint is an ordinary one for the tools that read a policy from it
    assert evaluate_checkpoint(run_dir, episodes=8, num_envs=8)["episodes"] == 8


def test_resume_with_another_world_size_is_one_error_naming_both(straight):
    _, run_dir, _ = straight
    overrides = [f"resume={run_dir}"]
    with pytest.raises(ValueError, match=r"trained on 2 rank\(s\), this launch has 1; "
                                         r"accepted: 2 \(torchrun"):
        train_mod.run(compose(overrides), overrides)
    with pytest.raises(ValueError, match=r"trained on 1 rank\(s\), this launch has 4; "
                                         r"accepted: 1 \(python -m agents.train\)"):
        check_world_size(1, 4, run_dir)


def test_a_signal_at_one_rank_stops_both_after_the_same_update_and_resume_is_exact(
        tmp_path, straight):
    _, _, (ref, _) = straight
    root = tmp_path / "runs"
    first = _run_two_ranks(tmp_path, f"runs_root={root}", f"total_steps={UPDATES * 2 * SPU}",
                           signal_at=(1, 2))  # SIGTERM at rank 1 alone, inside update 2
    for rank in first:
        assert rank["summary"]["interrupted"]
        assert rank["summary"]["exit_status"] == 128 + signal.SIGTERM
    assert len(first[0]["logged"]) == len(first[1]["logged"]) == 2
    (run_dir,) = (root / "run").iterdir()
    assert load_checkpoint(run_dir)["update"] == 2
    second = _run_two_ranks(tmp_path, f"resume={run_dir}")
    assert second[0]["summary"]["global_step"] == UPDATES * 2 * SPU
    for rank in second:  # as if never stopped
        assert _same_weights(rank["weights"], ref["weights"])
        assert _same_optimizer(rank["optimizer"], ref["optimizer"])


def test_a_signal_in_the_last_update_stops_every_rank(tmp_path):
    ranks = _run_two_ranks(tmp_path, f"runs_root={tmp_path / 'runs'}",
                           f"total_steps={2 * 2 * SPU}", signal_at=(1, 2))
    assert [r["summary"].get("exit_status") for r in ranks] == [128 + signal.SIGTERM] * 2
    (run_dir,) = (tmp_path / "runs" / "run").iterdir()
    ckpt = load_checkpoint(run_dir)
    assert ckpt["update"] == 2 and not ckpt["finished"]  # resuming it evaluates it


# ------------------------------------------------------------------- the same learning
def _rollout(num_envs: int) -> tuple[PPO, Rollout, PPO]:
    """A policy's PPO and a GAE'd rollout of ``num_envs`` envs it played (and a copy of the PPO)."""
    torch.manual_seed(0)
    cfg = compose([*TINY, "algo.num_minibatches=1", "algo.update_epochs=2",
                   "algo.norm_adv=false", f"algo.num_envs={num_envs}"])
    algo = ppo_config(cfg.algo)
    env = make_env(cfg.env, num_envs, "cpu", 0, check_actions=False)
    policy = make_policy(policy_spec(cfg, env))
    obs, _ = env.reset()
    state = policy.initial_state(num_envs, "cpu")
    starts = torch.ones(num_envs, dtype=torch.bool)
    prev = torch.zeros(num_envs, dtype=torch.int64), torch.zeros(num_envs)
    rollout = Rollout(algo.num_steps, num_envs, algo.seq_len, obs, state, "cpu")
    with torch.no_grad():
        for t in range(algo.num_steps):
            rollout.store_state(t, state)
            action, logp, value, state = policy.act(obs, state, starts, *prev)
            rollout.store_step(t, obs, starts, *prev, action, logp, value)
            obs, reward, _, _, info = env.step(action)
            rollout.store_outcome(t, reward, info["done"])
            starts, prev = info["done"], (action, reward)
        rollout.compute_gae(policy.value(obs, state, starts, *prev), algo.gamma, algo.gae_lambda)
    return PPO(policy, algo), rollout, PPO(copy.deepcopy(policy), algo)


def _shard(rollout: Rollout, lo: int, hi: int) -> Rollout:
    part = copy.copy(rollout)
    part.num_envs = hi - lo
    for name, value in vars(rollout).items():
        if name == "states":
            part.states = {k: v[:, lo:hi].clone() for k, v in value.items()}
        elif isinstance(value, (torch.Tensor, dict)):
            setattr(part, name, tree_map(lambda x: x[:, lo:hi].clone(), value))
    return part


def _update_shard(rank: int, ppo: PPO, rollout: Rollout) -> dict:
    dist.init_process_group("gloo")  # a caller's own group: process_group joins it
    with process_group("cpu") as ranks:
        assert (ranks.rank, ranks.world_size) == (rank, 2)
        ranks.wrap(ppo)
        ppo.update(_shard(rollout, 8 * rank, 8 * rank + 8))
    assert dist.is_initialized(), "a group process_group did not start stays"
    dist.destroy_process_group()
    return ppo.policy.state_dict()


def test_two_ranks_take_the_step_one_rank_takes_on_both_batches():
    """Same data, same start: 2 ranks x 8 envs step as 1 rank x 16 (2 epochs, one
    minibatch each; advantages not normalised, which each rank would do on its own)."""
    ppo, rollout, reference = _rollout(16)
    reference.update(rollout)
    w0, w1 = _ranks(_update_shard, ppo, rollout)
    assert _same_weights(w0, w1)
    for name, value in reference.policy.state_dict().items():
        torch.testing.assert_close(w0[name], value, rtol=1e-5, atol=1e-6, msg=name)
    assert not _same_weights(w0, ppo.policy.state_dict()), "the update moved the weights"


LEARN = ["curriculum=null", "env.delay=2", "env.num_symbols=4", "env.num_choices=2",
         "algo=ppo_one_epoch", "algo.num_steps=16", "algo.seq_len=16", "algo.learning_rate=5e-3",
         "core.hidden_size=32", "policy.hidden_size=32", "policy.head_hidden=32",
         "total_steps=65_536", "progress=false", "threads=1", "checkpoint_every=0",
         "eval.episodes=1024", "eval.num_envs=512", "eval.video_episodes=0",
         "eval.deterministic=true"]
SEEDS = (0, 1, 2)


def _learn(rank: int, root: Path, num_envs: int, ports: list[int] | None = None) -> list[float]:
    """Greedy success after the budget, one run per seed (rank 0's evaluation).

    Each run of several ranks gets its own port: a rank that ends a run first must not
    meet its peer's previous process group (rank 0 evaluates before it ends its own)."""
    out = []
    for i, seed in enumerate(SEEDS):
        if ports:
            os.environ["MASTER_PORT"] = str(ports[i])
        summary = train_mod.run(compose([*LEARN, f"runs_root={root}", f"seed={seed}",
                                         f"algo.num_envs={num_envs}"]))
        out.append(summary["eval"]["success_rate"] if "eval" in summary else None)
    return out


def test_two_ranks_of_b_envs_learn_as_one_rank_of_2b(tmp_path):
    """DelayedMatch (2 choices: chance 0.5) on the same budget, 3 seeds each: 1 rank x 128
    envs and 2 ranks x 64. Their mean greedy success differs by less than a Welch t bound
    (t = 4.6: two-sided p of about 0.01 at 4 degrees of freedom) over the seeds' spread
    (floored at a run's evaluation noise), and both learned. The runs of the two set-ups
    share seeds, env episodes and initial weights, not their action samples."""
    one = torch.tensor(_learn(0, tmp_path / "one", 128), dtype=torch.float64)
    # 6 training runs and their evaluations: minutes on a loaded 2-core machine
    two = torch.tensor(_ranks(_learn, tmp_path / "two", 64, _free_ports(len(SEEDS)),
                               timeout=900)[0], dtype=torch.float64)
    episodes = int(compose(LEARN).eval.episodes)
    floor = 0.25 / episodes  # the largest variance of one run's success estimate
    spread = (one.var().clamp(min=floor) + two.var().clamp(min=floor)) / len(SEEDS)
    assert abs(one.mean() - two.mean()) < 4.6 * spread.sqrt(), (one, two)
    assert min(one.mean(), two.mean()) >= 0.8, (one, two)


# --------------------------------------------------------------------------- the CLI
def test_torchrun_trains_one_run_with_two_processes(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "agents.train", f"runs_root={tmp_path}", *TINY, "total_steps=256",
           "eval.episodes=16", "eval.num_envs=16"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "run").iterdir()
    evals = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(evals) == 1 and evals[0]["global_step"] == 256  # printed by rank 0 alone
    assert load_checkpoint(run_dir)["world_size"] == 2


# ------------------------------------------------------------------------ launch checks
def test_world_from_env_reads_torchrun_and_names_bad_values():
    assert world_from_env({}) == (0, 1, 0)
    assert world_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == (3, 4, 1)
    with pytest.raises(ValueError, match=r"RANK=4 is out of range; accepted: 0\.\.3"):
        world_from_env({"RANK": "4", "WORLD_SIZE": "4", "LOCAL_RANK": "0"})
    with pytest.raises(ValueError, match="RANK=None is not an integer"):
        world_from_env({"WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match=r"WORLD_SIZE=0 is out of range"):
        world_from_env({"RANK": "0", "WORLD_SIZE": "0"})


def test_rank_devices_and_their_errors():
    assert distributed.rank_device("cpu", 3) == torch.device("cpu")
    with pytest.raises(ValueError, match="device=cuda:1 .* every rank on one GPU; give device=cuda"):
        distributed.rank_device("cuda:1", 0)
    if not torch.cuda.is_available():  # the CUDA checks of a single process come first
        with pytest.raises(ValueError, match="device=cuda: "):
            distributed.rank_device("cuda", 0)
        return
    visible = torch.cuda.device_count()
    with pytest.raises(ValueError, match=f"LOCAL_RANK={visible} but only {visible} GPU"):
        distributed.rank_device("cuda", visible)


def test_a_sweep_under_torchrun_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match=r"-m \(a sweep\) under torchrun \(WORLD_SIZE=2\)"):
        distributed.check_launch(["-m", "core=gru,mlp"])
    distributed.check_launch(["core=gru"])


def test_slurm_tasks_of_a_submitit_job_become_ranks(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                "MASTER_PORT"):
        monkeypatch.setenv(key, "")  # recorded, so the exported values are removed after
        monkeypatch.delenv(key)
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    for key, value in {"SLURM_JOB_ID": "42", "SLURM_NTASKS": "8", "SLURM_JOB_NUM_NODES": "2",
                       "SLURM_NODEID": "1", "SLURM_JOB_NODELIST": "gpu[07-08]",
                       "SLURM_PROCID": "5", "SLURM_LOCALID": "1"}.items():
        monkeypatch.setenv(key, value)
    distributed._export_slurm_tasks()
    assert world_from_env() == (5, 8, 1)
    assert os.environ["MASTER_ADDR"] == "gpu07"


def test_a_repeat_of_the_first_signal_within_the_grace_is_the_same_request():
    with GracefulStop(repeat_grace=60.0) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # torchrun's forwarded copy: not a second one
        assert stop.signum == signal.SIGTERM
    other = GracefulStop()
    other.adopt(signal.SIGUSR1)
    assert other.requested and other.exit_status == 128 + signal.SIGUSR1


def test_one_process_is_one_rank_that_changes_nothing():
    ranks = Ranks(torch.device("cpu"))
    values = torch.tensor([3.0, 1.0])
    assert ranks.reduce_log(values, sums=1) is values and ranks.gather(7) == [7]
    assert ranks.broadcast("x") == "x" and ranks.seed(5) == 5 and ranks.first_copy(8) == 0


def _running_norm_update(rank: int):
    from agents.common.encoders import RunningNorm

    dist.init_process_group("gloo")
    norm = RunningNorm(2).train()
    data = torch.tensor([[0.0, 1.0], [2.0, 5.0]]) if rank == 0 else torch.tensor([[4.0, -3.0]])
    norm(data)
    dist.destroy_process_group()
    return {k: v.clone() for k, v in norm.state_dict().items()}


def test_running_norm_on_every_rank_holds_the_statistics_of_all_ranks_batches():
    # policy.symbols=onehot's input statistics (tests/test_running_norm.py): the same on
    # both ranks, from both ranks' batches, so the ranks act alike (DDP broadcasts no buffers)
    r0, r1 = _ranks(_running_norm_update, timeout=120)
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    pooled = torch.tensor([[0.0, 1.0], [2.0, 5.0], [4.0, -3.0]])
    torch.testing.assert_close(r0["mean"], pooled.mean(0))
    torch.testing.assert_close(r0["var"], pooled.var(0, unbiased=False))
    assert r0["count"].item() == 3
