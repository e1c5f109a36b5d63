"""Command-line glue of the ``key=value`` tools: evaluate, dt_eval, record and collect.

``python -m agents.<tool> key=value ... [env=<configs/env name or env id>] [env.<knob>=v]``:
the arguments are an OmegaConf dotlist, ``env=<name>`` kept apart. A tool prints
one JSON line and exits 0; bad input prints ``error: ...`` and exits 1; missing
required arguments print the tool's usage and exit 2.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from agents.common.config import CONFIG_DIR, compose, load_env_config, to_dict
from agents.common.device import check_device


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
        if "device" in args:
            check_device(args.device)
        result = work(args, choice)
    except EXPECTED_ERRORS as err:
        return report(err)
    print(json.dumps(result), flush=True)
    return 0


# Bad input of every kind a user can fix (CheckpointError and the env and config errors
# are ValueErrors): one line, not a traceback.
EXPECTED_ERRORS = (ValueError, FileNotFoundError)


def report(err: BaseException, status: int = 1) -> int:
    """Print ``error: <err>`` on stderr; returns the exit status."""
    print(f"error: {err}", file=sys.stderr, flush=True)
    return status


def one_line_errors(main: Callable[..., int]) -> Callable[..., int]:
    """Wrap a CLI ``main``: expected errors become one ``error:`` line and exit status 1."""
    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except EXPECTED_ERRORS as err:
            return report(err)
    return wrapped


def check_hydra_args(argv: Sequence[str], config_name: str, groups: Sequence[str]) -> DictConfig | None:
    """Compose the config as the Hydra app will, so that a bad override (an unknown key or
    config name, a syntax error) is one ValueError line instead of Hydra's report.

    Returns the composed config, Hydra's settings under ``hydra`` (what ``single_run``
    starts a job from); None when Hydra's own flags (``-m``, ``--cfg``...) leave it to Hydra."""
    check_group_choices(argv, groups)
    if any(arg.startswith("-") for arg in argv):
        return None
    from hydra.errors import HydraException

    try:
        return compose(list(argv), config_name, return_hydra_config=True)
    except HydraException as err:
        text = str(err).split("\n\n")[0].split("Config search path")[0]
        raise ValueError(" ".join(line.strip() for line in text.splitlines() if line.strip())
                         ) from None


def single_run(argv: Sequence[str], composed: DictConfig | None) -> DictConfig | None:
    """The job config of a plain run (no Hydra flag, no ``hydra.*`` override), started here
    from ``check_hydra_args``'s config; None where ``@hydra.main`` must start it.

    ``@hydra.main`` would compose the same config twice more (to choose run or multirun,
    then to run): a one-update run's median start went from 3.04 to 2.91 s on this CPU
    (docs/benchmarks.md). What it would do for a plain run
    with this project's settings (run dir ``.``, no chdir, no output subdir) is done here:
    ``HydraConfig`` set in run mode, logging as ``hydra/job_logging`` says, and the
    ``hydra`` node dropped."""
    if composed is None or any(arg.lstrip("+~").startswith("hydra") for arg in argv):
        return None
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import configure_log
    from hydra.types import RunMode
    from omegaconf import open_dict, read_write

    with read_write(composed.hydra):
        composed.hydra.mode = RunMode.RUN
    # HydraConfig.get() answers as in a run of @hydra.main (and no longer with the
    # settings of an earlier multirun in this process: agents.common.sweep.in_multirun)
    HydraConfig.instance().set_config(composed)
    configure_log(composed.hydra.job_logging, composed.hydra.verbose)
    with read_write(composed), open_dict(composed):
        del composed["hydra"]
    return composed


def launch(run: Callable[[DictConfig, list[str]], dict[str, Any]], config_name: str,
           composed: DictConfig | None, expected: tuple[type[BaseException], ...]) -> None:
    """A trainer's command: ``run(cfg, overrides)`` once for a plain run (composed once, by
    ``check_hydra_args``), else under ``@hydra.main`` (sweeps, Hydra's flags).

    An ``expected`` error is one line and exit status 1; inside a sweep it is raised, so
    the sweep marks that job failed and runs the rest. A run stopped by a signal exits
    with its status (128 + the signal's number)."""
    from agents.common.sweep import in_multirun

    def job(cfg: DictConfig, overrides: list[str]) -> None:
        try:
            summary = run(cfg, overrides)
        except expected as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            if in_multirun():
                raise
            sys.exit(1)
        if summary["interrupted"] and not in_multirun():
            sys.exit(summary.get("exit_status", 130))

    cfg = single_run(sys.argv[1:], composed)
    if cfg is not None:
        job(cfg, list(sys.argv[1:]))
        return
    import hydra
    from hydra.core.hydra_config import HydraConfig

    # The config path is absolute and the job's name set in the config (hydra.job.name),
    # so neither depends on where this function lives.
    @hydra.main(version_base=None, config_path=str(CONFIG_DIR), config_name=config_name)
    def _app(cfg: DictConfig) -> None:
        job(cfg, list(HydraConfig.get().overrides.task))

    _app()


def check_group_choices(argv: Sequence[str], groups: Sequence[str]) -> None:
    """A ValueError naming the accepted configs for a ``<group>=<name>`` with no
    ``configs/<group>/<name>.yaml`` (Hydra's own message spans a dozen lines)."""
    for arg in argv:
        key, eq, value = arg.partition("=")
        group = key.lstrip("+~")
        if not eq or group not in groups:
            continue
        known = sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
        unknown = [v for v in value.split(",") if v not in (*known, "null")]  # "," sweeps
        if unknown:
            raise ValueError(f"{group}={unknown[0]}: no such config in configs/{group}/; "
                             f"accepted: {', '.join(known)}")
