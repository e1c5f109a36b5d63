"""The batched environment core: N copies of a task stepped in one call on one device.

A task subclasses :class:`BatchedEnv` and writes its rules as hooks over the
whole batch (no Python loop over copies):

* ``_spaces()``: the single observation and action spaces;
* ``_new_episode(mask, key)``: draw a fresh episode for the copies in ``mask``
  (called on reset and after every step with ``mask`` = the copies starting anew;
  copies outside ``mask`` must keep their state);
* ``_advance()``: draw what every copy shows at its current step (called after
  ``_new_episode``, on reset and after every step; by default nothing);
* ``_observe()``: the current observation of every copy;
* ``_transition(actions)``: apply actions, return ``(reward, terminated, truncated, success)``.

A task whose hooks use only ``self.xp`` (``envs.backends``) and operators sets
``python_rules = True``: the same hooks then also run on one copy held as Python
values (``backend="python"``), which is what the single gymnasium env steps.
Hooks in plain torch still work in batches.

The base class owns seeding, automatic reset, episode statistics, action
checking, the gymnasium ``VectorEnv`` surface and the optional compiled step
(``compile=True``, ``envs.compiled``).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from envs import rng
from envs.backends import PY, TorchXP


class BatchedEnv(gym.vector.VectorEnv):
    """Base class of every recall task. See the module docstring for the hooks."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4, "autoreset_mode": "same-step"}
    env_id: str = ""
    #: Whether episodes can end by a time limit (then trainers bootstrap from final_observation).
    can_truncate: bool = False
    #: Whether the hooks are written against ``self.xp`` only (then ``backend="python"`` works).
    python_rules: bool = False

    def __init__(
        self,
        num_envs: int = 1,
        device: torch.device | str = "cpu",
        seed: int = 0,
        check_actions: bool = True,
        final_observation: bool | None = None,
        first_copy: int = 0,
        compile: bool = False,
        backend: str = "torch",
    ):
        """``compile=True`` steps through one compiled kernel program (``envs.compiled``).
        ``backend="python"`` (one copy, a task with ``python_rules``) holds the copy as
        Python values: the single env (``envs.single``) steps it through the hooks
        itself; it is not a ``make_vec`` option."""
        self.check_count("num_envs", num_envs)
        self.num_envs = int(num_envs)
        self.device = torch.device(device)
        self.check_bool("check_actions", check_actions)
        self.check_bool("compile", compile)
        if final_observation is not None:
            self.check_bool("final_observation", final_observation)
        if backend == "python":
            if not self.python_rules or self.num_envs != 1 or self.device.type != "cpu" or compile:
                raise ValueError(f"{self.env_id}: backend='python' is one copy on the cpu, uncompiled, "
                                 "of a task with python_rules")
            self.xp = PY
        elif backend == "torch":
            self.xp = TorchXP(self.num_envs, self.device)
        else:
            raise ValueError(f"backend={backend!r}; accepted: 'torch' or 'python'")
        if compile and type(self).step is not BatchedEnv.step:
            raise ValueError(f"{type(self).__name__} steps its own way; compile=True is not available")
        self.compile = bool(compile)
        self._compiled = None  # envs.compiled.CompiledStep, built at the first step
        self.compile_info: dict[str, Any] = {"compiled": False}
        # Checking action range costs a host sync on CUDA; trainers whose actions come
        # from a categorical sample (in range by construction) switch it off.
        self.check_actions = bool(check_actions)
        self.final_observation = (self.can_truncate if final_observation is None
                                  else bool(final_observation))
        self.single_observation_space, self.single_action_space = self._spaces()
        self.observation_space = gym.vector.utils.batch_space(
            self.single_observation_space, self.num_envs
        )
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self.is_vector_env = True
        self.closed = False
        self.render_mode = "rgb_array"
        self.spec = None

        n, xp = self.num_envs, self.xp
        self.check_range("first_copy", first_copy, 0, rng.COPY_LIMIT - n)
        # Global copy indices: a batch can be one shard of a larger one (copy i plays
        # the same episodes wherever it runs).
        self.copies = int(first_copy) if xp.python else torch.arange(
            first_copy, first_copy + n, device=self.device)
        self.episode = xp.full(-1)
        self.t = xp.zeros()
        self.episode_return = xp.zeros(dtype=torch.float32)
        self.episode_key = xp.zeros()
        self._all = xp.full(True, dtype=torch.bool)
        self._set_seed(seed)

    # ------------------------------------------------------------------ hooks
    def _spaces(self) -> tuple[gym.Space, gym.Space]:
        raise NotImplementedError

    def _new_episode(self, mask: torch.Tensor, key: torch.Tensor) -> None:
        raise NotImplementedError

    def _advance(self) -> None:
        """Draw what every copy shows at its current step (after ``_new_episode``)."""

    def _eager_only(self) -> bool:
        """Whether the state now holds what the compiled step was not built for."""
        return False

    def _observe(self) -> torch.Tensor:
        raise NotImplementedError

    def _transition(self, actions: torch.Tensor):
        raise NotImplementedError

    @property
    def memory_horizon(self) -> int:
        """Cherepanov et al.'s (2024) correlation horizon xi = t_recall - t_event + 1.

        t_event is the last step at which the information to recall is observable,
        t_recall the first step at which the action that needs it can be taken; over the
        episodes the knobs allow, the largest such xi. A policy that sees its last K
        observations solves every episode only if K >= xi; xi > K is long-term memory.
        """
        raise NotImplementedError

    def oracle_actions(self) -> torch.Tensor:
        """The optimal action of every copy in its current state (may read hidden state)."""
        raise NotImplementedError

    def actions_matter(self) -> torch.Tensor | None:
        """Whether the action each copy takes now can change anything (bool ``[N]``).

        False where the task ignores actions (a watch or show phase, the steps before a
        choice): no action there changes a reward or an observation, so a learner may
        leave those steps out of its policy loss, and videos mark them "(no effect)".
        None: every action matters.
        """
        return None

    def render_frame(self, index: int = 0, show_answer: bool = True, action: int | None = None
                     ) -> np.ndarray:
        """Copy ``index`` now; ``action``, when given, is the agent's action at this step,
        drawn apart from the right answer (see ``envs.render``)."""
        raise NotImplementedError

    #: Names of the actions, for videos (empty: the number is the name).
    action_names: tuple[str, ...] = ()

    # ----------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything that moves on as the copies step: every tensor and array attribute.

        Taken generically (all of them, constant tables too) so a task needs no code of
        its own to be checkpointed; ``load_state_dict`` into an env built with the same
        id, knobs and num_envs continues every copy exactly where it was.
        """
        tensors = {k: v.detach().clone() for k, v in vars(self).items() if isinstance(v, torch.Tensor)}
        arrays = {k: v.copy() for k, v in vars(self).items() if isinstance(v, np.ndarray)}
        return {"env_id": self.env_id, "num_envs": self.num_envs, "seed": self.seed_value,
                "tensors": tensors, "arrays": arrays}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = self.state_dict()
        problems = []
        if (state.get("env_id"), state.get("num_envs")) != (self.env_id, self.num_envs):
            problems.append(f"saved {state.get('env_id')} x {state.get('num_envs')}, "
                            f"this env {self.env_id} x {self.num_envs}")
        for group in ("tensors", "arrays"):
            saved = state.get(group, {})
            # (the saved env may hold more: attributes that appear at the first reset)
            if set(mine[group]) - set(saved):
                problems.append(f"{group} {sorted(set(mine[group]) - set(saved))} missing")
            problems += [f"{k}: shape {tuple(v.shape)} vs {tuple(mine[group][k].shape)}"
                         for k, v in saved.items()
                         if k in mine[group] and tuple(v.shape) != tuple(mine[group][k].shape)]
        if problems:
            raise ValueError("env state does not fit this env (other task, knobs or num_envs): "
                             + "; ".join(problems))
        for k, v in state["tensors"].items():
            setattr(self, k, v.to(self.device, copy=True))  # never alias the caller's state
        for k, v in state["arrays"].items():
            setattr(self, k, v.copy())
        self.seed_value = int(state["seed"])
        self._compiled = None  # its inputs may have changed shape or number

    # ------------------------------------------------------------- gymnasium
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start a new episode in every copy; ``seed`` restarts each copy's episode sequence."""
        if seed is not None:
            self._set_seed(seed)
        self._begin(self._all)
        self._advance()
        return self._observe(), {}

    def step(self, actions):
        actions = self._as_actions(actions)
        if self._compiled and self._compiled.final_observation != self.final_observation:
            self._compiled = None  # the flag changed (to_vec_env sets it): another program
        if self.compile and self._compiled is None:
            from envs.compiled import CompiledStep

            self._compiled = CompiledStep.build(self)
        if self._compiled and not self._eager_only():
            out = self._compiled(self, actions)
        else:
            out = self._step_batch(actions)
        obs, reward, terminated, truncated, done, success, ep_return, ep_length, final = out
        info: dict[str, Any] = {
            "done": done,
            "success": success,
            "episode_return": ep_return,
            "episode_length": ep_length,
        }
        if self.final_observation:
            info["final_observation"] = final
        return obs, reward, terminated, truncated, info

    def _step_batch(self, actions: torch.Tensor) -> tuple:
        """One step of every copy, auto-reset included; what ``step`` returns, flat.

        ``(obs, reward, terminated, truncated, done, success, episode_return,
        episode_length, final_observation or None)``; a pure function of the state
        tensors and the actions, so ``envs.compiled`` can compile it.
        """
        reward, terminated, truncated, success = self._transition(actions)
        self.t = self.t + 1
        self.episode_return = self.episode_return + reward
        done = terminated | truncated
        final = self._observe() if self.final_observation else None
        ep_return, ep_length = self.episode_return, self.t
        if self.xp.maybe(done):  # (no episode ends at most steps of most tasks)
            self._begin(done)
        self._advance()
        return self._observe(), reward, terminated, truncated, done, success & done, ep_return, ep_length, final

    def render(self, index: int = 0, action: int | None = None) -> np.ndarray:
        """An RGB frame of copy ``index``: what it sees, the phase, and the right answer marked;
        with ``action``, the agent's action at this step too (green right, red wrong)."""
        if not 0 <= index < self.num_envs:
            raise IndexError(f"index must be in [0, {self.num_envs - 1}], got {index}")
        if action is None:
            return self.render_frame(index)
        n = int(self.single_action_space.n)
        if not 0 <= int(action) < n:
            raise ValueError(f"{self.env_id}: action {action} is out of range; accepted: 0..{n - 1}")
        return self.render_frame(index, action=int(action))

    def close_extras(self, **kwargs):
        pass

    def close(self, **kwargs):
        self.closed = True

    @classmethod
    def accepted_kwargs(cls) -> list[str]:
        """Every keyword a task's constructor takes (its knobs and the base class's)."""
        import inspect

        names: set[str] = set()
        for klass in cls.__mro__:
            if "__init__" in vars(klass) and issubclass(klass, BatchedEnv):
                params = inspect.signature(klass.__init__).parameters.values()
                names |= {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        return sorted(names - {"self", "backend"})  # backend: the single env's own

    @classmethod
    def create(cls, *args, **kwargs) -> BatchedEnv:
        """Construct, turning an unknown keyword into an error that lists the accepted ones."""
        cls._check_kwargs(kwargs)
        return cls(*args, **kwargs)

    @classmethod
    def one_copy(cls, copy_index: int = 0, **kwargs) -> BatchedEnv:
        """Copy ``copy_index`` alone, for the single env: Python values where the task
        allows (``python_rules``), else a batch of one on the cpu; episodes end without
        an automatic reset (see ``_step_one``) in the first case."""
        cls._check_kwargs(kwargs)
        backend = "python" if cls.python_rules else "torch"
        return cls(num_envs=1, device="cpu", first_copy=copy_index, final_observation=True,
                   backend=backend, **kwargs)

    @classmethod
    def _check_kwargs(cls, kwargs: dict) -> None:
        unknown = sorted(set(kwargs) - set(cls.accepted_kwargs()))
        if unknown:
            raise ValueError(
                f"{cls.env_id or cls.__name__}: unknown option(s) {unknown}; "
                f"accepted: {', '.join(cls.accepted_kwargs())}"
            )

    # -------------------------------------------------------------- internals
    def _set_seed(self, seed: int) -> None:
        self.seed_value = rng.check_seed(seed)
        self._copy_key = rng.copy_keys(self.seed_value, self.copies)
        self.episode = self.xp.fill(self.episode, self._all, -1)

    def _begin(self, mask: torch.Tensor) -> None:
        """Start the next episode of the copies in ``mask``."""
        xp = self.xp
        # new tensors, not in place: the step hands out the finished episodes' t and return
        self.episode = self.episode + xp.int(mask)
        self.t = xp.where(mask, 0, self.t)
        self.episode_return = xp.where(mask, 0.0, self.episode_return)
        self.episode_key = rng.combine(self._copy_key, self.episode)
        self._new_episode(mask, self.episode_key)

    def step_key(self, stream: int = 0) -> torch.Tensor:
        """A key per copy for randomness drawn at the current step (stream separates uses)."""
        return rng.combine(self.episode_key, self.t * 64 + stream)

    def _action_tensor(self, actions) -> torch.Tensor:
        """Check type, shape and dtype of a batch of actions (no range check, no copy)."""
        if isinstance(actions, np.ndarray):
            actions = torch.from_numpy(actions)
        if not isinstance(actions, torch.Tensor):
            raise TypeError(
                f"{self.env_id}: actions must be a torch.Tensor of shape ({self.num_envs},), "
                f"got {type(actions).__name__}"
            )
        if actions.shape != (self.num_envs,):
            raise ValueError(
                f"{self.env_id}: actions must have shape ({self.num_envs},), got {tuple(actions.shape)}"
            )
        if actions.dtype.is_floating_point or actions.dtype.is_complex or actions.dtype == torch.bool:
            raise TypeError(f"{self.env_id}: actions must be integers, got dtype {actions.dtype}")
        return actions

    def _as_actions(self, actions) -> torch.Tensor:
        if (not self.check_actions and type(actions) is torch.Tensor
                and actions.dtype is torch.int64 and actions.shape == (self.num_envs,)
                and actions.device == self.device):
            return actions  # the trainer's: nothing to convert, no range check asked for
        actions = self._action_tensor(actions).to(self.device, torch.int64)
        if self.check_actions:
            n = int(self.single_action_space.n)
            bad = (actions < 0) | (actions >= n)
            if bool(bad.any()):
                first = int(bad.nonzero()[0, 0])
                raise ValueError(
                    f"{self.env_id}: action {int(actions[first])} of copy {first} is out of "
                    f"range; accepted: 0..{n - 1}"
                )
        return actions

    @staticmethod
    def check_count(name: str, value) -> None:
        """A count: an int >= 1 (not a bool, not a float that happens to be whole)."""
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")

    @staticmethod
    def check_bool(name: str, value) -> None:
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{name}={value!r} must be True or False")

    @staticmethod
    def check_range(name: str, value, low, high, kind=int) -> None:
        """Raise a ValueError naming the knob, its value and the accepted range."""
        ok_type = isinstance(value, (int, np.integer)) if kind is int else isinstance(
            value, (int, float, np.integer, np.floating)
        )
        if isinstance(value, (bool, np.bool_)) or not ok_type or not low <= value <= high:
            raise ValueError(f"{name}={value!r} is out of range; accepted: {low}..{high}")
