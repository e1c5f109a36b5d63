"""The weights of each update between two evaluations, kept to be evaluated later.

An evaluation during training pauses it, so runs evaluate every few seconds, and a
curve of greedy success then has one point per evaluation: "when did the policy
first reach the bar" is known only to within that interval. ``WeightSnapshots``
keeps a copy of the weights after every update (about 0.1 ms for a 200 k-parameter
policy) with the update's env steps and wall-clock time; the next evaluation plays
each of them too, and logs each at its own step and time (TensorBoard's
``walltime``). The curve then has a point per update while training pauses as
often as before (``eval.snapshots`` in the trainer; ``benchmarks/peers.py`` does
the same for sample-factory and Stable-Baselines3).

At most ``limit`` snapshots are kept: past it every other one is dropped and from then
on only every other update is taken, so a long interval keeps an even, coarser grain
instead of growing without bound.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Snapshot:
    steps: int          # env steps when it was taken
    walltime: float     # time.time() then
    weights: dict[str, torch.Tensor]
    update: int = 0     # the trainer's update count then (its evaluation RNG seed)


class WeightSnapshots:
    """Copies of a module's ``state_dict`` after each update, replayed into it later."""

    def __init__(self, limit: int = 256):
        if limit < 2:
            raise ValueError(f"limit={limit} is not accepted; accepted: an int >= 2")
        self.limit = int(limit)
        self.taken: list[Snapshot] = []
        self.updates = 0  # updates offered since the last replay
        self.stride = 1   # one kept in every ``stride`` of them
    def __len__(self) -> int:
        return len(self.taken)

    def take(self, module: nn.Module, steps: int, update: int = 0) -> None:
        self.updates += 1
        if self.updates % self.stride:
            return
        weights = {k: v.detach().clone() for k, v in module.state_dict().items()}
        self.taken.append(Snapshot(int(steps), time.time(), weights, int(update)))
        if len(self.taken) > self.limit:
            self.taken = self.taken[1::2]
            self.stride *= 2

    @contextmanager
    def replay(self, module: nn.Module) -> Iterator[Iterator[Snapshot]]:
        """Yield an iterator over the snapshots, oldest first; each is loaded into ``module``
        while the loop body runs. The module's own weights come back afterwards, and the
        snapshots are dropped."""
        current = {k: v.detach().clone() for k, v in module.state_dict().items()}

        def each() -> Iterator[Snapshot]:
            for snap in self.taken:
                module.load_state_dict(snap.weights)
                yield snap

        try:
            yield each()
        finally:
            module.load_state_dict(current)
            self.taken, self.updates, self.stride = [], 0, 1
