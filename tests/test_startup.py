"""The commands' start-up: imports_without_gc (agents/__init__.py)."""

import gc
import subprocess
import sys
from pathlib import Path

import pytest

import agents
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


def commands() -> list[str]:
    """``agents/<command>.py``: the commands."""
    return sorted(p.stem for p in Path(agents.__file__).parent.glob("*.py") if p.stem != "__init__")


def test_a_command_imported_as_a_module_freezes_nothing():
    code = "import gc, agents.train; print(gc.isenabled(), gc.get_freeze_count())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    on, frozen = out.stdout.split()
    assert on == "True"
    assert int(frozen) == 0


def test_every_command_freezes_what_its_imports_built():
    """``python -m agents.<command>`` moves its imports out of the collector's reach and
    turns it back on: each command run (its main() replaced by a report) in one fresh
    interpreter, unfrozen again before the next."""
    expected = commands()
    assert len(expected) == 8  # train, train_dt, evaluate, record, collect, report, sf_*
    run = ("import gc, importlib, runpy, sys\n"
           f"for command in {expected!r}:\n"
           "    gc.unfreeze()\n"
           "    impl = sys.modules[importlib.import_module('agents.' + command).main.__module__]\n"
           "    impl.main = lambda: print(command, gc.isenabled(), gc.get_freeze_count())\n"
           "    try:\n"
           "        runpy.run_module('agents.' + command, run_name='__main__')\n"
           "    except SystemExit:\n"  # sys.exit(main())
           "        pass\n")
    out = subprocess.run([sys.executable, "-c", run], capture_output=True, text=True, check=True)
    seen = {}
    for line in out.stdout.splitlines():
        command, on, frozen = line.split()
        seen[command] = (on, int(frozen))
    assert sorted(seen) == sorted(expected)
    for command, (on, frozen) in seen.items():
        assert on == "True", command
        assert frozen > 100_000, (command, frozen)
