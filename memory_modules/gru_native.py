"""The C++ step loops of the GRU scan (``gru_loops.cpp``): built once per machine, then loaded.

:mod:`memory_modules.gru_sequence` runs its forward and backward recurrences with
these loops on CPU tensors (float or double) when they are here, and with its own
Python loops otherwise; the two give the same numbers up to rounding (the C++
file's exp and tanh are glibc's vector versions). A step of a PPO minibatch
(16-32 sequences, GRU-128) is then the recurrent matmul plus one pass over the
batch, where Python made five torch calls of a few microseconds each: the scan's
forward and backward take 0.6-0.8x the time (docs/benchmarks.md).

``loops()`` builds the file with torch's C++ extension tools (a C++ compiler, which
gcc and the Python headers on this project's machines provide, and ninja) into
``$RECALL_NATIVE_CACHE`` (default ``~/.cache/recall-rl/native``), under a name that
keys the source, the flags, torch's version and the CPU's vector capability: about
30 s the first time, milliseconds after (``make setup`` builds it). If the build
fails it warns once and returns None, and the Python loops run.
``RECALL_GRU_KERNEL=python`` turns the C++ loops off (to compare the two).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from types import ModuleType

import torch

SOURCE = Path(__file__).with_name("gru_loops.cpp")
CACHE_ENV = "RECALL_NATIVE_CACHE"
KERNEL_ENV = "RECALL_GRU_KERNEL"
KERNELS = ("native", "python")


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "recall-rl" / "native")


def _flags() -> tuple[list[str], list[str]]:
    """Compiler and linker flags. On glibc, ``-ffast-math`` lets gcc call libmvec's vector
    exp and tanh in the loops (scalar calls would cost more than the Python overhead saved);
    AVX2 and FMA where the CPU has them (the capability is part of the build's name).

    On x86, ``-mno-recip``: under ``-ffast-math`` gcc divides vectors by an approximate
    reciprocal and one Newton step, which put the sigmoid at 0.49999997 for 0, never at 1,
    and at NaN for 1 / (1 + inf) (a gate's pre-activation below -88 in float32), where
    the Python loops give 0.5, 1 and 0 (tests/test_gru_native.py)."""
    cflags, ldflags = ["-O3"], []
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        cflags += ["-ffast-math", "-fopenmp-simd"]
        ldflags += ["-lmvec"]
        if platform.machine() == "x86_64":
            cflags += ["-mno-recip"]
            if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
                cflags += ["-mavx2", "-mfma"]
    return cflags, ldflags


def build_name() -> str:
    cflags, ldflags = _flags()
    parts = (SOURCE.read_bytes(), cflags, ldflags, torch.__version__, platform.machine(),
             torch.backends.cpu.get_cpu_capability(), sys.version_info[:2])
    return "recall_gru_loops_" + hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def requested() -> str:
    kernel = os.environ.get(KERNEL_ENV, "native")
    if kernel not in KERNELS:
        raise ValueError(f"{KERNEL_ENV}={kernel!r}; accepted: {', '.join(KERNELS)}")
    return kernel


@functools.lru_cache(maxsize=1)
def loops() -> ModuleType | None:
    """The built extension (``forward_loop``, ``backward_loop``), or None: turned off, or
    the build failed (warned once)."""
    if requested() == "python":
        return None
    name = build_name()
    where = cache_dir() / name
    built = where / f"{name}.so"
    try:
        if not built.exists():
            return _build(name, where)
        spec = importlib.util.spec_from_file_location(name, built)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    except Exception as err:  # no compiler, no ninja, a broken cache: the Python loops run
        warnings.warn(f"the GRU scan's C++ loops are not available ({type(err).__name__}: "
                      f"{str(err).strip().splitlines()[-1] if str(err).strip() else err!r}); "
                      "using its Python loops (the same formulas, rounded differently; slower on the CPU)", stacklevel=2)
        return None


def _build(name: str, where: Path) -> ModuleType:
    from torch.utils import cpp_extension

    try:  # ninja from PyPI (a dependency) when the system has none on PATH
        import ninja

        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
    except ImportError:
        pass
    where.mkdir(parents=True, exist_ok=True)
    cflags, ldflags = _flags()
    print(f"recall-rl: building the GRU scan's C++ loops into {where} "
          "(once per machine, about 30 s)...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    module = cpp_extension.load(name, [str(SOURCE)], extra_cflags=cflags, extra_ldflags=ldflags,
                                build_directory=str(where), verbose=False)
    print(f"recall-rl: built in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return module


def available() -> bool:
    return loops() is not None


if __name__ == "__main__":  # python -m memory_modules.gru_native: build (or find) it, say which
    module = loops()
    print(f"GRU scan loops: {'C++, ' + str(cache_dir() / build_name()) if module else 'Python'}")
