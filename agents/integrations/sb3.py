"""A batched recall task presented as a Stable-Baselines3 ``VecEnv``.

``to_vec_env(batched_env)`` wraps a :class:`envs.batched.BatchedEnv` so that
SB3's PPO, A2C, DQN and sb3-contrib's RecurrentPPO train on it unchanged:

* numpy in and out (observations, rewards, dones); torch stays inside;
* automatic reset: when copy i's episode ends, ``obs[i]`` is already the first
  observation of its next episode (as the batch itself does) and
  ``infos[i]["terminal_observation"]`` holds the last observation of the ended
  one, which SB3 uses to bootstrap truncated episodes;
* ``infos[i]["TimeLimit.truncated"]`` is True when the episode ended by a time
  limit rather than by a terminal state;
* ``infos[i]["episode"] = {"r", "l", "t"}`` at the end of an episode, as SB3's
  ``Monitor`` writes it, so ``rollout/ep_rew_mean`` is logged without another
  wrapper, and ``infos[i]["is_success"]`` for ``rollout/success_rate`` and
  ``evaluate_policy``.

Observations: by default (``one_hot=True``) every MultiDiscrete or Discrete
observation (also inside a Dict) is handed to SB3 as a float32 one-hot Box,
concatenated over the components. That is the encoding SB3's own preprocessing
would apply to MultiDiscrete, done once on the batch's device; it also avoids an
SB3 2.x bug where ``sum(MultiDiscrete.nvec)`` is a numpy integer that
``torch.nn.LSTM`` rejects, which makes sb3-contrib's RecurrentPPO fail to build
on a raw MultiDiscrete space. ``one_hot=False`` keeps the task's own spaces
(fine for PPO/A2C, not for RecurrentPPO). Box observations pass through, except
an image of ids (an env with ``symbol_counts``: MiniGrid's view of object,
colour and state ids), which is one-hot cell by cell, as recall-rl's own policy
embeds it rather than scaling ids as intensities.

The batch should report final observations: ``to_vec_env`` switches
``final_observation`` on if it was off. Stepping goes through the batch on its
own device; only the numpy conversion crosses to the host.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

from agents.common.multi_hot import one_hot
from envs.batched import BatchedEnv


class _OneHot:
    """Encode one (possibly Dict) observation space's discrete parts as one-hot Boxes.

    ``symbol_counts`` (an env's attribute of that name, MiniGrid's): the Box is an image
    of ids, ``symbol_counts[c]`` values in channel c (the last axis), so it is one-hot
    too, cell by cell, rather than passed through as intensities.
    """

    def __init__(self, space: gym.Space, device: torch.device, symbol_counts: Sequence[int] | None = None):
        self.space = space
        if isinstance(space, gym.spaces.Dict):
            self.parts = {k: _OneHot(s, device) for k, s in space.spaces.items()}
            self.out_space = gym.spaces.Dict({k: p.out_space for k, p in self.parts.items()})
            return
        self.parts = None
        if symbol_counts and isinstance(space, gym.spaces.Box):
            if space.shape[-1] != len(symbol_counts):
                raise ValueError(f"symbol_counts {tuple(symbol_counts)} name {len(symbol_counts)} channels; "
                                 f"the observation {space.shape} has {space.shape[-1]}")
            space = gym.spaces.MultiDiscrete(np.tile(np.asarray(symbol_counts), int(np.prod(space.shape[:-1]))))
        if isinstance(space, (gym.spaces.MultiDiscrete, gym.spaces.Discrete)):
            nvec = np.asarray(space.nvec if hasattr(space, "nvec") else [space.n], dtype=np.int64)
            if nvec.ndim != 1:
                raise ValueError(f"one-hot needs a 1-D MultiDiscrete, got nvec of shape {nvec.shape}")
            starts = np.concatenate([[0], np.cumsum(nvec)[:-1]])
            lows = np.asarray(getattr(space, "start", np.zeros_like(nvec)), dtype=np.int64).reshape(-1)
            self.offsets = torch.as_tensor(starts - lows, device=device)
            self.width = int(nvec.sum())
            self.scalar = isinstance(space, gym.spaces.Discrete)
            self.out_space = gym.spaces.Box(0.0, 1.0, (self.width,), np.float32)
        elif isinstance(space, gym.spaces.Box):
            self.offsets = None
            self.out_space = space
        else:
            raise ValueError(
                f"cannot present observation space {space} to SB3; accepted: Box, Discrete, "
                "MultiDiscrete, or a Dict of those"
            )

    @classmethod
    def of_batch(cls, batch: BatchedEnv) -> _OneHot:
        """The encoder of a batch's observations, on its device (its ``symbol_counts`` too)."""
        return cls(batch.single_observation_space, batch.device, getattr(batch, "symbol_counts", None))

    def __call__(self, obs):
        if self.parts is not None:
            return {k: p(obs[k]) for k, p in self.parts.items()}
        if self.offsets is None:
            return obs
        return one_hot(obs.long().view(obs.shape[0], -1) + self.offsets, self.width)


def _to_numpy(x):
    if isinstance(x, dict):
        return {k: _to_numpy(v) for k, v in x.items()}
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _row(obs, i: int):
    if isinstance(obs, dict):
        return {k: v[i] for k, v in obs.items()}
    return obs[i]


class RecallVecEnv(VecEnv):
    """SB3 ``VecEnv`` over one :class:`BatchedEnv` (see the module docstring)."""

    def __init__(self, batched_env: BatchedEnv, one_hot: bool = True):
        if not isinstance(batched_env, BatchedEnv):
            raise TypeError(
                "to_vec_env expects an envs.BatchedEnv (from envs.make_vec), "
                f"got {type(batched_env).__name__}"
            )
        self.env = batched_env
        # SB3 needs the last observation of every ended episode; the batch only
        # computes it when asked.
        self.env.final_observation = True
        if not isinstance(one_hot, bool):
            raise ValueError(f"one_hot={one_hot!r}; accepted: True or False")
        space = batched_env.single_observation_space
        self._encode = _OneHot.of_batch(batched_env) if one_hot else (lambda obs: obs)
        obs_space = self._encode.out_space if one_hot else space
        self._actions: torch.Tensor | None = None
        self._start = time.time()
        super().__init__(batched_env.num_envs, obs_space, batched_env.single_action_space)

    # ----------------------------------------------------------------- stepping
    def reset(self):
        seed = self._seeds[0]
        obs, _ = self.env.reset(seed=seed)
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return _to_numpy(self._encode(obs))

    def step_async(self, actions: np.ndarray) -> None:
        a = np.asarray(actions)
        if a.shape == (self.num_envs, 1):  # some SB3 paths keep a trailing action dim
            a = a[:, 0]
        if a.shape != (self.num_envs,) or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(
                f"actions must be {self.num_envs} integers (shape ({self.num_envs},)), "
                f"got shape {a.shape} dtype {a.dtype}"
            )
        self._actions = torch.from_numpy(a.astype(np.int64, copy=False))

    def step_wait(self):
        if self._actions is None:
            raise RuntimeError("step_wait() called without step_async()")
        obs, reward, terminated, truncated, info = self.env.step(self._actions)
        self._actions = None
        obs_np = _to_numpy(self._encode(obs))
        done = _to_numpy(info["done"]).astype(bool)
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        ended = np.flatnonzero(done)
        if ended.size:
            final = _to_numpy(self._encode(info["final_observation"]))
            trunc = _to_numpy(truncated).astype(bool)
            term = _to_numpy(terminated).astype(bool)
            ret = _to_numpy(info["episode_return"])
            length = _to_numpy(info["episode_length"])
            success = _to_numpy(info["success"]).astype(bool)
            elapsed = round(time.time() - self._start, 6)
            for i in ended:
                infos[i] = {
                    "terminal_observation": _row(final, i),
                    "TimeLimit.truncated": bool(trunc[i] and not term[i]),
                    "episode": {"r": float(ret[i]), "l": int(length[i]), "t": elapsed},
                    "is_success": bool(success[i]),
                }
        rewards = _to_numpy(reward).astype(np.float32)
        return obs_np, rewards, done, infos

    def close(self) -> None:
        self.env.close()

    # ------------------------------------------------------------- attributes
    # All copies live in one object, so per-index attributes are the batch's own.
    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self.env, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        idx = list(self._get_indices(indices))
        if len(idx) != self.num_envs:
            raise ValueError(
                f"set_attr({attr_name!r}) on a subset of copies is not supported: the "
                f"{self.num_envs} copies share one batched env; pass indices=None"
            )
        setattr(self.env, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs):
        if method_name == "render":
            return [self.env.render(i) for i in self._get_indices(indices)]
        method = getattr(self.env, method_name)
        result = method(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        # No gymnasium wrapper is applied, but ``step_wait`` writes exactly the
        # episode statistics a ``Monitor`` would, so SB3 (``evaluate_policy``) may
        # read them as such.
        is_monitor = isinstance(wrapper_class, type) and issubclass(wrapper_class, Monitor)
        return [is_monitor for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [self.env.render(i) for i in range(self.num_envs)]


def to_vec_env(batched_env: BatchedEnv, one_hot: bool = True) -> RecallVecEnv:
    """Present ``batched_env`` (from ``envs.make_vec``) as an SB3 ``VecEnv``.

    ``one_hot``: hand discrete observations to SB3 as one-hot float Boxes (see
    the module docstring for why that is the default).
    """
    return RecallVecEnv(batched_env, one_hot=one_hot)


__all__ = ["RecallVecEnv", "to_vec_env"]
