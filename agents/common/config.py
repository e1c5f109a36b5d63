"""From a Hydra config to the objects of a run: env, policy, PPO settings.

The config tree (``configs/``): ``env`` (``id`` plus the task's knobs),
``core`` (``name`` plus the core's options), ``algo`` (the fields of
:class:`agents.ppo.learner.PPOConfig`), ``policy`` (encoder options and
``prev_action_reward``), and top-level run settings.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import gymnasium  # noqa: F401  (imported before envs: gymnasium loads envs as a plugin)
from omegaconf import DictConfig, OmegaConf

import envs
from agents.ppo.learner import PPOConfig
from agents.ppo.policy import Policy
from envs.registration import minigrid_room

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
ENCODER_KEYS = ("embed_dim", "hidden_size", "mlp_layers", "cnn_channels", "share_embeddings",
                "grid_trunk", "symbols")


def compose(overrides: list[str] | tuple[str, ...] = (), config_name: str = "config",
            return_hydra_config: bool = False) -> DictConfig:
    """The training config with command-line style overrides, without starting a Hydra app
    (with ``return_hydra_config``, Hydra's own settings too, under ``hydra``)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return hydra_compose(config_name=config_name, overrides=list(overrides),
                             return_hydra_config=return_hydra_config)


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


def env_names() -> list[str]:
    """The task configs ``configs/env/<name>.yaml``: what ``env=<name>`` accepts."""
    return sorted(p.stem for p in (CONFIG_DIR / "env").glob("*.yaml"))


def _env_ids_by_name() -> dict[str, str]:
    ids = {}
    for name in env_names():
        env_id = str(OmegaConf.load(CONFIG_DIR / "env" / f"{name}.yaml")["id"])
        if "${" not in env_id:  # MiniGrid's id follows its room knob
            ids[env_id] = name
    return ids


def env_choice(choice: str) -> tuple[str, dict[str, Any]]:
    """``env=<choice>`` -> (config name, knob overrides): a config name or an env id.

    A MiniGrid Memory id picks ``minigrid_memory`` with that room. Anything else is a
    ValueError listing the accepted names and ids.
    """
    if choice in env_names():
        return choice, {}
    by_id = _env_ids_by_name()
    if choice in by_id:
        return by_id[choice], {}
    if choice in envs.MINIGRID_IDS:
        return "minigrid_memory", {"room": minigrid_room(choice)}
    raise ValueError(
        f"unknown env {choice!r}; accepted names: {', '.join(env_names())}; "
        f"or ids: {', '.join(dict.fromkeys([*by_id, *envs.MINIGRID_IDS]))}"
    )


def load_env_config(choice: str) -> DictConfig:
    """The env config ``env=<choice>`` names (configs/env name or env id), ``id`` resolved."""
    return _task_config(*env_choice(choice))


def env_with(env_cfg: Any, knobs: dict[str, Any]) -> dict[str, Any]:
    """The env config with ``knobs`` set; an id the task's config makes from a knob
    (MiniGrid's ``id: MiniGrid-Memory${.room}-v0``) follows that knob."""
    cfg = {**to_dict(env_cfg), **knobs}
    name, _ = env_choice(str(cfg["id"]))
    return to_dict(_task_config(name, {k: v for k, v in cfg.items() if k != "id"}))


def _task_config(name: str, knobs: dict[str, Any]) -> DictConfig:
    """configs/env/<name>.yaml with ``knobs`` set, then resolved (so the id follows them)."""
    cfg = OmegaConf.merge(OmegaConf.load(CONFIG_DIR / "env" / f"{name}.yaml"), knobs)
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))


def env_knob_names(choice: str) -> list[str]:
    """The knobs the task config ``choice`` (a configs/env name or an env id) holds."""
    cfg = load_env_config(choice)
    return sorted(k for k in cfg if k != "id")


def check_env_knobs(env_cfg: Any) -> None:
    """A knob the task's own config does not hold (say one left by another task) is an error."""
    cfg = to_dict(env_cfg)
    accepted = env_knob_names(str(cfg["id"]))
    foreign = sorted(k for k in cfg if k != "id" and k not in accepted)
    if foreign:
        raise ValueError(
            f"env {cfg['id']} has no knob(s) {', '.join(foreign)}; accepted: {', '.join(accepted)}"
        )


def policy_spec(cfg: Any, env) -> dict[str, Any]:
    """Everything needed to rebuild the policy (stored in checkpoints)."""
    core_cfg = to_dict(cfg["core"])
    core = core_cfg.pop("name")
    pol = to_dict(cfg["policy"])
    encoder_cfg = {k: pol[k] for k in ENCODER_KEYS if k in pol}
    if getattr(env, "symbol_counts", None):  # an image of ids (MiniGrid): embed, not scale
        encoder_cfg["symbol_counts"] = list(env.symbol_counts)
    if getattr(env, "symbol_grid", None) and pol.get("grid_view", True):  # a view inside a flat obs
        encoder_cfg["symbol_grid"] = list(env.symbol_grid)
    return {
        "observation_space": env.single_observation_space,
        "action_space": env.single_action_space,
        "core": core,
        "core_cfg": core_cfg,
        "encoder_cfg": encoder_cfg,
        "prev_action_reward": bool(pol.get("prev_action_reward", False)),
        "head_hidden": int(pol.get("head_hidden", 128)),
        "predict_next_obs": float(cfg["algo"].get("next_obs_coef", 0.0) or 0.0) > 0,
        "oracle_critic": bool(pol.get("oracle_critic", False)),
        "core_norm": bool(pol.get("core_norm", False)),
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
        predict_next_obs=spec.get("predict_next_obs", False),
        oracle_critic=spec.get("oracle_critic", False),
        core_norm=spec.get("core_norm", False),
    )


def ppo_config(algo_cfg: Any) -> PPOConfig:
    values = to_dict(algo_cfg)
    names = {f.name for f in dataclasses.fields(PPOConfig)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown algo option(s) {unknown}; accepted: {sorted(names)}")
    return PPOConfig(**values)


def _default_env(args: list[str]) -> str:
    """The env config a training command line runs when it names none: its experiment's
    (or its sweep's)."""
    for arg in args:
        key, _, val = arg.partition("=")
        if key.lstrip("+") in ("experiment", "sweep") and val and "," not in val:
            path = CONFIG_DIR / key.lstrip("+") / f"{val}.yaml"
            if path.is_file():
                for item in OmegaConf.load(path).get("defaults", []):
                    if isinstance(item, DictConfig) and "override /env" in item:
                        return str(item["override /env"])
    defaults = OmegaConf.load(CONFIG_DIR / "config.yaml")["defaults"]
    return next(str(d["env"]) for d in defaults if isinstance(d, DictConfig) and "env" in d)


def env_overrides(args: list[str]) -> list[str]:
    """Training overrides with every ``env=`` (and ``env.id=``) choice made a config name.

    ``env=<env id>`` becomes ``env=<its config>`` (plus ``env.room=`` for a MiniGrid
    room), so ids and names both work; an unknown env, or an ``env.<knob>=`` the chosen
    task does not have, is a ValueError naming what is accepted (Hydra's own message is
    a multi-line traceback hint, and a knob added with ``+`` would reach the task).
    """
    out, chosen, knobs = [], [], []
    for arg in args:
        key, eq, val = arg.partition("=")
        bare = key.lstrip("+")
        if eq and bare in ("env", "env.id"):
            names = []
            for item in val.split(","):
                name, extra = env_choice(item)
                if extra and "," in val:
                    raise ValueError(f"env={val}: sweep MiniGrid rooms with "
                                     f"env=minigrid_memory env.room=<rooms>")
                names.append(name)
                out += [f"env.{k}={v}" for k, v in extra.items()]
            chosen = names
            out.append(f"env={','.join(names)}")
        elif eq and bare.startswith("env.") and not key.startswith("~"):
            knobs.append((arg, bare[len("env."):].split(".", 1)[0]))
            out.append(arg)
        else:
            out.append(arg)
    for name in chosen or [_default_env(args)]:
        accepted = env_knob_names(name)
        for arg, knob in knobs:
            if knob not in accepted:
                raise ValueError(f"{arg}: env {name} has no knob {knob!r}; "
                                 f"accepted: {', '.join(accepted)}")
    # A plain `env.<knob>=` for a knob the task has: `+` is not needed, and `+` on a key
    # that exists is an error in Hydra.
    return [a[a.index("env."):] if a.lstrip("+").startswith("env.") and a.startswith("+")
            else a for a in out]
