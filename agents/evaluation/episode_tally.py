"""Exactly N evaluation episodes over a batch of envs, tallied on the device.

Copy i contributes its first ``quota[i]`` episodes (N / B each, the remainder to
the first copies), so which episodes count does not depend on which copies
finish first. ``add`` never syncs; ``complete`` does, so call it every few steps.
"""

from __future__ import annotations

import torch


class EpisodeTally:
    def __init__(self, episodes: int, num_envs: int, device: torch.device | str):
        if not isinstance(episodes, int) or episodes < 1:
            raise ValueError(f"episodes must be an int >= 1, got {episodes!r}")
        self.episodes = episodes
        self.quota = torch.full((num_envs,), episodes // num_envs, dtype=torch.int64, device=device)
        self.quota[: episodes % num_envs] += 1
        self.finished = torch.zeros(num_envs, dtype=torch.int64, device=device)
        self.totals = torch.zeros(4, dtype=torch.float64, device=device)  # count, return, length, success

    def add(self, info: dict) -> None:
        """Count the episodes that end in this step's ``info`` (within each copy's quota)."""
        done = info["done"]
        c = (done & (self.finished < self.quota)).double()
        self.totals += torch.stack([
            c.sum(),
            (info["episode_return"].double() * c).sum(),
            (info["episode_length"].double() * c).sum(),
            (info["success"].double() * c).sum(),
        ])
        self.finished += done.long()

    def complete(self) -> bool:
        return bool((self.finished >= self.quota).all())

    def result(self) -> dict[str, float]:
        count, ret, length, success = self.totals.tolist()
        if int(count) != self.episodes:
            raise RuntimeError(f"{int(count)} of {self.episodes} episodes finished")
        return {
            "success_rate": success / count,
            "mean_return": ret / count,
            "mean_length": length / count,
            "episodes": int(count),
        }
