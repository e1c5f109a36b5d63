"""Checkpoints: model, optimizer, config, RNG states and counters in one file.

A checkpoint is written to a temporary file in the same folder and then
renamed over the old one (``os.replace`` is atomic), so a crash mid-write never
leaves a broken ``latest.pt``. The observation and action spaces are stored
too, so evaluating on an env that does not fit the policy is a clear error
rather than a shape error deep inside the encoder.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.pt"


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


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run dir (-> its latest checkpoint)."""
    path = Path(path)
    if path.is_dir():
        candidate = path / CHECKPOINT_DIR / LATEST
        if not candidate.is_file():
            raise FileNotFoundError(f"no checkpoint in run dir {path} (looked for {candidate})")
        return candidate
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    # Our own files: they hold gymnasium spaces and RNG states, so not weights-only.
    return torch.load(resolve_checkpoint(path), map_location=map_location, weights_only=False)


def policy_from_checkpoint(ckpt: dict[str, Any], device: str | torch.device = "cpu"):
    """Rebuild the policy stored in a loaded checkpoint, weights included."""
    from agents.config import make_policy

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
