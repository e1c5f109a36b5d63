"""The task registry: env ids -> batched classes, and their gymnasium registration."""

from __future__ import annotations

import importlib

# env id -> "module:Class" of its batched simulator. Imported lazily.
TASKS: dict[str, str] = {
    "recall/DelayedMatch-v0": "envs.delayed_match:DelayedMatch",
    "recall/NBack-v0": "envs.nback:NBack",
    "recall/HiddenObjects-v0": "envs.hidden_objects:HiddenObjects",
    "recall/Ballet-v0": "envs.ballet:Ballet",
    "recall/PassiveTMaze-v0": "envs.tmaze:PassiveTMaze",
    "recall/AssociativeRecall-v0": "envs.associative_recall:AssociativeRecall",
    "recall/RepeatFirst-v0": "envs.popgym_cards:RepeatFirst",
    "recall/RepeatPrevious-v0": "envs.popgym_cards:RepeatPrevious",
    "recall/CountRecall-v0": "envs.popgym_cards:CountRecall",
    "recall/Autoencode-v0": "envs.popgym_cards:Autoencode",
}


# MiniGrid's Memory rooms, served by envs.minigrid_memory through envs.make_vec only
# (gymnasium.make of these ids is MiniGrid's own env).
MINIGRID_ROOMS: tuple[str, ...] = ("S7", "S9", "S11", "S13", "S13Random", "S17Random")


def minigrid_id(room: str) -> str:
    """The env id of MiniGrid's Memory room ``room`` (``S11`` -> ``MiniGrid-MemoryS11-v0``)."""
    return f"MiniGrid-Memory{room}-v0"


def minigrid_room(env_id: str) -> str:
    """The room of a MiniGrid Memory id (``MiniGrid-MemoryS11-v0`` -> ``S11``)."""
    return env_id[len("MiniGrid-Memory"):-len("-v0")]


MINIGRID_IDS: tuple[str, ...] = tuple(minigrid_id(room) for room in MINIGRID_ROOMS)


def task_class(env_id: str):
    if env_id not in TASKS:
        known = ", ".join([*sorted(TASKS), *MINIGRID_IDS])
        hint = " (a MiniGrid id: use envs.make_vec)" if env_id in MINIGRID_IDS else ""
        raise ValueError(f"unknown env id {env_id!r}{hint}; known ids: {known}")
    module, name = TASKS[env_id].split(":")
    return getattr(importlib.import_module(module), name)


def register_envs() -> None:
    """Register every task as a single gymnasium env (numpy in and out).

    gymnasium calls this as a plugin while it is itself importing, and importing
    ``envs`` first imports gymnasium: so gymnasium is imported here, not at the
    top, and from the submodule that is complete by the time plugins load.
    """
    from gymnasium.envs.registration import register, registry

    for env_id in TASKS:
        if env_id not in registry:
            register(id=env_id, entry_point="envs.single:RecallEnv", kwargs={"env_id": env_id})
