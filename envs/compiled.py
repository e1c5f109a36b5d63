"""A batched env's step compiled into one program (``make_vec(..., compile=True)``).

``BatchedEnv._step_batch`` is a function of the env's tensors and the actions: the
task's hooks, the episode bookkeeping and the automatic reset, some 50-100
elementwise ops that eager torch runs one by one (a few microseconds of dispatch
each, and a fresh tensor each). Here it is traced once with ``torch.export`` (every
tensor attribute of the env an input, written back in place where the step
rebinds it; only the step's own results are outputs) and compiled by AOTInductor
into a shared library of fused loops, packaged in a ``.pt2`` file. Each step is
then one call into that library from Python, about 5 µs on top of the loops
themselves; ``torch.compile``'s own call path costs ~25 µs, as much as the whole
step of 1024 copies.

The package is cached under ``$RECALL_COMPILE_CACHE`` (default
``~/.cache/recall-rl/compiled``), keyed by the task, its knobs, the tensors' shapes
and dtypes, the device, the CPU's capability, torch's version and the source of
``envs/``: the first build takes tens of seconds (a C++ compiler must be present);
later ones load in milliseconds, after importing Inductor once per process (a few
seconds). When the build fails (no compiler, an op AOTInductor refuses), the env
warns once and steps eagerly; ``env.compile_info`` says which happened and how long
it took.

On the CPU alone by default. On an H200 (torch 2.11.0+cu130) the CUDA program
built, then loading it killed the process (a segfault inside ``aoti_load_package``,
which no ``except`` can catch), so an env on another device warns once and steps
eagerly unless ``RECALL_COMPILE_ANY_DEVICE=1``; the eager CUDA step already runs
DelayedMatch at 1.0 G steps/s over 1 M copies (docs/benchmarks.md).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import operator
import os
import platform
import time
import warnings
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)
CACHE_ENV = "RECALL_COMPILE_CACHE"
ANY_DEVICE_ENV = "RECALL_COMPILE_ANY_DEVICE"
# Attributes that change without changing the step's program.
_NOT_KNOBS = {"seed_value", "closed", "render_mode", "check_actions", "compile", "is_vector_env"}
# Inductor's options for the program. simdlen 1: plain scalar C++ loops, which the C++
# compiler vectorises itself. Inductor's own vector code for these integer steps
# (int64 hashes, gathers through a stack buffer per 16 lanes) ran DelayedMatch 2.5-3.8x
# slower on an AVX-512 Xeon (93 us against 37 us a step at 1024 copies; 1266 us against
# 333 us at 16384: benchmarks/compiled_step.py, docs/benchmarks.md).
INDUCTOR_CONFIGS = {"cpp.simdlen": 1}
_warned: set[str] = set()


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "recall-rl" / "compiled")


@functools.lru_cache(maxsize=1)
def _source_digest() -> str:
    """A digest of every module of ``envs`` (as first read): a change to a rule makes a new program."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _tensor_names(env) -> list[str]:
    return sorted(k for k, v in vars(env).items() if isinstance(v, torch.Tensor))


def program_key(env, names: list[str]) -> str:
    """What the compiled step depends on, as a file name."""
    knobs = sorted((k, repr(v)) for k, v in vars(env).items()
                   if isinstance(v, (bool, int, float, str, tuple)) and k not in _NOT_KNOBS)
    shapes = [(k, tuple(getattr(env, k).shape), str(getattr(env, k).dtype)) for k in names]
    # -march=native: a program runs on the kind of CPU that built it
    cpu = torch.backends.cpu.get_cpu_capability() + platform.machine()
    parts = (type(env).__module__, type(env).__qualname__, env.device.type, torch.__version__,
             cpu, env.final_observation, knobs, shapes, _source_digest(),
             sorted(INDUCTOR_CONFIGS.items()))
    digest = hashlib.sha256(repr(parts).encode()).hexdigest()[:20]
    return f"{type(env).__name__}-{env.num_envs}-{env.device.type}-{digest}"


class CompiledStep:
    """``env._step_batch`` as one compiled call; ``build`` makes (or loads) it."""

    def __init__(self, run, inputs: list[str], outputs: list, final_observation: bool):
        self._run = run
        self.final_observation = final_observation  # whether it makes the final observation
        # The program returns the step's outputs, ("out", i), in order (only the last, the
        # final observation, can be absent) and writes the new state into the env's own
        # tensors: no output per state tensor to allocate and wrap (at 1024 copies those
        # cost a sixth of the step).
        outputs = [(where, key) for where, key in outputs]  # JSON gives lists
        self._n = len(outputs)
        if outputs != [("out", i) for i in range(self._n)]:
            raise RuntimeError(f"the program's outputs are not the step's, in order: {outputs}")
        self._pad = (None,) * (9 - self._n)
        self._get = operator.attrgetter(*inputs) if len(inputs) > 1 else (
            lambda env: (getattr(env, inputs[0]),))

    @classmethod
    def build(cls, env) -> CompiledStep | bool:
        """The compiled step of ``env`` (from the cache when there), or False after one warning."""
        if env.device.type != "cpu" and os.environ.get(ANY_DEVICE_ENV) != "1":
            return _eager(env, f"{env.env_id}: compile=True is off on {env.device.type} (loading the "
                               "CUDA program crashed torch 2.11 on an H200); stepping eagerly; "
                               f"{ANY_DEVICE_ENV}=1 tries it")
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():  # torch's own deprecations inside export and load
                warnings.simplefilter("ignore", FutureWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
                step, source = cls._load_or_build(env)
        except Exception as err:  # no compiler, an unsupported op...: eager, said once
            return _eager(env, f"{env.env_id}: compile=True failed ({type(err).__name__}: "
                               f"{str(err).strip().splitlines()[0][:300] if str(err).strip() else ''}); "
                               "stepping eagerly")
        seconds = time.perf_counter() - start
        env.compile_info = {"compiled": True, "source": source, "seconds": seconds}
        log.info("%s x %d: compiled step %s in %.1f s", env.env_id, env.num_envs, source, seconds)
        return step

    @classmethod
    def _load_or_build(cls, env) -> tuple[CompiledStep, str]:
        import json

        from torch._inductor import aoti_compile_and_package, aoti_load_package

        _own_dense_tensors(env)
        names = _tensor_names(env)
        path = cache_dir() / f"{program_key(env, names)}.pt2"
        meta_path = path.with_suffix(".json")
        source = "cache"
        if not (path.exists() and meta_path.exists()):
            source = "built"
            program, outputs = _export(env, names)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.pt2")
            aoti_compile_and_package(program, package_path=str(tmp),
                                     inductor_configs=dict(INDUCTOR_CONFIGS))
            meta_tmp = meta_path.with_name(f"{meta_path.stem}.{os.getpid()}.tmp.json")
            meta_tmp.write_text(json.dumps({"inputs": names, "outputs": outputs}))
            os.replace(tmp, path)  # atomic: a concurrent build writes the same program
            os.replace(meta_tmp, meta_path)
        meta = json.loads(meta_path.read_text())
        if meta["inputs"] != names:
            raise RuntimeError(f"cached program {path} was built for other inputs")
        _quiet_isa_check()
        runner = aoti_load_package(str(path))
        loader = getattr(runner, "loader", None)
        run = loader.run if loader is not None else (lambda args: runner(*args))
        return cls(run, names, meta["outputs"], env.final_observation), source

    def __call__(self, env, actions: torch.Tensor) -> tuple:
        return (*self._run([actions.contiguous(), *self._get(env)]), *self._pad)


def _own_dense_tensors(env) -> None:
    """Make every tensor attribute of ``env`` dense and its own memory: the program
    reads them as dense arrays and writes the new state into them in place, which must
    not change another attribute (or a tensor the env shares with its caller) too."""
    seen: set[int] = set()
    for k in _tensor_names(env):
        v = getattr(env, k).contiguous()
        ptr = v.untyped_storage().data_ptr()
        if ptr in seen or v.untyped_storage().nbytes() != v.numel() * v.element_size():
            v = v.clone()  # a view, or memory another attribute holds
        seen.add(v.untyped_storage().data_ptr())
        setattr(env, k, v)


def _scalar_isa(record: logging.LogRecord) -> bool:
    """False for the load's note that the program was built for no vector ISA (simdlen 1)."""
    return not (record.msg.startswith("Device information mismatch for %s")
                and record.args and record.args[0] == "AOTI_CPU_ISA")


def _quiet_isa_check() -> None:
    """torch warns at every load that a scalar program's ISA differs from the CPU's:
    true, and meant (``INDUCTOR_CONFIGS``); the other mismatches still show."""
    logger = logging.getLogger("torch.export.pt2_archive._package")
    if _scalar_isa not in logger.filters:
        logger.addFilter(_scalar_isa)


def _eager(env, msg: str) -> bool:
    """Record why ``env`` steps eagerly, warn once per message, and return False."""
    if msg not in _warned:
        _warned.add(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=4)
    env.compile_info = {"compiled": False, "error": msg}
    return False


def _export(env, names: list[str]) -> tuple[Any, list]:
    """``env._step_batch`` as an exported program, and the labels of its outputs.

    Inputs: the actions and every tensor attribute (``names``). Outputs: the step's
    own (labelled ``("out", i)``), each a new tensor. Every attribute the step rebinds
    is written back into its input tensor (``copy_``), so the program updates the
    env's state in place.
    """
    saved = {k: getattr(env, k) for k in names}
    labels: list = []

    class Step(torch.nn.Module):
        def forward(self, actions, *tensors):
            for k, v in zip(names, tensors, strict=True):
                setattr(env, k, v)
            env.xp.inplace = False  # traced out of place; the writes back are the copy_ below
            try:
                out = env._step_batch(actions)
                new = sorted(set(_tensor_names(env)) - set(names))
                if new:
                    raise RuntimeError(f"the step made new tensor attributes {new}")
                values = [(("out", i), o) for i, o in enumerate(out) if o is not None]
                labels[:] = [label for label, _ in values]
                # an output must not be state the next step overwrites: copy any that is
                # an input or a view of one
                outs = tuple(o.clone() if any(o is v for v in tensors) or o._is_view() else o
                             for _, o in values)
                for k, v in zip(names, tensors, strict=True):
                    now = getattr(env, k)
                    if now is not v:
                        if (now.shape, now.dtype) != (v.shape, v.dtype):
                            raise RuntimeError(f"the step changes {k} from {v.dtype}{list(v.shape)} "
                                               f"to {now.dtype}{list(now.shape)}")
                        v.copy_(now)
                return outs
            finally:  # the env as it was: no traced tensor stays behind
                env.xp.inplace = True
                for k in set(_tensor_names(env)) - set(names):
                    delattr(env, k)
                for k, v in saved.items():
                    setattr(env, k, v)

    example = torch.zeros(env.num_envs, dtype=torch.int64, device=env.device)
    with torch.no_grad():
        program = torch.export.export(Step(), (example, *[saved[k] for k in names]), strict=False)
    return program, list(labels)
