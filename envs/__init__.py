"""Memory tasks as batched simulators over torch tensors.

``make_vec(env_id, num_envs, device, seed, **knobs)`` builds N copies stepped in
one call; ``gymnasium.make("recall/<Task>-v0", **knobs)`` builds one standard env.

This file imports nothing heavy: gymnasium loads ``envs.registration`` as a
plugin while it is itself still importing.
"""

from __future__ import annotations

from envs.registration import MINIGRID_IDS, TASKS, register_envs, task_class

register_envs()

ENV_IDS: tuple[str, ...] = tuple(TASKS)


def make_vec(env_id: str, num_envs: int, device="cpu", seed: int = 0, **task_kwargs):
    """N copies of ``env_id`` on ``device``; copy i's episodes depend only on (seed, i).

    ``env_id`` is a recall task (``ENV_IDS``) or a MiniGrid Memory room (``MINIGRID_IDS``).
    """
    if env_id in MINIGRID_IDS:
        from envs.minigrid_memory import MiniGridMemory

        return MiniGridMemory.create(env_id, num_envs=num_envs, device=device, seed=seed, **task_kwargs)
    return task_class(env_id).create(num_envs=num_envs, device=device, seed=seed, **task_kwargs)


def __getattr__(name: str):
    if name == "BatchedEnv":
        from envs.batched import BatchedEnv

        return BatchedEnv
    raise AttributeError(f"module 'envs' has no attribute {name!r}")


__all__ = ["BatchedEnv", "ENV_IDS", "MINIGRID_IDS", "TASKS", "make_vec", "register_envs", "task_class"]
