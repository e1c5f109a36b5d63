"""Data-parallel training of one run over several processes (ranks), with torch.distributed.

    torchrun --nproc_per_node=4 -m agents.train device=cuda ...             # one node
    torchrun --nnodes=2 --nproc_per_node=4 --rdzv_backend=c10d \\
        --rdzv_endpoint=<host>:29500 -m agents.train device=cuda ...       # several

torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in each process; a
process group is started from them (``nccl`` on CUDA, ``gloo`` on CPU). Under a
Hydra submitit job with several Slurm tasks (``hydra.launcher.tasks_per_node``)
the same variables are made from Slurm's. Without them (``python -m
agents.train``, or ``WORLD_SIZE=1``) nothing here does anything.

In a run of N ranks, each rank steps its own ``algo.num_envs`` env copies: rank
r plays copies ``r * num_envs ...`` of the run's seed, the shard a single env of
``N * num_envs`` copies would give it, so no two ranks play the same episodes.
PPO's gradients are averaged over ranks by DistributedDataParallel, so every
rank takes the same optimizer step and the weights stay identical. The numbers
logged each update are reduced over ranks in one all-reduce, with the one host
transfer the update already has. Rank 0 alone writes (TensorBoard, checkpoints,
videos, results); a checkpoint holds every rank's env copies, carried state and
RNG, so a run resumes exactly with the same number of ranks. A stop signal at
any rank stops all of them after the same update.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from agents.common.device import check_device
from agents.common.signals import GracefulStop
from envs.rng import SEED_LIMIT

# A duplicate of a stop signal within this many seconds is the same request: under
# torchrun a process gets the scheduler's SIGTERM and then torchrun's forwarded copy.
REPEAT_GRACE_S = 2.0
# Offsets the seeds of ranks > 0 (their action sampling and minibatch order).
_RANK_SEED_STRIDE = 1_000_003
_DDP = nn.parallel.DistributedDataParallel
# The option that stops DDP broadcasting buffers before every forward (renamed in torch 2.13).
_NO_BUFFER_SYNC = ("forward_sync_buffers" if "forward_sync_buffers" in
                   inspect.signature(_DDP.__init__).parameters else "broadcast_buffers")


class NullWriter:
    """SummaryWriter's stand-in on ranks other than 0: every call does nothing."""

    def __getattr__(self, name: str):
        return _nothing


def _nothing(*args, **kwargs) -> None:
    return None


def world_from_env(environ=None) -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's variables; ``(0, 1, 0)`` without."""
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" not in environ:
        return 0, 1, 0
    values = {}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        text = environ.get(key, "0" if key == "LOCAL_RANK" else None)
        try:
            values[key] = int(text)
        except (TypeError, ValueError):
            raise ValueError(f"{key}={text!r} is not an integer (set WORLD_SIZE, RANK and "
                             "LOCAL_RANK together, as torchrun does)") from None
    world = values["WORLD_SIZE"]
    if world < 1:
        raise ValueError(f"WORLD_SIZE={world} is out of range; accepted: an int >= 1")
    if not 0 <= values["RANK"] < world:
        raise ValueError(f"RANK={values['RANK']} is out of range; accepted: 0..{world - 1} "
                         f"(WORLD_SIZE={world})")
    if values["LOCAL_RANK"] < 0:
        raise ValueError(f"LOCAL_RANK={values['LOCAL_RANK']} is out of range; accepted: >= 0")
    return values["RANK"], world, values["LOCAL_RANK"]


def _export_slurm_tasks() -> None:
    """Inside a submitit job of several Slurm tasks, torchrun's variables from Slurm's."""
    if "WORLD_SIZE" in os.environ or os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return
    if int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return
    from submitit.helpers import TorchDistributedEnvironment

    # Each task keeps every GPU of its node in view and takes cuda:<LOCAL_RANK>.
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)


def rank_device(name: str, local_rank: int) -> torch.device:
    """The device of the process with ``local_rank`` on its node in a multi-rank run."""
    if str(name).startswith("cuda:"):
        raise ValueError(f"device={name} in a run of several ranks would put every rank on one "
                         "GPU; give device=cuda: each rank takes cuda:<LOCAL_RANK>")
    device = check_device(name)
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ValueError(f"device={name} in a run of several ranks; accepted: cpu (gloo) or "
                         "cuda (nccl)")
    visible = torch.cuda.device_count()
    if local_rank >= visible:
        raise ValueError(f"LOCAL_RANK={local_rank} but only {visible} GPU(s) visible on this "
                         f"node; accepted: at most {visible} ranks per node "
                         f"(torchrun --nproc_per_node={visible})")
    return torch.device("cuda", local_rank)


def check_launch(argv: list[str]) -> None:
    """A Hydra sweep (``-m``) cannot run under torchrun: each rank would run the whole sweep."""
    _, world, _ = world_from_env()
    if world > 1 and any(a in ("-m", "--multirun") for a in argv):
        raise ValueError(f"-m (a sweep) under torchrun (WORLD_SIZE={world}): launch each run "
                         "with torchrun, or sweep with hydra/launcher=slurm and "
                         "hydra.launcher.tasks_per_node=<ranks>")


def check_world_size(saved: int, world_size: int, run_dir) -> None:
    """Resuming needs the world size the run was trained with (its env shards and RNGs)."""
    if saved != world_size:
        raise ValueError(
            f"resume={run_dir}: the run was trained on {saved} rank(s), this launch has "
            f"{world_size}; accepted: {saved} (" + (
                "python -m agents.train" if saved == 1 else f"torchrun with {saved} processes in all")
            + ")")


class _SequenceEvaluator(nn.Module):
    """The policy's training path as ``forward``: what DistributedDataParallel hooks."""

    def __init__(self, policy: nn.Module):
        super().__init__()
        self.policy = policy

    def forward(self, *args):
        return self.policy.evaluate_sequence(*args)


class Ranks:
    """This process's place in a run: its rank, the world size and its device.

    ``Ranks(device)`` is a single-process run, where every method returns what it was
    given (and writes nothing, syncs nothing).
    """

    def __init__(self, device: torch.device, rank: int = 0, world_size: int = 1,
                 local_rank: int = 0, cpu_group=None):
        self.device = torch.device(device)
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.cpu_group = cpu_group  # gloo: object collectives and the stop flag off the GPU

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world_size > 1

    def seed(self, seed: int) -> int:
        """Rank r's seed for its own random draws; rank 0 keeps the run's seed."""
        return (seed + _RANK_SEED_STRIDE * self.rank) % SEED_LIMIT

    def first_copy(self, num_envs: int) -> int:
        return self.rank * num_envs

    def wrap(self, ppo) -> None:
        """Average ``ppo``'s gradients over ranks (DDP around the policy's training path)."""
        if not self.parallel:
            return
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        # No buffer to broadcast: the others are constant tables (embedding offsets, positions),
        # and RunningNorm (policy.symbols=onehot) all-reduces its own statistics as it updates.
        ppo.evaluate = _DDP(_SequenceEvaluator(ppo.policy), device_ids=device_ids,
                            **{_NO_BUFFER_SYNC: False})
        ppo.mean_over_ranks = self.mean

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        if not self.parallel:
            return value
        value = value.clone()
        dist.all_reduce(value)
        return value / self.world_size

    def reduce_log(self, values: torch.Tensor, sums: int) -> torch.Tensor:
        """One update's logged numbers: the first ``sums`` summed over ranks, the rest averaged."""
        if not self.parallel:
            return values
        dist.all_reduce(values)
        values[sums:] /= self.world_size
        return values

    def stop_requested(self, stop: GracefulStop) -> bool:
        """Whether any rank was asked to stop; every rank gets the same answer."""
        if not self.parallel:
            return stop.requested
        flag = torch.tensor([stop.signum or 0], dtype=torch.int64)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.cpu_group)
        signum = int(flag.item())
        if signum:
            stop.adopt(signum)
        return bool(signum)

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.parallel:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.cpu_group)
        return box[0]

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` (tensors moved to the CPU), in rank order, on rank 0; None elsewhere."""
        if not self.parallel:
            return [obj]
        obj = _to_cpu(obj)
        out = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0, group=self.cpu_group)
        return out

    def barrier(self) -> None:
        if self.parallel:
            dist.barrier(group=self.cpu_group)

    def launch(self) -> str:
        """How to start this run again (the resume hint): with as many ranks as now."""
        if not self.parallel:
            return "python -m agents.train"
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", self.world_size))
        nodes = f"--nnodes={self.world_size // per_node} " if per_node < self.world_size else ""
        return f"torchrun {nodes}--nproc_per_node={per_node} -m agents.train"


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


@contextmanager
def process_group(device_name: str) -> Iterator[Ranks]:
    """``with process_group(cfg.device) as ranks:`` this process's :class:`Ranks`.

    Starts the process group from torchrun's (or Slurm's) variables and ends it after;
    joins one a caller started already; a single process gets ``Ranks(device)``.
    """
    if dist.is_available() and dist.is_initialized():
        yield _joined(device_name)
        return
    _export_slurm_tasks()
    rank, world, local_rank = world_from_env()
    if world == 1:
        yield Ranks(torch.device(str(device_name)))
        return
    device = rank_device(device_name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank,
                            world_size=world)
    try:
        yield Ranks(device, rank, world, local_rank, _cpu_group(device))
    finally:
        dist.destroy_process_group()


def _joined(device_name: str) -> Ranks:
    world, rank = dist.get_world_size(), dist.get_rank()
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    device = rank_device(device_name, local_rank) if world > 1 else torch.device(device_name)
    return Ranks(device, rank, world, local_rank, _cpu_group(device) if world > 1 else None)


def _cpu_group(device: torch.device):
    # gloo's default group already works on the CPU; nccl's needs a gloo twin for objects.
    return dist.new_group(backend="gloo") if device.type == "cuda" else None
