"""One results row per training run: ``<run>/results.json``, read by ``agents.report``.

The row holds what a comparison across a sweep needs without opening the run's
other files: the env and its knobs, the core and its size, seed, env steps, wall
time, the final evaluation (greedy and sampled), and Cherepanov et al.'s (2024)
labels: the env configuration's correlation horizon xi, the agent's context K,
and whether the result is short-term (xi <= K) or long-term (xi > K) memory.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from agents.common.config import env_knobs, make_env, to_dict

RESULTS = "results.json"
EVAL_KEYS = ("success_rate", "mean_return", "episodes", "mean_length")


def memory_type(xi: float, K: float) -> str:
    return "short-term" if xi <= K else "long-term"


def json_number(x: float) -> float | str:
    # JSON has no infinity; "inf" reads back through float().
    return "inf" if math.isinf(x) else x


def eval_modes(ev: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """``{"greedy": {...}, "sampled": {...}}`` from the trainer's final evaluation.

    Accepts both shapes the trainer has returned: one dict per mode under
    ``greedy``/``sampled``, or a single greedy result at the top level.
    """
    if not ev:
        return {}
    modes = {m: ev[m] for m in ("greedy", "sampled") if isinstance(ev.get(m), dict)}
    if not modes and "success_rate" in ev:
        modes = {"greedy": ev}
    return {m: {k: r[k] for k in EVAL_KEYS if k in r} for m, r in modes.items()}


def _row(trainer, env_cfg, summary: dict[str, Any], K: float, **fields) -> dict[str, Any]:
    """The fields every row has; ``fields`` are the trainer's own, in between."""
    env = make_env(env_cfg, 1, "cpu", 0)
    try:
        xi = env.memory_horizon
    except NotImplementedError:  # an env of its own that does not state it: no labels
        xi = None
    started = getattr(trainer, "started", None)
    return {
        "run_dir": str(trainer.run_dir),
        "env": env_cfg["id"],
        "env_knobs": env_knobs(env_cfg),
        **fields,
        "wall_time_s": None if started is None else round(time.time() - started, 1),
        "eval": eval_modes(summary.get("eval")),
        "chance": getattr(env, "chance", None),
        "memory_horizon": xi,
        "context_length": json_number(K),
        "memory": None if xi is None else memory_type(xi, K),
    }


def results_row(trainer, summary: dict[str, Any]) -> dict[str, Any]:
    """The row of a PPO run (agents/ppo/trainer.py)."""
    cfg = trainer.cfg
    core_cfg = to_dict(cfg.core)
    core_name = core_cfg.pop("name")
    core = trainer.policy.core
    return _row(
        trainer, cfg.env, summary, core.context_length,
        algo="ppo",
        core=core_name,
        core_options=core_cfg,
        core_params=sum(p.numel() for p in core.parameters()),
        policy_params=sum(p.numel() for p in trainer.policy.parameters()),
        seed=int(cfg.seed),
        env_steps=int(trainer.global_step),
        updates=int(trainer.update),
        world_size=trainer.ranks.world_size,  # data-parallel ranks (agents.ppo.distributed)
        budget_steps=int(cfg.total_steps),
        resumed=bool(cfg.get("resume")),
        curriculum=to_dict(cfg.curriculum) if cfg.get("curriculum") else None,
        # the knob's value in the stage training ended in (the env's own value: reached);
        # under a curriculum of several knobs, the stage number (1-based)
        curriculum_value=trainer.curriculum.value if trainer.curriculum.active else None,
    )


def dt_results_row(trainer, summary: dict[str, Any]) -> dict[str, Any]:
    """The row of a decision-transformer run (agents/dt/trainer.py): offline, so no env
    steps; the model's context K is its window, unbounded with the working memory."""
    cfg, model = trainer.cfg, trainer.model
    spec = model.spec()
    return _row(
        trainer, trainer.env_cfg, summary, model.context_length,
        algo="dt",
        core="dt-mem" if model.uses_memory else "dt",
        core_options={k: spec[k] for k in ("context", "d_model", "n_layers", "n_heads",
                                           "memory_cfg", "timestep")},
        core_params=sum(p.numel() for p in model.parameters()),
        policy_params=sum(p.numel() for p in model.parameters()),
        seed=int(cfg.seed),
        env_steps=None,
        updates=int(trainer.update),
        budget_updates=int(trainer.updates),
        dataset=str(cfg.dataset),
        curriculum=None,
        curriculum_value=None,
    )


def write_results(trainer, summary: dict[str, Any], row_of=results_row) -> Path:
    """Write the run's row to ``<run>/results.json`` (the trainer calls this last)."""
    path = Path(trainer.run_dir) / RESULTS
    path.write_text(json.dumps(row_of(trainer, summary), indent=1) + "\n")
    return path


def read_results(path: Path) -> dict[str, Any]:
    row = json.loads(Path(path).read_text())
    row["context_length"] = float(row["context_length"])
    return row
