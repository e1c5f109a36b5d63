"""The one interface every memory core implements.

A core is a recurrent function with a state, also when inside it is attention
over a cache::

    state = core.initial_state(batch_size, device)
    y, state = core(x, state, episode_starts)   # x: [T, B, D], starts: [T, B] bool

``episode_starts[t, b]`` wipes env b's memory before step t is read, so no
information crosses an episode boundary, also inside one sequence. The state is
a dict of tensors whose first dimension is the batch and whose size does not
grow with the number of steps, so a rollout can store it, index it by env and
put it back. ``T == 1`` is the acting path; ``T > 1`` is the training path and
must equal T single steps up to float tolerance.
"""

from __future__ import annotations

import torch
from torch import nn

State = dict[str, torch.Tensor]


class MemoryCore(nn.Module):
    """Base class: subclasses set ``input_size``/``output_size`` and implement both methods."""

    input_size: int
    output_size: int

    @property
    def context_length(self) -> float:
        """The agent's context K of Cherepanov et al. (2024): how many of the latest steps
        (the current one included) the output at a step can depend on.

        ``math.inf`` for a recurrent state that carries information without a limit. A
        result on a task with memory horizon xi > K shows long-term memory.
        """
        raise NotImplementedError

    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        raise NotImplementedError

    def forward(
        self, x: torch.Tensor, state: State, episode_starts: torch.Tensor
    ) -> tuple[torch.Tensor, State]:
        raise NotImplementedError

    def check_inputs(self, x: torch.Tensor, episode_starts: torch.Tensor) -> None:
        """Shape checks shared by all cores; cheap, no host sync."""
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(
                f"{type(self).__name__} expects x of shape [T, B, {self.input_size}], "
                f"got {tuple(x.shape)}"
            )
        if episode_starts.shape != x.shape[:2]:
            raise ValueError(
                f"episode_starts must have shape [T, B] = {tuple(x.shape[:2])}, "
                f"got {tuple(episode_starts.shape)}"
            )


def reset_state(state: State, starts: torch.Tensor, initial: State | None = None) -> State:
    """Zero (or set to ``initial``) the state rows of envs whose episode starts now.

    ``starts`` is a [B] bool tensor. Uses ``torch.where`` so it never syncs.
    """
    out = {}
    for key, value in state.items():
        mask = starts.view(-1, *([1] * (value.dim() - 1)))
        fill = torch.zeros_like(value) if initial is None else initial[key]
        out[key] = torch.where(mask, fill, value)
    return out
