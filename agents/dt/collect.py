"""Offline datasets: play batched envs with a policy and write a Minari dataset.

    python -m agents.collect env=<configs/env name | env id> policy=oracle episodes=N out=<dir>
        [epsilon=0.1] [idle=random|policy] [num_envs=256] [seed=0] [device=cpu]
        [name=<dataset id>] [env.<knob>=...]
    python -m agents.collect policy=<PPO checkpoint file or run dir> episodes=N out=<dir>

``policy=oracle`` plays ``env.oracle_actions()``; a checkpoint path plays that
PPO policy greedily (on its own env unless ``env=`` is given). ``epsilon`` is
the probability of a uniformly random action at each step.

``idle=random`` (the default) takes uniformly random actions at the steps where
the task ignores the action (DelayedMatch before the choice, NBack before step
n). The oracle of DelayedMatch answers with the hidden answer index at every
step, so an imitation learner fed its raw actions could copy the previous
action instead of remembering the cue; random idle actions remove that leak.
Each step's ``infos/decision`` records whether the action mattered there.

Nothing is fetched from a hub: the dataset is written with Minari's own API
(``minari.create_dataset_from_buffers``) under ``out/<dataset id>/``, with the
env id and knobs in its metadata (``recall_env``, JSON) and in its env spec,
so ``load_dataset(path)`` and ``dataset.recover_environment()`` rebuild the env.
Prints one JSON line: path, dataset id, episodes, steps, mean return, env and knobs.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

import envs
from agents.common.cli import env_config, json_command
from agents.common.config import env_knobs, make_env

IDLE_CHOICES = ("random", "policy")


# ------------------------------------------------------------------------ decision steps
def decision_mask(env) -> torch.Tensor | None:
    """Where the current step's action changes anything, for the tasks that say so; else None."""
    env_id = getattr(env, "env_id", "")
    if env_id == "recall/DelayedMatch-v0":
        return env.t == env.choice_step
    if env_id == "recall/NBack-v0":
        return env.t >= env.n
    return None


# ------------------------------------------------------------------------------- policies
class OraclePolicy:
    name = "oracle"

    def __init__(self, env):
        self.env = env

    def reset(self, num_envs: int, device) -> None:
        pass

    def __call__(self, obs, starts, prev_a, prev_r) -> torch.Tensor:
        return self.env.oracle_actions()


class CheckpointPolicy:
    """A trained PPO policy from a checkpoint, acting greedily with its recurrent state."""

    name = "ppo"

    def __init__(self, ckpt: dict, device):
        from agents.common.checkpoint import policy_from_checkpoint

        self.policy = policy_from_checkpoint(ckpt, device).eval()
        self.device = torch.device(device)

    def reset(self, num_envs: int, device) -> None:
        self.state = self.policy.initial_state(num_envs, device)

    def __call__(self, obs, starts, prev_a, prev_r) -> torch.Tensor:
        action, _, _, self.state = self.policy.act(obs, self.state, starts, prev_a, prev_r, True)
        return action


# ------------------------------------------------------------------------------ collection
@torch.no_grad()
def collect_episodes(
    env,
    policy,
    episodes: int,
    epsilon: float = 0.0,
    idle: str = "random",
    seed: int = 0,
    chunk: int = 128,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Play until copy i has finished its ``quota[i]`` episodes; Minari episode buffers.

    Steps are gathered on the device and cross to the host once per ``chunk`` steps.
    """
    if not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be an int >= 1, got {episodes!r}")
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon={epsilon!r} is out of range; accepted: 0.0..1.0")
    if idle not in IDLE_CHOICES:
        raise ValueError(f"idle={idle!r}; accepted: {', '.join(IDLE_CHOICES)}")
    if not isinstance(env.single_action_space, gym.spaces.Discrete):
        raise ValueError(
            f"collect supports Discrete action spaces only, got {env.single_action_space}"
        )
    n, device = env.num_envs, env.device
    n_actions = int(env.single_action_space.n)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed + 12_345)
    quota = np.full(n, episodes // n, dtype=np.int64)
    quota[: episodes % n] += 1

    obs, _ = env.reset()
    policy.reset(n, device)
    starts = torch.ones(n, dtype=torch.bool, device=device)
    prev_a = torch.zeros(n, dtype=torch.int64, device=device)
    prev_r = torch.zeros(n, dtype=torch.float32, device=device)
    # Per copy: the open episode's pieces (host arrays) and its finished episodes.
    open_eps: list[list[dict[str, np.ndarray]]] = [[] for _ in range(n)]
    done_eps: list[list[dict[str, Any]]] = [[] for _ in range(n)]
    finished = np.zeros(n, dtype=np.int64)
    bar = tqdm(total=episodes, unit="ep", disable=not progress, dynamic_ncols=True, desc="collect")
    while (finished < quota).any():
        rec: dict[str, list[torch.Tensor]] = {
            k: [] for k in ("obs", "action", "reward", "term", "trunc", "final", "decision")
        }
        for _ in range(chunk):
            action = policy(obs, starts, prev_a, prev_r)
            decision = decision_mask(env)
            random_a = torch.randint(n_actions, (n,), generator=gen, device=device)
            explore = torch.rand(n, generator=gen, device=device) < epsilon
            if decision is not None and idle == "random":
                explore = explore | ~decision
            action = torch.where(explore, random_a, action)
            rec["obs"].append(obs)
            rec["decision"].append(
                decision if decision is not None else torch.ones(n, dtype=torch.bool, device=device)
            )
            obs, reward, terminated, truncated, info = env.step(action)
            rec["action"].append(action)
            rec["reward"].append(reward)
            rec["term"].append(terminated)
            rec["trunc"].append(truncated)
            rec["final"].append(info["final_observation"])
            starts, prev_a, prev_r = terminated | truncated, action, reward
        host = {k: torch.stack(v).cpu().numpy() for k, v in rec.items()}  # [chunk, n, ...]
        for b in range(n):
            if finished[b] >= quota[b]:
                continue
            begin = 0
            for end in np.flatnonzero(host["term"][:, b] | host["trunc"][:, b]):
                open_eps[b].append({k: v[begin : end + 1, b] for k, v in host.items()})
                if finished[b] < quota[b]:
                    done_eps[b].append(_episode_buffer(open_eps[b]))
                    finished[b] += 1
                    bar.update(1)
                open_eps[b] = []
                begin = end + 1
            if begin < chunk:
                open_eps[b].append({k: v[begin:, b] for k, v in host.items()})
    bar.close()
    return [ep for per_copy in done_eps for ep in per_copy]


def _episode_buffer(pieces: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    cat = {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}
    observations = np.concatenate([cat["obs"], cat["final"][-1:]])
    return {
        "observations": observations,
        "actions": cat["action"].astype(np.int64),
        "rewards": cat["reward"].astype(np.float32),
        "terminations": cat["term"].astype(bool),
        "truncations": cat["trunc"].astype(bool),
        "infos": {"decision": cat["decision"].astype(bool)},
    }


# ------------------------------------------------------------------------------- storage
def env_spec(cfg: dict[str, Any]) -> gym.envs.registration.EnvSpec:
    """The registered single-env spec with the knobs as its kwargs (so Minari can rebuild it)."""
    import dataclasses

    spec = gym.spec(cfg["id"])
    return dataclasses.replace(spec, kwargs={**spec.kwargs, **env_knobs(cfg)})


def storage_space(space: gym.Space) -> gym.Space:
    """Minari 0.4 cannot serialize MultiDiscrete: store it as the integer Box of the same values.

    The env's own space comes back from the recreated env (``recall_env`` metadata).
    """
    if isinstance(space, gym.spaces.MultiDiscrete):
        start = getattr(space, "start", None)
        start = np.asarray(0 if start is None else start, dtype=np.int64)
        low = np.broadcast_to(start, space.nvec.shape).astype(np.int64)
        return gym.spaces.Box(low=low, high=low + space.nvec - 1, dtype=np.int64)
    return space


def write_dataset(
    out: str | Path,
    dataset_id: str,
    buffers: list[dict[str, Any]],
    cfg: dict[str, Any],
    env,
    extra: dict[str, Any],
):
    """Write ``buffers`` as Minari dataset ``dataset_id`` under ``out`` (nothing from a hub)."""
    import minari

    out = Path(out).resolve()
    if (out / dataset_id).exists():
        raise ValueError(f"dataset {dataset_id!r} already exists in {out}; pick another out= or name=")
    out.mkdir(parents=True, exist_ok=True)
    spec = env_spec(cfg) if cfg["id"] in envs.ENV_IDS else None
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(out)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # author/permalink/eval_env "recommended" notices
            dataset = minari.create_dataset_from_buffers(
                dataset_id=dataset_id,
                buffer=buffers,
                env=spec,
                eval_env=spec,
                algorithm_name=extra["policy"],
                author="recall-rl",
                observation_space=storage_space(env.single_observation_space),
                action_space=env.single_action_space,
            )
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old
    dataset.storage.update_metadata(
        {"recall_env": json.dumps(cfg), "recall_collect": json.dumps(extra)}
    )
    return out / dataset_id


def resolve_dataset_path(path: str | Path) -> Path:
    """A dataset dir (holding ``data/main_data.hdf5``), its ``data`` dir, or a folder with one."""
    path = Path(path)
    if (path / "main_data.hdf5").is_file():
        return path.parent
    if (path / "data" / "main_data.hdf5").is_file():
        return path
    if path.is_dir():
        found = sorted(p.parent.parent for p in path.glob("*/data/main_data.hdf5"))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise ValueError(f"{path} holds several datasets ({names}); name one of them")
    raise FileNotFoundError(f"no Minari dataset at {path} (looked for data/main_data.hdf5)")


def load_dataset(path: str | Path):
    """(MinariDataset, env config dict) of a dataset written by :func:`write_dataset`."""
    from minari import MinariDataset

    root = resolve_dataset_path(path)
    dataset = MinariDataset(root / "data")
    meta = dataset.storage.metadata
    if "recall_env" not in meta:
        raise ValueError(f"dataset {root} has no recall_env metadata (not written by agents.collect)")
    return dataset, json.loads(meta["recall_env"])


# ------------------------------------------------------------------------------------ CLI
def _collect(args: Any, choice: str | None) -> dict[str, Any]:
    device = str(args.get("device", "cpu"))
    seed = int(args.get("seed", 0))
    policy_arg = str(args.get("policy", "oracle"))
    if policy_arg == "oracle":
        cfg = env_config(args, choice)
        policy_cfg: Any = None
    else:
        from agents.common.checkpoint import load_checkpoint

        ckpt = load_checkpoint(policy_arg, map_location=device)
        if ckpt.get("kind", "ppo") != "ppo":
            raise ValueError(f"policy={policy_arg} is a {ckpt['kind']} checkpoint; "
                             "accepted: oracle or a PPO checkpoint")
        cfg = env_config(args, choice, ckpt["config"]["env"])
        policy_cfg = ckpt
    episodes = int(args.episodes)
    num_envs = int(args.get("num_envs", min(256, episodes)))
    env = make_env(cfg, num_envs, device, seed, final_observation=True)
    if policy_cfg is None:
        policy = OraclePolicy(env)
    else:
        from agents.common.checkpoint import check_env_fits

        policy = CheckpointPolicy(policy_cfg, device)
        check_env_fits(policy.policy, env, cfg["id"], policy_arg)
    epsilon = float(args.get("epsilon", 0.0))
    idle = str(args.get("idle", "random"))
    buffers = collect_episodes(env, policy, episodes, epsilon, idle, seed,
                               progress=bool(args.get("progress", True)))
    task = cfg["id"].split("/")[-1].split("-v")[0].lower()
    dataset_id = str(args.get("name", f"{task}-{policy.name}-v0"))
    extra = {"policy": policy_arg if policy_cfg is not None else "oracle",
             "epsilon": epsilon, "idle": idle, "seed": seed}
    path = write_dataset(args.out, dataset_id, buffers, cfg, env, extra)
    returns = np.array([ep["rewards"].sum() for ep in buffers])
    return {
        "path": str(path),
        "dataset_id": dataset_id,
        "episodes": len(buffers),
        "steps": int(sum(len(ep["actions"]) for ep in buffers)),
        "mean_return": float(returns.mean()),
        "env": cfg["id"],
        "env_knobs": env_knobs(cfg),
    }


def main(argv: list[str] | None = None) -> int:
    return json_command(sys.argv[1:] if argv is None else argv, __doc__, ("out", "episodes"),
                        _collect)


if __name__ == "__main__":
    sys.exit(main())
