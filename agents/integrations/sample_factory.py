"""recall-rl inside sample-factory 2.1.1: every task as an env, every core as a model core.

Envs
    ``register_sf_envs()`` registers each id of ``SF_ENV_IDS``: the recall tasks
    (``envs.ENV_IDS``, e.g. ``recall/DelayedMatch-v0``) and MiniGrid's Memory
    rooms (``envs.MINIGRID_IDS``), with sample-factory. A recall env is one
    :class:`envs.single.RecallEnv` (sample-factory steps single gymnasium envs
    in its rollout workers) playing copy ``env_config.env_id`` of the batch, so
    every env of every worker plays different episodes. Sample-factory's MLP
    encoder wants float Box observations, so MultiDiscrete/Discrete
    observations (all symbolic tasks) become one one-hot float Box, the
    concatenation of one one-hot block per component; Box passes through; a
    Dict is encoded key by key; MiniGrid's view, an image of (object, colour,
    state) ids, is one-hot cell by cell. MiniGrid rooms run batched only
    (``--batched_sampling=True``, which ``sf_train`` turns on for them): their
    copies are stepped together by ``envs.minigrid_memory``, with no single-env
    twin. Task knobs come from ``--env_kwargs`` (JSON).
    Each ended episode reports ``episode_extra_stats = {"success": 0/1}``, so
    sample-factory logs ``success`` next to the return.

Cores
    ``SFCore`` wraps any core of ``memory_modules`` (``--recall_core`` and
    ``--recall_core_kwargs``) as a sample-factory ``ModelCore``. Sample-factory
    keeps one flat float vector of recurrent state per env; the layout here is::

        [alive, state[k0].flatten(), state[k1].flatten(), ...]   keys in sorted order

    bool entries (e.g. GTrXL's ``valid``) are stored as 0/1. The vector length
    is ``1 + sum(numel)`` and is what ``--rnn_size`` must be (``sf_train`` sets
    it, with ``rnn_type=gru``, one layer and shared actor-critic weights, so
    sample-factory's ``get_rnn_size`` equals it).

How resets map
    Our cores take ``episode_starts`` and reset themselves (to zeros, or to a
    learned/identity initial memory for RMC and DT-Mem). Sample-factory instead
    multiplies the state vector by 0 at an episode boundary, both when acting
    and when it rebuilds sequences for the learner, and it never passes the
    starts to the core. The ``alive`` slot translates: the core writes 1 there
    after every step, so a vector whose ``alive`` is 0 has just been zeroed by
    sample-factory and its step is an episode start; the wrapped core then gets
    ``episode_starts = True`` and resets itself properly. A zero vector is
    therefore never read as the state of a core whose initial state is not zero.

Sequences
    For training, sample-factory cuts each rollout at episode ends and hands the
    core a ``PackedSequence`` of segments (each segment lies inside one episode,
    its first step starting either a new episode or continuing the stored
    state). ``SFCore`` scatters the packed data into a padded ``[T, N, D]``
    batch, runs the core's parallel sequence path once with
    ``episode_starts[0] = not alive`` and no other starts, and gathers the
    outputs back in the packed order. Padding lies after each segment's last
    step, so causal cores never let it reach a real step; the returned final
    state (unused by sample-factory's learner) is not meaningful for short
    segments.

Which cores fit
    ``core=sf_gru`` / ``sf_lstm`` (``SF_OWN_CORES``) leave sample-factory's own
    ``ModelCoreRNN`` (torch's ``nn.GRU`` / ``nn.LSTM``) in place instead: the
    library as its users run it, the peer that ``benchmarks.peers --sf-core own``
    measures.

    All of ``memory_modules.CORES`` run and pass the same test (the learner's
    packed path equals the acting path step by step). What limits them is
    size: sample-factory stores the state vector for every step of every
    rollout (``[envs, rollout + 1, rnn_size]`` floats). With default options:
    mlp 1 float (only ``alive``), gru 129, lstm 257, rmc 513, dtmem 1,025:
    all cheap. gtrxl keeps a per-layer cache of ``window`` steps: 16,449
    floats (2 layers x 64 x 128 + 64 + 1), about 2 MB per env per 32-step
    rollout; usable, better with a small ``window``. hcam keeps its whole
    chunked episodic memory: 282,691 floats per env, about 2.4 GB of
    trajectory buffer for 64 envs x 33 steps, so at its defaults it does not
    fit in practice; with a small memory (``chunk_size=4, max_chunks=4``) it
    runs. There is no burn-in, and cached activations are stored as acted
    (no gradient to earlier steps, as in the cores themselves).

Checkpoints
    torch >= 2.6 loads with ``weights_only=True`` by default, which sample-
    factory 2.1.1's ``Learner.load_checkpoint`` does not expect. Our loaders
    (``load_checkpoint`` here, used by ``sf_enjoy``; and the learner's loader,
    replaced by ``patch_checkpoint_loading()`` for resumed training) call
    ``torch.load(..., weights_only=False)``: these files are written by the
    user's own runs, so they are trusted.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch.nn.utils.rnn import PackedSequence

import envs
from envs.single import RecallEnv

# ---------------------------------------------------------------------------- envs


#: The ids sample-factory can train on: recall's tasks, then MiniGrid's Memory rooms.
SF_ENV_IDS: tuple[str, ...] = (*envs.ENV_IDS, *envs.MINIGRID_IDS)


def _one_hot(space: gym.Space, device="cpu"):
    # The one-hot encoding shared with the SB3 adapter (torch, batch-first).
    from agents.integrations.sb3 import _OneHot

    return _OneHot(space, torch.device(device))


def _one_hot_of(batch):
    """The same encoding for a batch's observations (MiniGrid's ids included)."""
    from agents.integrations.sb3 import _OneHot

    return _OneHot.of_batch(batch)


class OneHotObservations(gym.ObservationWrapper):
    """Discrete observation components as one-hot float32 (see the module docstring)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._encode = _one_hot(env.observation_space)
        self.observation_space = self._encode.out_space

    def observation(self, observation):
        def one(x):
            return torch.as_tensor(np.asarray(x))[None]

        if isinstance(observation, dict):
            batch = {k: one(v) for k, v in observation.items()}
            return {k: np.asarray(v[0]) for k, v in self._encode(batch).items()}
        return np.asarray(self._encode(one(observation))[0])


class EpisodeStats(gym.Wrapper):
    """Report ``success`` at each episode end in sample-factory's ``episode_extra_stats``."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if "success" in info:
            info = dict(info)
            info["episode_extra_stats"] = {"success": float(info["success"])}
        return obs, reward, terminated, truncated, info


def parse_json_object(text: str | None, flag: str) -> dict[str, Any]:
    """The JSON object given to ``flag`` (empty when not given)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{flag} must be a JSON object, got {text!r}: {e}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{flag} must be a JSON object, got {text!r}")
    return value


def parse_env_kwargs(text: str | None) -> dict[str, Any]:
    return parse_json_object(text, "--env_kwargs")


class SFBatchedEnv(gym.Env):
    """A whole :class:`envs.BatchedEnv` as one sample-factory env of ``num_agents`` copies.

    For ``--batched_sampling=True``: sample-factory then treats the copies as
    the agents of one vectorised env (as it does for Isaac Gym) and steps them
    in one call, with tensors in and out; each copy resets itself at its
    episode end, which is what sample-factory expects from vectorised envs.
    Observations are ``{"obs": one-hot float tensor [num_agents, width]}``;
    infos carry a per-copy ``success`` tensor, read where an episode ended.
    """

    def __init__(self, batch, render_mode: str | None = None):
        self.batch = batch
        self.num_agents = batch.num_envs
        self.is_multiagent = True
        self._encode = _one_hot_of(batch)
        space = self._encode.out_space
        self.observation_space = space if isinstance(space, gym.spaces.Dict) else gym.spaces.Dict({"obs": space})
        self.action_space = batch.single_action_space
        self.render_mode = render_mode

    def _obs(self, obs):
        enc = self._encode(obs)
        return enc if isinstance(enc, dict) else {"obs": enc}

    def reset(self, *, seed: int | None = None, options=None):
        obs, _ = self.batch.reset(seed=seed)
        return self._obs(obs), {}

    def step(self, actions):
        actions = torch.as_tensor(np.asarray(actions) if not torch.is_tensor(actions) else actions)
        obs, reward, terminated, truncated, info = self.batch.step(actions.reshape(-1).long())
        return self._obs(obs), reward, terminated, truncated, {"success": info["success"].float()}

    def render(self):
        return self.batch.render(0)


def make_sf_env(full_env_name: str, cfg=None, env_config=None, render_mode: str | None = None):
    """sample-factory's env factory.

    Normal (non-batched) sampling: one recall task as a single gymnasium env.
    ``--batched_sampling=True``: ``--recall_copies`` copies in one batched env.
    """
    if full_env_name not in SF_ENV_IDS:
        raise ValueError(f"unknown env {full_env_name!r}; accepted: {', '.join(SF_ENV_IDS)}")
    knobs = parse_env_kwargs(getattr(cfg, "env_kwargs", None) if cfg is not None else None)
    index = int(env_config["env_id"]) if env_config is not None and "env_id" in env_config else 0
    batched = cfg is not None and getattr(cfg, "batched_sampling", False)
    if full_env_name in envs.MINIGRID_IDS and not batched:
        raise ValueError(f"{full_env_name} runs batched only: --batched_sampling=True "
                         "(sf_train sets it for MiniGrid rooms)")
    if batched:
        copies = int(getattr(cfg, "recall_copies", 64))
        if copies < 1:
            raise ValueError(f"--recall_copies must be >= 1, got {copies}")
        check_batched_envs_per_worker(int(getattr(cfg, "num_envs_per_worker", 1)))
        batch = envs.make_vec(full_env_name, copies, first_copy=index * copies, **knobs)
        return SFBatchedEnv(batch, render_mode)
    env = RecallEnv(full_env_name, render_mode="rgb_array", copy_index=index, **knobs)
    return EpisodeStats(OneHotObservations(env))


def check_batched_envs_per_worker(count: int) -> None:
    """Batched sampling takes one batched env per worker.

    Sample-factory steps several envs of a worker through its SequentialVectorizeWrapper,
    which expects a list of per-agent info dicts from each env; a batched env reports one
    dict of per-copy tensors (what sample-factory's vectorised path reads, and how
    ``success`` reaches its logs), so that combination is refused here, before it fails
    inside sample-factory's statistics code.
    """
    if count != 1:
        raise ValueError(
            f"--batched_sampling=True steps one batched env per worker, so --num_envs_per_worker "
            f"must be 1, got {count}; accepted: 1 (more copies: raise --recall_copies; more "
            "processes: raise --num_workers)"
        )


def register_sf_envs() -> None:
    from sample_factory.envs.env_utils import register_env

    for env_id in SF_ENV_IDS:
        register_env(env_id, make_sf_env)


def resolve_env_id(name: str) -> str:
    """``DelayedMatch``, ``DelayedMatch-v0``, ``recall/DelayedMatch-v0`` or the config name
    ``delayed_match`` -> the full id; a MiniGrid Memory id, or ``minigrid_memory`` (its
    default room, S7)."""
    from agents.common.config import env_names, load_env_config

    if name in env_names() and load_env_config(name)["id"] in SF_ENV_IDS:
        return str(load_env_config(name)["id"])
    if name in envs.MINIGRID_IDS:
        return name
    for env_id in envs.ENV_IDS:
        short = env_id.split("/", 1)[1]
        if name in (env_id, short, short.rsplit("-v", 1)[0]):
            return env_id
    raise ValueError(f"unknown env {name!r}; accepted: {', '.join(env_names())}; "
                     f"or ids: {', '.join(SF_ENV_IDS)}")


# ---------------------------------------------------------------------------- cores


def parse_core_kwargs(text: str | None) -> dict[str, Any]:
    return parse_json_object(text, "--recall_core_kwargs")


class StateLayout:
    """Where each tensor of a core's state dict lives in the flat vector (after ``alive``).

    ``skip``: keys left out of the vector (a core's ``derived_state_keys``, caches it
    rebuilds; the float32 vector could not carry GTrXL's float64 checksum anyway)."""

    def __init__(self, example: dict[str, torch.Tensor], skip: tuple[str, ...] = ()):
        self.entries = []  # (key, shape without batch, dtype, start, numel)
        offset = 1
        for key in sorted(set(example) - set(skip)):
            v = example[key]
            numel = int(np.prod(v.shape[1:], dtype=np.int64))
            self.entries.append((key, tuple(v.shape[1:]), v.dtype, offset, numel))
            offset += numel
        self.size = offset

    def flatten(self, state: dict[str, torch.Tensor], batch: int, like: torch.Tensor) -> torch.Tensor:
        parts = [torch.ones(batch, 1, device=like.device, dtype=like.dtype)]
        for key, _, _, _, _ in self.entries:
            parts.append(state[key].reshape(batch, -1).to(like.dtype))
        return torch.cat(parts, dim=1)

    def unflatten(self, vec: torch.Tensor) -> dict[str, torch.Tensor]:
        B = vec.shape[0]
        state = {}
        for key, shape, dtype, start, numel in self.entries:
            v = vec[:, start : start + numel].reshape(B, *shape)
            state[key] = v > 0.5 if dtype == torch.bool else v.to(dtype)
        return state


def core_state_size(core_name: str, core_kwargs: dict[str, Any] | None = None) -> int:
    """Length of sample-factory's state vector for this core: 1 (alive) + the state's numel."""
    from memory_modules import make_core

    probe = make_core(core_name, 8, **(core_kwargs or {}))
    return StateLayout(probe.initial_state(1, "cpu"), probe.derived_state_keys()).size


def _packed_positions(batch_sizes: torch.Tensor, sorted_indices: torch.Tensor | None, device):
    """(time, original batch index) of every element of a PackedSequence's data."""
    bs = batch_sizes.to(torch.int64)
    t_idx = torch.repeat_interleave(torch.arange(len(bs)), bs)
    starts = torch.cumsum(bs, 0) - bs
    j_idx = torch.arange(int(bs.sum())) - torch.repeat_interleave(starts, bs)
    t_idx, j_idx = t_idx.to(device), j_idx.to(device)
    b_idx = j_idx if sorted_indices is None else sorted_indices.to(device)[j_idx]
    return t_idx, b_idx


def _model_core_base():
    from sample_factory.model.core import ModelCore

    return ModelCore


class SFCore(_model_core_base()):
    """A ``memory_modules`` core as a sample-factory ``ModelCore`` (see the module docstring)."""

    def __init__(self, cfg, input_size: int):
        super().__init__(cfg)
        from memory_modules import make_core

        name = getattr(cfg, "recall_core", None)
        if not name:
            raise ValueError("--recall_core is not set; accepted: a name of memory_modules.CORES")
        self.core = make_core(name, int(input_size), **parse_core_kwargs(cfg.recall_core_kwargs))
        self.layout = StateLayout(self.core.initial_state(1, "cpu"), self.core.derived_state_keys())
        self.core_output_size = self.core.output_size
        expected = self.layout.size
        if cfg.rnn_size != expected or cfg.rnn_type != "gru" or cfg.rnn_num_layers != 1:
            raise ValueError(
                f"core {name!r} needs a state vector of {expected} floats: run with "
                f"--rnn_size={expected} --rnn_type=gru --rnn_num_layers=1 (agents.sf_train sets "
                f"these), got rnn_size={cfg.rnn_size} rnn_type={cfg.rnn_type} "
                f"rnn_num_layers={cfg.rnn_num_layers}"
            )

    def forward(self, head_output, rnn_states):
        starts0 = rnn_states[:, 0] < 0.5  # zeroed by sample-factory -> an episode starts here
        state = self.layout.unflatten(rnn_states)
        if torch.is_tensor(head_output):  # acting: one step for a batch of envs
            B = head_output.shape[0]
            y, new = self.core(head_output[None], state, starts0[None])
            return y[0], self.layout.flatten(new, B, rnn_states)
        if not isinstance(head_output, PackedSequence):
            raise TypeError(f"expected a Tensor or PackedSequence, got {type(head_output).__name__}")
        data, batch_sizes = head_output.data, head_output.batch_sizes
        T, N = len(batch_sizes), rnn_states.shape[0]
        t_idx, b_idx = _packed_positions(batch_sizes, head_output.sorted_indices, data.device)
        x = data.new_zeros(T, N, data.shape[1])
        x[t_idx, b_idx] = data
        starts = torch.zeros(T, N, dtype=torch.bool, device=data.device)
        starts[0] = starts0
        y, new = self.core(x, state, starts)
        out = PackedSequence(
            y[t_idx, b_idx], batch_sizes, head_output.sorted_indices, head_output.unsorted_indices
        )
        return out, self.layout.flatten(new, N, rnn_states)


#: sample-factory's own recurrent cores (``ModelCoreRNN``: torch's ``nn.GRU`` / ``nn.LSTM``),
#: by the ``core=`` name that picks them, as the library's users run it: no recall-rl code
#: inside the model (the peer as shipped, for benchmarks.peers).
SF_OWN_CORES = {"sf_gru": "gru", "sf_lstm": "lstm"}
SF_OWN_CORE_OPTIONS = ("hidden_size", "num_layers")


def sf_own_core_flags(name: str, core_kwargs: dict[str, Any] | None = None) -> list[str]:
    """sample-factory's ``--rnn_*`` flags for one of ``SF_OWN_CORES`` with its options."""
    kwargs = dict(core_kwargs or {})
    unknown = sorted(set(kwargs) - set(SF_OWN_CORE_OPTIONS))
    if unknown:
        raise ValueError(f"core {name!r} does not take {', '.join(unknown)}; accepted options: "
                         f"{', '.join(SF_OWN_CORE_OPTIONS)}")
    size, layers = kwargs.get("hidden_size", 128), kwargs.get("num_layers", 1)
    for key, value in (("hidden_size", size), ("num_layers", layers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"core.{key}={value!r} is out of range; accepted: an int >= 1")
    return [f"--rnn_size={size}", f"--rnn_type={SF_OWN_CORES[name]}", f"--rnn_num_layers={layers}"]


def make_sf_core(cfg, core_input_size: int):
    if getattr(cfg, "recall_core", None) in SF_OWN_CORES:
        from sample_factory.model.core import default_make_core_func

        return default_make_core_func(cfg, core_input_size)
    return SFCore(cfg, core_input_size)


def register_sf_model() -> None:
    from sample_factory.algo.utils.context import global_model_factory

    global_model_factory().register_model_core_factory(make_sf_core)


# ------------------------------------------------------------------------ arguments


def add_recall_args(parser) -> None:
    """The three settings sample-factory stores in cfg.json next to its own."""
    parser.add_argument("--recall_core", type=str, default="gru",
                        help="a memory_modules core name, or sf_gru / sf_lstm: sample-factory's own")
    parser.add_argument(
        "--recall_core_kwargs", type=str, default="{}", help="JSON object of core options"
    )
    parser.add_argument("--env_kwargs", type=str, default="{}", help="JSON object of task knobs")
    parser.add_argument(
        "--recall_copies",
        type=int,
        default=64,
        help="copies per sample-factory env with --batched_sampling=True (one batched env)",
    )


# ---------------------------------------------------------------------- checkpoints


def load_checkpoint(path: str, device="cpu") -> dict[str, Any]:
    """Load a sample-factory checkpoint with ``weights_only=False`` (trusted: our own runs)."""
    from agents.common.checkpoint import CheckpointError

    try:
        return torch.load(path, map_location=device, weights_only=False)
    except FileNotFoundError:
        raise
    except Exception as err:  # a damaged file: torch and pickle raise many types
        raise CheckpointError(f"checkpoint {path} cannot be loaded: {err}") from None


def latest_checkpoint(train_dir: str, experiment: str, policy_id: int = 0, kind: str = "latest") -> str:
    prefix = {"latest": "checkpoint", "best": "best"}
    if kind not in prefix:
        raise ValueError(f"checkpoint kind {kind!r}; accepted: latest, best")
    folder = os.path.join(train_dir, experiment, f"checkpoint_p{policy_id}")
    found = sorted(glob.glob(os.path.join(folder, f"{prefix[kind]}_*")))
    if not found:
        raise FileNotFoundError(f"no {kind} checkpoint in {folder}")
    return found[-1]


def patch_checkpoint_loading() -> None:
    """Make sample-factory's learner load checkpoints with ``weights_only=False`` (torch >= 2.6)."""
    from sample_factory.algo.learning.learner import Learner

    if getattr(Learner.load_checkpoint, "_recall_rl", False):
        return

    def trusted_load_checkpoint(checkpoints, device):
        if len(checkpoints) == 0:
            return None
        return load_checkpoint(checkpoints[-1], device)

    trusted_load_checkpoint._recall_rl = True
    Learner.load_checkpoint = staticmethod(trusted_load_checkpoint)


def register_all() -> None:
    register_sf_envs()
    register_sf_model()
    patch_checkpoint_loading()
