"""A success-gated curriculum over one env knob (``cfg.curriculum`` of a training run)."""

from __future__ import annotations

from typing import Any

from agents.checkpoint import same_space
from agents.config import make_env, to_dict


class Curriculum:
    """Optional success-gated curriculum over one env knob (``cfg.curriculum``).

    ``{knob: delay, values: [4, 8, 16, 32], threshold: 0.9}`` trains with delay 4
    until the training success rate of an update reaches 0.9, then 8, and so on.
    The last value must be the env config's own value: the task the run is
    evaluated on. The success rate is the logged one: no extra host sync.
    """

    def __init__(self, spec: Any, env_cfg: Any):
        self.env_base = to_dict(env_cfg)
        self.stage = 0
        self.active = bool(spec)
        if not self.active:
            return
        spec = to_dict(spec)
        self.knob = str(spec["knob"])
        self.values = list(spec["values"])
        self.threshold = float(spec.get("threshold", 0.9))
        if self.knob not in self.env_base:
            raise ValueError(f"curriculum knob {self.knob!r} is not an env option; "
                             f"env options: {sorted(k for k in self.env_base if k != 'id')}")
        if not self.values:
            raise ValueError("curriculum.values is empty")
        target = self.env_base[self.knob]
        if self.values[-1] != target:
            # The run is judged (final evaluation) on the env config: the curriculum must end there.
            raise ValueError(
                f"curriculum over {self.knob} ends at {self.values[-1]} but env.{self.knob}="
                f"{target}; end the curriculum at {target} or set curriculum=null"
            )

    def check_spaces(self, env) -> None:
        """Every stage must keep ``env``'s spaces (the policy is built once)."""
        for value in self.values if self.active else ():
            stage = make_env({**self.env_base, self.knob: value}, 1, "cpu", 0)
            if not (same_space(stage.single_observation_space, env.single_observation_space)
                    and same_space(stage.single_action_space, env.single_action_space)):
                raise ValueError(f"curriculum {self.knob}={value} changes the env's spaces; "
                                 "a curriculum may only vary knobs that keep them")

    @property
    def value(self):
        return self.values[self.stage]

    def env_cfg(self) -> dict[str, Any]:
        if not self.active:
            return dict(self.env_base)
        return {**self.env_base, self.knob: self.value}

    def advance(self, success_rate: float) -> bool:
        """Move to the next stage when ``success_rate`` reaches the threshold."""
        if not self.active or self.stage + 1 >= len(self.values):
            return False
        if success_rate < self.threshold:
            return False
        self.stage += 1
        return True

    def describe(self) -> str:
        return f"{self.knob}={self.value} (stage {self.stage + 1}/{len(self.values)})"
