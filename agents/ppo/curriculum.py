"""A success-gated curriculum over env knobs (``cfg.curriculum`` of a training run)."""

from __future__ import annotations

from typing import Any

from agents.common.checkpoint import same_space
from agents.common.config import env_with, make_env, to_dict


class Curriculum:
    """Optional success-gated curriculum over env knobs (``cfg.curriculum``).

    Over one knob: ``{knob: delay, values: [4, 8, 16, 32], threshold: 0.9}`` trains
    with delay 4 until the training success rate of an update reaches 0.9, then 8,
    and so on. Over several knobs at once: ``{stages: [{delay: 0, num_objects: 2},
    {delay: 0}, {delay: 4}, {}], threshold: 0.8}``: each stage is the env config with
    that stage's overrides. The last stage must be the env config itself (the task
    the run is evaluated on). The success rate is the logged one: no extra host sync.
    """

    def __init__(self, spec: Any, env_cfg: Any):
        self.env_base = to_dict(env_cfg)
        self.stage = 0
        self.active = bool(spec)
        self.knob: str | None = None
        self.stages: list[dict[str, Any]] = [{}]
        self._stage_cfgs = [dict(self.env_base)]
        if not self.active:
            return
        spec = to_dict(spec)
        self.threshold = float(spec.get("threshold", 0.9))
        if ("knob" in spec) == ("stages" in spec):
            raise ValueError("a curriculum has either `knob` and `values` or `stages`; "
                             f"got keys {sorted(spec)}")
        if "knob" in spec:
            self.knob = str(spec["knob"])
            self.stages = [{self.knob: v} for v in spec.get("values") or []]
        else:
            self.stages = [dict(stage or {}) for stage in spec["stages"]]
        if not self.stages:
            raise ValueError("the curriculum has no stages (curriculum.values is empty)")
        options = sorted(k for k in self.env_base if k != "id")
        for stage in self.stages:
            for knob in stage:
                if knob not in self.env_base or knob == "id":
                    raise ValueError(f"curriculum knob {knob!r} is not an env option; "
                                     f"env options: {options}")
        # Each stage's env config, made once (an id made from a knob follows it: env_with).
        self._stage_cfgs = [env_with(self.env_base, stage) for stage in self.stages]
        off = {k: v for k, v in self.stages[-1].items() if v != self.env_base[k]}
        if off:
            # The run is judged (final evaluation) on the env config: the curriculum must end there.
            k, v = next(iter(off.items()))
            raise ValueError(
                f"curriculum over {k} ends at {v} but env.{k}={self.env_base[k]}; "
                f"end the curriculum at {self.env_base[k]} or set curriculum=null"
            )

    def check_spaces(self, env) -> None:
        """Every stage must keep ``env``'s spaces (the policy is built once)."""
        for stage, stage_cfg in zip(self.stages, self._stage_cfgs, strict=True) if self.active else ():
            stage_env = make_env(stage_cfg, 1, "cpu", 0)
            if not (same_space(stage_env.single_observation_space, env.single_observation_space)
                    and same_space(stage_env.single_action_space, env.single_action_space)):
                raise ValueError(f"curriculum stage {_show(stage)} changes the env's spaces; "
                                 "a curriculum may only vary knobs that keep them")

    @property
    def value(self):
        """The knob's value in the current stage (one-knob form), else the stage number (1-based)."""
        return self.stages[self.stage][self.knob] if self.knob else self.stage + 1

    def knob_values(self) -> dict[str, Any]:
        """Every knob a stage varies, at its value in the current stage (for logging)."""
        varied = {k for stage in self.stages for k in stage}
        current = self._stage_cfgs[self.stage]
        return {k: current[k] for k in sorted(varied)}

    def env_cfg(self) -> dict[str, Any]:
        return dict(self._stage_cfgs[self.stage])  # without a curriculum: the env config itself

    def advance(self, success_rate: float) -> bool:
        """Move to the next stage when ``success_rate`` reaches the threshold."""
        if not self.active or self.stage + 1 >= len(self.stages):
            return False
        if success_rate < self.threshold:
            return False
        self.stage += 1
        return True

    def describe(self) -> str:
        n = len(self.stages)
        if self.knob:
            return f"{self.knob}={self.value} (stage {self.stage + 1}/{n})"
        return f"{_show(self.stages[self.stage]) or 'the task itself'} (stage {self.stage + 1}/{n})"


def _show(stage: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in stage.items())
