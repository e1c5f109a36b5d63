"""One copy of a batched task as a standard ``gymnasium.Env`` (numpy in and out).

A single env seeded ``s`` plays exactly the episodes of copy 0 (or ``copy_index``)
of a batch seeded ``s``: it runs the task's own hooks, the same code as the
batch, on one copy held as Python values (``BatchedEnv.one_copy``,
``envs.backends.PythonXP``), which costs a few microseconds a step where a batch
of one tensor costs hundreds. Rendering and the oracle, written for tensors, run
on a batch of one that is handed this copy's state when asked.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from envs.backends import f32
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
        self._knobs = dict(task_kwargs)
        self.batch = task_class(env_id).one_copy(copy_index, **task_kwargs)
        self._python = self.batch.xp.python
        self.observation_space = self.batch.single_observation_space
        self.action_space = self.batch.single_action_space
        self._num_actions = int(self.action_space.n)
        self._obs_dtype = self.observation_space.dtype
        self._twin = None  # the batch of one that renders this copy
        self._pending_obs: np.ndarray | None = None  # first obs of the next episode (torch path)
        self._started = False
        self._ended = False

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None or not self._started:
            if seed is None:
                seed = int(self.np_random.integers(0, 2**31 - 1))
            obs, _ = self.batch.reset(seed=seed)
        elif self._python:  # the next episode, after an ended one or abandoning this one
            self.batch._begin(True)
            self.batch._advance()
            obs = self.batch._observe()
        elif self._pending_obs is not None:
            obs = self._pending_obs
        else:
            obs = self.batch.reset()[0]
        self._started, self._ended, self._pending_obs = True, False, None
        return self._array(obs), {}

    def step(self, action):
        if self._ended or not self._started:
            raise RuntimeError("call reset() before step() (the episode has ended)")
        if type(action) is not int or not 0 <= action < self._num_actions:
            action = self._checked(action)
        if not self._python:
            return self._step_batch(action)
        # BatchedEnv._step_batch for one copy, except that an episode that ends is not
        # restarted until reset() asks for the next one (its state shows its last step)
        task = self.batch
        reward, terminated, truncated, success = task._transition(action)
        task.t += 1
        if reward:  # summed in float32, as the batch does
            task.episode_return = f32(task.episode_return + reward)
        info = {}
        if terminated or truncated:
            self._ended = True
            info = {"success": success, "episode_return": task.episode_return,
                    "episode_length": task.t}
        else:
            task._advance()
        obs = task._observe()
        if type(obs) is list:
            obs = np.array(obs, dtype=self._obs_dtype)
        return obs, reward, terminated, truncated, info

    def _checked(self, action) -> int:
        a = np.asarray(action)
        if a.shape not in ((), (1,)) or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"action must be one integer in 0..{self._num_actions - 1}, got {action!r}")
        a = int(a.reshape(()))
        if not 0 <= a < self._num_actions:
            raise ValueError(f"action {a} is out of range; accepted: 0..{self._num_actions - 1}")
        return a

    def _array(self, obs) -> np.ndarray:
        if isinstance(obs, torch.Tensor):
            return obs[0].numpy()
        return np.array(obs, dtype=self._obs_dtype)

    def _step_batch(self, action: int):
        """A step of a task without Python rules: a batch of one on the cpu."""
        obs, reward, terminated, truncated, info = self.batch.step(
            torch.tensor([action], dtype=torch.int64))
        done = bool(terminated[0] or truncated[0])
        out_info = {}
        if done:
            self._pending_obs, obs = obs, info["final_observation"]
            self._ended = True
            out_info = {
                "success": bool(info["success"][0]),
                "episode_return": float(info["episode_return"][0]),
                "episode_length": int(info["episode_length"][0]),
            }
        return obs[0].numpy(), float(reward[0]), bool(terminated[0]), bool(truncated[0]), out_info

    def tensor_copy(self):
        """A batch of one of this task on the cpu, in this copy's current state."""
        if not self._python:
            return self.batch
        if self._twin is None:
            b = self.batch
            self._twin = type(b).create(num_envs=1, device="cpu", first_copy=b.copies, **self._knobs)
        twin = self._twin
        for name, value in list(vars(twin).items()):
            # per-copy tensors ([1, ...]); the same names hold this copy's Python values
            if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == 1:
                mine = getattr(self.batch, name)
                setattr(twin, name, torch.as_tensor(mine, dtype=value.dtype).reshape(value.shape))
        return twin

    def render(self):
        if self.render_mode is None:
            return None
        return self.tensor_copy().render(0)

    def oracle_action(self) -> int:
        return int(self.tensor_copy().oracle_actions()[0])
