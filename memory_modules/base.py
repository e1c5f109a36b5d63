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

A core never changes the tensors of the ``state`` it is given, since a rollout
or an evaluation may hold on to them, unless the caller hands them over:
``core(x, state, starts, reuse_state=True)`` lets the core write the new state
into the given tensors and return them (it need not; HCAM writes its new chunk
into its ring buffer instead of copying the buffer). Only the acting loop, which
keeps its own copies of the states it trains from, hands its state over. A caller
that will not read the returned state (a value estimate, a training pass) says
``need_state=False``; the core may then skip building it and return any state.

Off the interface, for videos only: ``core.record_reads(True)`` makes a core keep
where it read at the last step of each call, returned by ``core.last_read()`` as a
:class:`Read`. Off (the default) a core keeps nothing and computes nothing extra:
one Python ``if`` per call, no tensor work, no host sync, so training is unchanged.
Recording never changes a core's outputs or state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

State = dict[str, torch.Tensor]

#: What the columns of a :class:`Read` index.
READ_KINDS = ("steps", "slots", "change")


@dataclass
class Read:
    """Where a core read at the last step of its latest call (for videos, see the module doc).

    ``weights`` [B, rows, N], detached, on the core's device. By ``kind``:

    * ``"steps"``: column a is the step a steps back (0 = the current step); a row's
      weights are how much of the read came from each past step (attention cores).
      ``stored`` [B, N] marks the steps the memory holds at this step.
    * ``"slots"``: column n is memory slot n (``columns`` names them); rows are
      attention over the slots and, where given, how much each slot was rewritten.
    * ``"change"``: N = 1, how much the recurrent state moved at this step (RMS of
      the change), per layer (RNNs).
    """

    kind: str
    weights: torch.Tensor
    rows: tuple[str, ...]
    stored: torch.Tensor | None = None
    columns: tuple[str, ...] | None = None


class MemoryCore(nn.Module):
    """Base class: subclasses set ``input_size``/``output_size`` and implement both methods."""

    input_size: int
    output_size: int
    #: Set by :meth:`record_reads` on the core and all its submodules; off by default.
    read_recording: bool = False
    _last_read: Read | None = None

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

    def derived_state_keys(self) -> tuple[str, ...]:
        """State entries the core can rebuild from the others (caches of the weights' work).
        A caller that stores states compactly may drop them; ``forward`` then rebuilds
        them (and returns them in the new state). None by default."""
        return ()

    def forward(
        self,
        x: torch.Tensor,
        state: State,
        episode_starts: torch.Tensor,
        reuse_state: bool = False,
        need_state: bool = True,
    ) -> tuple[torch.Tensor, State]:
        raise NotImplementedError

    def record_reads(self, on: bool = True) -> MemoryCore:
        """Keep (``on``) or stop keeping where the core reads; see :meth:`last_read`."""
        for module in self.modules():
            module.read_recording = bool(on)
        self._last_read = None
        return self

    def last_read(self) -> Read | None:
        """Where the core read at the last step of its latest call while recording; ``None``
        when not recording, before the first call, or for a core without memory (MLP)."""
        return self._last_read

    def keep_read(self, kind: str, weights: torch.Tensor, rows, stored=None, columns=None) -> None:
        """Called by a core's forward only when ``read_recording`` is on."""
        if kind not in READ_KINDS:
            raise ValueError(f"read kind {kind!r}; accepted: {', '.join(READ_KINDS)}")
        self._last_read = Read(kind, weights.detach(), tuple(rows),
                               None if stored is None else stored.detach(),
                               None if columns is None else tuple(columns))

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
