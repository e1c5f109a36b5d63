"""Run folders of a Hydra multirun: one sweep folder, one run folder per job named by
the overrides that vary across the sweep.

    python -m agents.train -m core=mlp,gru env=delayed_match env.delay=4,16 seed=0,1

writes ``runs/<name>/<sweep time>/multirun.yaml`` (Hydra's record of the sweep) and
``runs/<name>/<sweep time>/core=gru,env.delay=16,seed=1/`` (one run: config.yaml,
tb/, checkpoints/, results.json), so runs of a sweep are told apart in the file tree and
in TensorBoard, whose run names are these paths. ``env=delayed_match`` is the same in
every job and stays out of the name.

It also registers the few arithmetic resolvers a sweep config uses to derive one
run's settings from a swept knob (configs/sweep/horizon.yaml: the rollout holds two
whole episodes of ``env.delay + 2`` steps, the curriculum doubles the delay up to
``env.delay``): ``${recall.add:a,b}``, ``${recall.mul:a,b}``, ``${recall.div:a,b}``
(integer), ``${recall.min:a,b}`` and ``${recall.doubling:start,end}``
(``start, 2 start, ... < end, end``).
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf


def doubling(start: int, end: int):
    values, value = [], int(start)
    while value < end:
        values.append(value)
        value *= 2
    # a ListConfig, not a list: OmegaConf.resolve can only store containers of its own
    return OmegaConf.create([*values, int(end)])


for _name, _fn in (("add", lambda a, b: a + b), ("mul", lambda a, b: a * b),
                   ("div", lambda a, b: a // b), ("min", min), ("doubling", doubling)):
    OmegaConf.register_new_resolver(f"recall.{_name}", _fn, replace=True)


def _parse(lines: list[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(lines)


def _sweep_overrides(multirun_cfg) -> dict:
    """key -> its override in a sweep (command line and ``hydra.sweeper.params``)."""
    hydra_cfg = multirun_cfg.hydra
    params = OmegaConf.select(hydra_cfg, "sweeper.params") or {}
    # the command line wins over the config's params for the same key, as in the sweeper
    lines = [f"{key}={value}" for key, value in params.items()] + list(hydra_cfg.overrides.task)
    return {o.get_key_element().lstrip("+~"): o for o in _parse(lines)}


def swept_keys(multirun_cfg) -> set[str]:
    """Keys that take several values in a sweep."""
    return {key for key, o in _sweep_overrides(multirun_cfg).items() if o.is_sweep_override()}


def planned_jobs(multirun_cfg) -> int:
    """How many runs a (grid) sweep launches: the product of its value counts."""
    total = 1
    for o in _sweep_overrides(multirun_cfg).values():
        if o.is_sweep_override():
            total *= len(list(o.sweep_string_iterator()))
    return total


def job_name(task_overrides: list[str], swept: set[str] | None) -> str:
    """``key=value,...`` of a job's overrides whose key varies across the sweep, sorted
    (``swept=None``: a sweep of unknown shape, every override)."""
    parts = []
    for override in _parse(list(task_overrides)):
        key = override.get_key_element().lstrip("+~")
        if key.startswith("hydra.") or (swept is not None and key not in swept):
            continue
        value = override.get_value_element_as_str()
        if isinstance(override.value(), bool):
            value = value.lower()  # as typed: the sweeper hands a job memory=False
        # a path separator (a group option in a subfolder) would nest folders
        parts.append(f"{key}={value}".replace("/", "-"))
    return ",".join(sorted(parts))


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def sweep_run_dir() -> Path | None:
    """The run folder of the current multirun job; None outside a multirun."""
    from hydra.core.hydra_config import HydraConfig

    if not in_multirun():
        return None
    hc = HydraConfig.get()
    sweep_dir = Path(hc.sweep.dir)
    record = sweep_dir / "multirun.yaml"
    swept = swept_keys(OmegaConf.load(record)) if record.is_file() else None
    return sweep_dir / (job_name(list(hc.overrides.task), swept) or f"job{hc.job.num}")
