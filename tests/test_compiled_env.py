"""make_vec(..., compile=True): the step as one AOTInductor program (envs/compiled.py).

The compiled step must give exactly what the eager step gives. Building a
program takes tens of seconds, so the programs are cached in pytest's cache
folder (``.pytest_cache``) across runs; the default suite compiles DelayedMatch
(the benchmark task) and one card task, and ``RECALL_COMPILE_TESTS=all`` adds
every task. Without a C++ compiler the tests that need a program are skipped;
the fallback is tested either way.
"""

from __future__ import annotations

import logging
import os
import warnings

import pytest
import torch
from test_env_contract import small

import envs
from envs import compiled

ALL = os.environ.get("RECALL_COMPILE_TESTS") == "all"
CASES = [("recall/DelayedMatch-v0", {"delay": 5}), ("recall/CountRecall-v0", {})]
if ALL:
    CASES += [(i, small(i)) for i in envs.ENV_IDS if (i, small(i)) not in CASES]
    CASES += [("recall/Ballet-v0", {"pixels": True}),
              ("recall/HiddenObjects-v0", {"full_view": True, "delay": 3})]


@pytest.fixture
def cache(request, monkeypatch):
    folder = request.config.cache.mkdir("recall-compiled")
    monkeypatch.setenv(compiled.CACHE_ENV, str(folder))
    return folder


def compiled_env(env_id, n, **knobs):
    env = envs.make_vec(env_id, n, compile=True, **knobs)
    env.reset(seed=3)
    env.step(torch.zeros(n, dtype=torch.int64))  # builds (or loads) the program
    if not env.compile_info["compiled"]:
        pytest.skip(f"no compiled step here: {env.compile_info['error']}")
    return env


def step_both(eager, comp, actions):
    out_e, out_c = eager.step(actions), comp.step(actions)
    for a, b in zip(out_e[:4], out_c[:4], strict=True):
        assert torch.equal(a, b)
    assert out_e[4].keys() == out_c[4].keys()
    for k in out_e[4]:
        assert torch.equal(out_e[4][k], out_c[4][k]), k
    return [*out_c[:4], *out_c[4].values()]


@pytest.mark.parametrize("env_id,knobs", CASES, ids=[c[0] for c in CASES])
def test_compiled_step_equals_eager(cache, env_id, knobs):
    n = 16
    comp = compiled_env(env_id, n, final_observation=True, **knobs)
    eager = envs.make_vec(env_id, n, final_observation=True, **knobs)
    eager.reset(seed=3)
    eager.step(torch.zeros(n, dtype=torch.int64))
    gen = torch.Generator().manual_seed(0)
    done = 0
    state = {k: getattr(comp, k) for k in compiled._tensor_names(comp)}
    held, copies = [], []
    for i in range(200):
        actions = torch.randint(0, eager.single_action_space.n, (n,), generator=gen)
        if i % 2:
            actions = eager.oracle_actions()
        for h, c in zip(held, copies, strict=True):  # the last step's outputs, unchanged
            assert torch.equal(h, c)
        held = step_both(eager, comp, actions)
        copies = [h.clone() for h in held]
        done += int(comp.t.eq(0).sum())
    # the program wrote the new state into the env's own tensors
    assert all(getattr(comp, k) is v for k, v in state.items())
    assert done >= n  # every copy ended an episode and restarted inside the program
    for k, v in eager.state_dict()["tensors"].items():
        assert torch.equal(v, comp.state_dict()["tensors"][k]), k


def test_a_second_env_loads_the_program_from_the_cache(cache, caplog):
    compiled_env("recall/DelayedMatch-v0", 16, delay=5, final_observation=True)
    with caplog.at_level(logging.WARNING):
        again = compiled_env("recall/DelayedMatch-v0", 16, delay=5, final_observation=True)
    assert again.compile_info["source"] == "cache"
    assert any(cache.glob("DelayedMatch-16-*.pt2"))
    # the program is scalar C++ on purpose: torch's note that its ISA is not the CPU's is not shown
    assert not [r for r in caplog.records if "AOTI_CPU_ISA" in r.getMessage()]


def test_the_isa_filter_keeps_other_mismatches():
    def record(*args):
        return logging.LogRecord("torch", logging.WARNING, __file__, 1,
                                 "Device information mismatch for %s: %s vs %s. ", args, None)

    assert not compiled._scalar_isa(record("AOTI_CPU_ISA", "AVX512", "INVALID_VEC_ISA"))
    assert compiled._scalar_isa(record("AOTI_DEVICE_KEY", "a", "b"))


def test_state_dict_resume(cache):
    n, knobs = 16, {"delay": 5}
    comp = compiled_env("recall/DelayedMatch-v0", n, final_observation=True, **knobs)
    eager = envs.make_vec("recall/DelayedMatch-v0", n, final_observation=True, **knobs)
    eager.load_state_dict(comp.state_dict())
    gen = torch.Generator().manual_seed(2)
    for _ in range(30):
        step_both(eager, comp, torch.randint(0, 4, (n,), generator=gen))
    comp.load_state_dict(eager.state_dict())  # the program is rebuilt from the cache
    for _ in range(30):
        step_both(eager, comp, torch.randint(0, 4, (n,), generator=gen))
    assert comp.compile_info["source"] == "cache"


def test_switching_final_observation_makes_another_program(monkeypatch):
    built = []

    class Eager:
        def __init__(self, env):
            self.final_observation = env.final_observation

        def __call__(self, env, actions):
            return env._step_batch(actions)

    monkeypatch.setattr(compiled.CompiledStep, "build",
                        classmethod(lambda cls, env: built.append(env.final_observation) or Eager(env)))
    env = envs.make_vec("recall/DelayedMatch-v0", 4, delay=0, compile=True)
    env.reset()
    assert "final_observation" not in env.step(torch.zeros(4, dtype=torch.int64))[4]
    env.final_observation = True  # as agents.integrations.sb3.to_vec_env does
    assert "final_observation" in env.step(torch.zeros(4, dtype=torch.int64))[4]
    env.step(torch.zeros(4, dtype=torch.int64))
    assert built == [False, True]


def test_compile_off_the_cpu_steps_eagerly_with_one_warning(monkeypatch):
    # Loading the CUDA program segfaulted torch 2.11 on an H200: no device but the CPU
    # builds one unless asked to. Only the device's name is read before the fallback.
    monkeypatch.delenv(compiled.ANY_DEVICE_ENV, raising=False)
    env = envs.make_vec("recall/DelayedMatch-v0", 4, delay=0, compile=True)
    env.device = torch.device("cuda")
    with pytest.warns(RuntimeWarning, match="compile=True is off on cuda"):
        assert compiled.CompiledStep.build(env) is False
    assert not env.compile_info["compiled"] and compiled.ANY_DEVICE_ENV in env.compile_info["error"]


def test_set_cards_steps_eagerly_and_agrees(cache):
    n = 16
    comp = compiled_env("recall/CountRecall-v0", n, final_observation=True)
    eager = envs.make_vec("recall/CountRecall-v0", n, final_observation=True)
    eager.load_state_dict(comp.state_dict())
    cards = torch.stack([torch.randperm(52) % 2 for _ in range(2 * n)]).reshape(n, 2, 52)[:, :, :51]
    comp.set_cards(cards)
    eager.set_cards(cards)
    for _ in range(60):
        step_both(eager, comp, eager.oracle_actions())


def test_a_failed_build_warns_once_and_steps_eagerly(monkeypatch):
    def fail(cls, env):
        raise RuntimeError("no C++ compiler found\nmore lines")

    monkeypatch.setattr(compiled.CompiledStep, "_load_or_build", classmethod(fail))
    monkeypatch.setattr(compiled, "_warned", set())
    a = envs.make_vec("recall/NBack-v0", 8, compile=True)
    b = envs.make_vec("recall/NBack-v0", 8)
    a.reset(seed=1)
    b.reset(seed=1)
    with pytest.warns(RuntimeWarning, match=r"compile=True failed .*no C\+\+ compiler found\); stepping eagerly"):
        step_both(b, a, torch.zeros(8, dtype=torch.int64))
    assert not a.compile_info["compiled"] and "no C++ compiler" in a.compile_info["error"]
    c = envs.make_vec("recall/NBack-v0", 8, compile=True)
    c.reset(seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per process
        c.step(torch.zeros(8, dtype=torch.int64))
    for _ in range(20):
        step_both(b, a, torch.ones(8, dtype=torch.int64))


def test_program_key_follows_knobs_shapes_and_flags():
    key = compiled.program_key
    a = envs.make_vec("recall/DelayedMatch-v0", 8, delay=5)
    names = compiled._tensor_names(a)
    assert key(a, names) == key(envs.make_vec("recall/DelayedMatch-v0", 8, delay=5, seed=9), names)
    assert key(a, names) != key(envs.make_vec("recall/DelayedMatch-v0", 8, delay=6), names)
    assert key(a, names) != key(envs.make_vec("recall/DelayedMatch-v0", 16, delay=5), names)
    assert key(a, names) != key(envs.make_vec("recall/DelayedMatch-v0", 8, delay=5,
                                              final_observation=True), names)


def test_compile_is_a_bool_and_not_for_minigrid():
    with pytest.raises(ValueError, match="compile='yes' must be True or False"):
        envs.make_vec("recall/DelayedMatch-v0", 2, compile="yes")
    with pytest.raises(ValueError, match="compile=True is not available"):
        envs.make_vec("MiniGrid-MemoryS7-v0", 1, compile=True)


def test_out_of_range_actions_are_refused_before_the_program(monkeypatch):
    def never(cls, env):
        raise AssertionError("the range check comes first")

    monkeypatch.setattr(compiled.CompiledStep, "build", classmethod(never))
    env = envs.make_vec("recall/DelayedMatch-v0", 4, compile=True)
    env.reset()
    with pytest.raises(ValueError, match="action 4 of copy 1 is out of range"):
        env.step(torch.tensor([0, 4, 0, 0]))


def test_benchmark_takes_task_knobs():
    import argparse

    from benchmarks.compiled_step import knob

    assert knob("distractors=false") == ("distractors", False)
    assert knob("delay=32") == ("delay", 32)
    assert knob("room=S11") == ("room", "S11")
    with pytest.raises(argparse.ArgumentTypeError, match="KEY=VALUE"):
        knob("delay")
