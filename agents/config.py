"""From a Hydra config to the objects of a run: env, policy, PPO settings.

The config tree (``configs/``): ``env`` (``id`` plus the task's knobs),
``core`` (``name`` plus the core's options), ``algo`` (the fields of
:class:`agents.ppo.PPOConfig`), ``policy`` (encoder options and
``prev_action_reward``), and top-level run settings.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import gymnasium  # noqa: F401  (imported before envs: gymnasium loads envs as a plugin)
from omegaconf import DictConfig, OmegaConf

import envs
from agents.policy import Policy
from agents.ppo import PPOConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
ENCODER_KEYS = ("embed_dim", "hidden_size", "mlp_layers", "cnn_channels", "share_embeddings")


def compose(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The training config with command-line style overrides, without starting a Hydra app."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return hydra_compose(config_name="config", overrides=list(overrides))


def to_dict(node: Any) -> dict[str, Any]:
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]
    return dict(node)


def env_knobs(env_cfg: Any) -> dict[str, Any]:
    knobs = to_dict(env_cfg)
    knobs.pop("id")
    return knobs


def make_env(env_cfg: Any, num_envs: int, device: str, seed: int, **kwargs):
    """The batched env of ``env_cfg`` (``id`` + knobs); trainers pass check_actions=False."""
    return envs.make_vec(
        env_cfg["id"], num_envs, device=device, seed=seed, **kwargs, **env_knobs(env_cfg)
    )


def load_env_config(name: str) -> DictConfig:
    """``configs/env/<name>.yaml``, for ``env=<name>`` on the evaluate/record command lines."""
    path = CONFIG_DIR / "env" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (CONFIG_DIR / "env").glob("*.yaml"))
        raise ValueError(f"unknown env config {name!r}; known: {', '.join(known)}")
    return OmegaConf.load(path)


def policy_spec(cfg: Any, env) -> dict[str, Any]:
    """Everything needed to rebuild the policy (stored in checkpoints)."""
    core_cfg = to_dict(cfg["core"])
    core = core_cfg.pop("name")
    pol = to_dict(cfg["policy"])
    return {
        "observation_space": env.single_observation_space,
        "action_space": env.single_action_space,
        "core": core,
        "core_cfg": core_cfg,
        "encoder_cfg": {k: pol[k] for k in ENCODER_KEYS if k in pol},
        "prev_action_reward": bool(pol.get("prev_action_reward", False)),
        "head_hidden": int(pol.get("head_hidden", 128)),
    }


def make_policy(spec: dict[str, Any]) -> Policy:
    return Policy(
        spec["observation_space"],
        spec["action_space"],
        core=spec["core"],
        core_cfg=spec["core_cfg"],
        encoder_cfg=spec["encoder_cfg"],
        prev_action_reward=spec["prev_action_reward"],
        head_hidden=spec.get("head_hidden", 128),
    )


def ppo_config(algo_cfg: Any) -> PPOConfig:
    values = to_dict(algo_cfg)
    names = {f.name for f in dataclasses.fields(PPOConfig)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown algo option(s) {unknown}; accepted: {sorted(names)}")
    return PPOConfig(**values)
