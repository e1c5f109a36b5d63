"""No memory: a feed-forward core, the control every memory result is compared with."""

from __future__ import annotations

import torch
from torch import nn

from memory_modules.base import MemoryCore, State


class MLPCore(MemoryCore):
    def __init__(self, input_size: int, hidden_size: int = 128, num_layers: int = 1):
        super().__init__()
        self.input_size = input_size
        self.output_size = hidden_size
        layers: list[nn.Module] = []
        width = input_size
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden_size), nn.Tanh()]
            width = hidden_size
        self.net = nn.Sequential(*layers)

    @property
    def context_length(self) -> float:
        return 1

    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        # An empty state still carries the batch dimension, so rollouts can index it.
        return {"empty": torch.zeros(batch_size, 0, device=device)}

    def forward(self, x, state, episode_starts, reuse_state=False, need_state=True):
        self.check_inputs(x, episode_starts)
        return self.net(x), state
