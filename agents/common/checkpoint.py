"""Checkpoints: model, optimizer, config, RNG states and counters in one file.

A checkpoint is written to a temporary file in the same folder, fsynced, and
renamed over ``latest.pt`` (``os.replace`` is atomic); the folder is fsynced
after the renames, so a power cut does not undo them. The checkpoint it
replaces is kept as ``previous.pt``: a ``latest.pt`` damaged by something
else (a full disk, a copy cut short) falls back to it with a warning. The
observation and action spaces are stored too, so evaluating on an env that
does not fit the policy is a clear error rather than a shape error deep inside
the encoder.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.pt"
PREVIOUS = "previous.pt"
# Keys every checkpoint written by our trainers holds; a file without them is not one.
REQUIRED_KEYS = ("config", "model", "global_step")
_warned: set[str] = set()  # a tool that loads a file twice warns about it once


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that does not fit what it is loaded into."""


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def previous_path(path: str | Path) -> Path:
    """Where the checkpoint that ``path`` replaced is kept."""
    path = Path(path)
    if path.name == LATEST:
        return path.with_name(PREVIOUS)
    return path.with_name(f"{path.stem}.previous{path.suffix}")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms that cannot open a folder (Windows): the rename is all we get
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: str | Path, payload: dict[str, Any], keep_previous: bool = True) -> Path:
    """Write ``payload`` to ``path`` atomically; the file it replaces becomes the previous one.

    ``keep_previous=False`` overwrites without rotating: for a ``path`` known to be damaged,
    which must not push out the good previous checkpoint.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    # Killed between these two renames, the folder holds only the previous checkpoint,
    # which is then the newest complete one: the loader takes it.
    if keep_previous and path.exists():
        os.replace(path, previous_path(path))
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run dir (-> its latest checkpoint, else its previous one)."""
    path = Path(path)
    if path.is_dir():
        candidate = path / CHECKPOINT_DIR / LATEST
        if not candidate.is_file() and not previous_path(candidate).is_file():
            raise FileNotFoundError(f"no checkpoint in run dir {path} (looked for {candidate})")
        return candidate
    if not path.is_file() and not (path.name == LATEST and previous_path(path).is_file()):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return path


def _read(path: Path, map_location) -> dict[str, Any]:
    """One checkpoint file, or a CheckpointError saying in a few words why not."""
    if not path.is_file():
        raise CheckpointError("missing")
    if path.stat().st_size == 0:
        raise CheckpointError("empty file")
    try:
        # Our own files: they hold gymnasium spaces and RNG states, so not weights-only.
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # torch and pickle raise many types for a damaged file
        text = str(err).strip()
        # torch's own message goes on for lines about what may have happened: keep its head
        reason = text.splitlines()[0].split(". ")[0] if text else type(err).__name__
        raise CheckpointError(f"unreadable: {reason}") from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise CheckpointError(f"not a recall-rl checkpoint (lacks {', '.join(missing)})")
    return ckpt


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint file or a run dir's latest; a damaged latest falls back to previous.

    The returned dict's ``"_source"`` says which file was read.
    """
    path = resolve_checkpoint(path)
    try:
        ckpt = _read(path, map_location)
    except CheckpointError as err:
        prev = previous_path(path)
        if path.name != LATEST or not prev.is_file():
            raise CheckpointError(f"checkpoint {path} cannot be loaded: {err}") from None
        try:
            ckpt = _read(prev, map_location)
        except CheckpointError as err_prev:
            raise CheckpointError(f"checkpoint {path} cannot be loaded ({err}), nor the previous "
                                  f"one {prev} ({err_prev})") from None
        if str(path) not in _warned:
            _warned.add(str(path))
            print(f"warning: checkpoint {path} is {err}; using the previous one {prev} "
                  f"(step {ckpt['global_step']})", file=sys.stderr, flush=True)
        path = prev
    ckpt["_source"] = str(path)
    return ckpt


def policy_from_checkpoint(ckpt: dict[str, Any], device: str | torch.device = "cpu"):
    """Rebuild the policy stored in a loaded checkpoint, weights included."""
    from agents.common.config import make_policy

    policy = make_policy(ckpt["policy"])
    policy.load_state_dict(ckpt["model"])
    policy.env_id = ckpt["env_id"]
    return policy.to(device)


def same_space(a, b) -> bool:
    """Space equality that is False (not an error) for spaces of different shapes."""
    if type(a) is not type(b) or getattr(a, "shape", None) != getattr(b, "shape", None):
        return False
    try:
        return bool(a == b)
    except ValueError:  # gymnasium compares some spaces elementwise
        return False


def _describe(spec: dict[str, Any], env_id: str) -> str:
    return (f"{spec['core']} {spec['core_cfg']} on {env_id} (observations "
            f"{spec['observation_space']}, actions {spec['action_space']})")


def check_checkpoint_fits(ckpt: dict[str, Any], spec: dict[str, Any], env_id: str) -> None:
    """Raise a CheckpointError naming both sides when ``ckpt``'s policy is not ``spec``'s."""
    saved = ckpt["policy"]
    same = (saved["core"] == spec["core"] and saved["core_cfg"] == spec["core_cfg"]
            and saved.get("encoder_cfg") == spec.get("encoder_cfg")
            and saved.get("prev_action_reward") == spec.get("prev_action_reward")
            and saved.get("head_hidden", 128) == spec.get("head_hidden", 128)
            and same_space(saved["observation_space"], spec["observation_space"])
            and same_space(saved["action_space"], spec["action_space"]))
    if not same or ckpt.get("env_id", env_id) != env_id:
        raise CheckpointError(
            f"checkpoint {ckpt.get('_source', '?')} holds "
            f"{_describe(saved, ckpt.get('env_id', '?'))}; this run builds {_describe(spec, env_id)}"
        )


def check_env_fits(policy, env, env_id: str, checkpoint: str | Path) -> None:
    """Raise a ValueError naming both sides when ``env``'s spaces differ from the policy's."""
    problems = []
    if not same_space(env.single_observation_space, policy.observation_space):
        problems.append(
            f"observation space: env {env.single_observation_space} vs "
            f"policy {policy.observation_space}"
        )
    if not same_space(env.single_action_space, policy.action_space):
        problems.append(
            f"action space: env {env.single_action_space} vs policy {policy.action_space}"
        )
    if problems:
        raise ValueError(
            f"env {env_id} does not match the policy in checkpoint {checkpoint} "
            f"(trained on {getattr(policy, 'env_id', '?')}): " + "; ".join(problems)
        )
