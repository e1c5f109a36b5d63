"""The commands' start-up: imports_without_gc (agents/__init__.py)."""

import gc
import subprocess
import sys

import pytest

from agents import imports_without_gc


@pytest.fixture
def collector_on():
    was_on = gc.isenabled()
    gc.enable()
    yield
    (gc.enable if was_on else gc.disable)()


def test_collector_off_inside_and_back_on_after(collector_on, monkeypatch):
    monkeypatch.delenv("RECALL_RL_IMPORT_GC", raising=False)
    frozen = gc.get_freeze_count()
    with imports_without_gc():
        assert not gc.isenabled()
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen  # a library import freezes nothing


def test_collector_back_on_after_an_error(collector_on, monkeypatch):
    monkeypatch.delenv("RECALL_RL_IMPORT_GC", raising=False)
    with pytest.raises(ImportError), imports_without_gc():
        import agents.no_such_module  # noqa: F401
    assert gc.isenabled()


def test_a_collector_the_caller_turned_off_stays_off(collector_on, monkeypatch):
    monkeypatch.delenv("RECALL_RL_IMPORT_GC", raising=False)
    gc.disable()
    with imports_without_gc():
        pass
    assert not gc.isenabled()


def test_env_var_leaves_the_collector_on(collector_on, monkeypatch):
    monkeypatch.setenv("RECALL_RL_IMPORT_GC", "1")
    with imports_without_gc(freeze=True):
        assert gc.isenabled()


def test_a_command_freezes_what_its_imports_built():
    """``python -m agents.train`` moves its imports out of the collector's reach and turns
    it back on: a fresh interpreter, as a command runs."""
    code = "import gc, agents.train; print(gc.isenabled(), gc.get_freeze_count())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    on, frozen = out.stdout.split()
    assert on == "True"
    assert int(frozen) == 0  # imported as a module, not run: nothing frozen
    run = ("import gc, runpy, sys\n"
           "sys.argv = ['agents.train']\n"
           "import agents.ppo.trainer as t\n"
           "t.main = lambda: print(gc.isenabled(), gc.get_freeze_count())\n"
           "runpy.run_module('agents.train', run_name='__main__')\n")
    out = subprocess.run([sys.executable, "-c", run], capture_output=True, text=True, check=True)
    on, frozen = out.stdout.split()
    assert on == "True"
    assert int(frozen) > 100_000
