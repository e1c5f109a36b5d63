"""One copy of a batched task as a standard ``gymnasium.Env`` (numpy in and out).

It steps a batch of one on the CPU, so a single env seeded ``s`` plays exactly
the episodes of copy 0 of a batch seeded ``s``. The batch resets itself when an
episode ends; this wrapper hands out the final observation then and keeps the
first observation of the next episode for the following ``reset()``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from envs.registration import task_class


class RecallEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(
        self,
        env_id: str,
        render_mode: str | None = "rgb_array",
        copy_index: int = 0,
        **task_kwargs,
    ):
        """``copy_index`` i makes this env play copy i of a batch with the same seed."""
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode={render_mode!r}; accepted: 'rgb_array' or None")
        self.render_mode = render_mode
        self.batch = task_class(env_id).create(
            num_envs=1, device="cpu", final_observation=True, first_copy=copy_index, **task_kwargs
        )
        self.observation_space = self.batch.single_observation_space
        self.action_space = self.batch.single_action_space
        self._pending_obs: np.ndarray | None = None  # first obs of the next episode
        self._started = False

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None or not self._started:
            if seed is None:
                seed = int(self.np_random.integers(0, 2**31 - 1))
            obs, _ = self.batch.reset(seed=seed)
            obs = obs[0].numpy()
        elif self._pending_obs is not None:
            obs = self._pending_obs
        else:  # a reset mid-episode abandons it and starts the next one
            obs = self.batch.reset()[0][0].numpy()
        self._started, self._pending_obs = True, None
        return obs, {}

    def step(self, action):
        if not self._started or self._pending_obs is not None:
            raise RuntimeError("call reset() before step() (the episode has ended)")
        a = np.asarray(action)
        if a.shape not in ((), (1,)) or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(
                f"action must be one integer in 0..{self.action_space.n - 1}, got {action!r}"
            )
        if not self.action_space.contains(int(a.reshape(()))):
            raise ValueError(
                f"action {int(a.reshape(()))} is out of range; accepted: 0..{self.action_space.n - 1}"
            )
        obs, reward, terminated, truncated, info = self.batch.step(
            torch.tensor([int(a.reshape(()))], dtype=torch.int64)
        )
        done = bool(terminated[0] or truncated[0])
        out_info = {}
        if done:
            self._pending_obs = obs[0].numpy()
            obs = info["final_observation"]
            out_info = {
                "success": bool(info["success"][0]),
                "episode_return": float(info["episode_return"][0]),
                "episode_length": int(info["episode_length"][0]),
            }
        return obs[0].numpy(), float(reward[0]), bool(terminated[0]), bool(truncated[0]), out_info

    def render(self):
        if self.render_mode is None:
            return None
        return self.batch.render(0)

    def oracle_action(self) -> int:
        return int(self.batch.oracle_actions()[0])
