"""Swappable memory cores behind one interface (see ``memory_modules.base``).

``make_core(name, input_size, **cfg)`` builds a core by name; ``CORES`` lists
the names. Implementations are imported lazily so a core's module is only
loaded when it is used.
"""

from __future__ import annotations

import importlib
import inspect

from memory_modules.base import MemoryCore, Read, State, reset_state

# name -> (module, class). One module per core, named after it.
_REGISTRY: dict[str, tuple[str, str]] = {
    "mlp": ("memory_modules.mlp", "MLPCore"),
    "lstm": ("memory_modules.rnn", "LSTMCore"),
    "gru": ("memory_modules.rnn", "GRUCore"),
    "gtrxl": ("memory_modules.gtrxl", "GTrXLCore"),
    "hcam": ("memory_modules.hcam", "HCAMCore"),
    "rmc": ("memory_modules.rmc", "RMCCore"),
    "dtmem": ("memory_modules.dtmem", "DTMemCore"),
}
CORES: tuple[str, ...] = tuple(_REGISTRY)


def core_class(name: str) -> type[MemoryCore]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown core {name!r}; accepted: {', '.join(CORES)}")
    module, cls = _REGISTRY[name]
    return getattr(importlib.import_module(module), cls)


def core_options(name: str) -> dict[str, object]:
    """The config keys a core accepts, with their defaults."""
    params = inspect.signature(core_class(name).__init__).parameters
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {
        k: p.default
        for k, p in params.items()
        if p.kind in kinds and k not in ("self", "input_size")
    }

def make_core(name: str, input_size: int, **cfg) -> MemoryCore:
    """Build core ``name`` reading ``input_size`` features; unknown keys are an error."""
    cls = core_class(name)
    accepted = core_options(name)
    unknown = sorted(set(cfg) - set(accepted))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for core {name!r}; accepted: {sorted(accepted)}"
        )
    if not isinstance(input_size, int) or input_size < 1:
        raise ValueError(f"input_size must be a positive int, got {input_size!r}")
    return cls(input_size, **cfg)


__all__ = ["CORES", "MemoryCore", "Read", "State", "core_class", "core_options", "make_core", "reset_state"]
