"""The learning-rate schedule of a PPO run, in a form a checkpoint can carry.

Linear decay to 0, as CleanRL anneals: ``lr(u) = start_lr * (end - u) / (end - start)``
for update u. A new run starts at ``(0, learning_rate)``. A resumed run keeps its
plan as long as ``end`` (the number of updates) stays; when ``total_steps``
changes, the rest is re-planned from the rate of the last update done, so the
rate never jumps up (re-planning from the initial rate would undo the annealing).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class LinearDecay:
    start: int  # the update at which the rate is start_lr
    start_lr: float
    end: int  # the update at which the rate reaches 0 (the run's number of updates)
    anneal: bool = True

    def __call__(self, update: int) -> float:
        if not self.anneal:
            return self.start_lr
        if update >= self.end:
            return 0.0
        return self.start_lr * (self.end - update) / (self.end - self.start)

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replan(self, done: int, end: int) -> LinearDecay:
        """The schedule after ``done`` updates when the run now has ``end`` updates in all."""
        if end == self.end or done >= end:
            return self
        if not self.anneal or done == 0:
            return LinearDecay(self.start, self.start_lr, end, self.anneal)
        last = done - 1
        return LinearDecay(last, self(last), end, self.anneal)
