"""Command-line glue of the ``key=value`` tools: evaluate, dt_eval, record and collect.

``python -m agents.<tool> key=value ... [env=<configs/env name or env id>] [env.<knob>=v]``:
the arguments are an OmegaConf dotlist, ``env=<name>`` kept apart. A tool prints
one JSON line and exits 0; bad input prints ``error: ...`` and exits 1; missing
required arguments print the tool's usage and exit 2.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from agents.config import load_env_config, to_dict


def parse_args(argv: Sequence[str]) -> tuple[DictConfig, str | None]:
    """``key=value`` arguments; ``env=<name>`` is returned apart."""
    choice, rest = None, []
    for arg in argv:
        if arg.startswith("env="):
            choice = arg[len("env="):]
        else:
            rest.append(arg)
    return OmegaConf.from_dotlist(rest), choice


def env_config(args: Any, choice: str | None, saved: dict[str, Any] | None = None) -> dict[str, Any]:
    """The env a command line names, as ``{"id": ..., knob: value}``.

    ``env=<choice>`` is a configs/env file or a bare env id (its default knobs); without
    it, ``saved`` (a checkpoint's env). ``env.<knob>=`` arguments override either.
    """
    if choice is not None:
        cfg: dict[str, Any] = to_dict(load_env_config(choice))
    elif saved is not None:
        cfg = dict(saved)
    else:
        raise ValueError("env=<configs/env name or env id> is required here "
                         "(there is no checkpoint to take the env from)")
    cfg.update(to_dict(args.get("env") or {}))
    return cfg


def json_command(
    argv: Sequence[str],
    usage: str,
    required: Sequence[str],
    work: Callable[[DictConfig, str | None], dict[str, Any]],
) -> int:
    """Run ``work(args, env_choice)`` and print its result as one JSON line; the exit code."""
    args, choice = parse_args(argv)
    if any(key not in args for key in required):
        print(usage, file=sys.stderr)
        return 2
    try:
        result = work(args, choice)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result), flush=True)
    return 0
