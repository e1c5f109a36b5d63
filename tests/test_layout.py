"""agents/ by concern (docs/layout.md): every module is where the map says, every folder
says what it holds, and the commands keep their names."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
AGENTS = ROOT / "agents"
LAYOUT = (ROOT / "docs" / "layout.md").read_text()
FOLDERS = ("ppo", "dt", "integrations", "evaluation", "common")
COMMANDS = ("train", "train_dt", "evaluate", "record", "collect", "report", "sf_train", "sf_enjoy")


def test_agents_holds_the_folders_and_the_commands_only():
    folders = {p.name for p in AGENTS.iterdir() if p.is_dir() and p.name != "__pycache__"}
    modules = {p.stem for p in AGENTS.glob("*.py")} - {"__init__"}
    assert folders == set(FOLDERS)
    assert modules == set(COMMANDS)


@pytest.mark.parametrize("folder", FOLDERS)
def test_each_folder_says_what_it_holds(folder):
    """The folder's docstring and its row in docs/layout.md name each of its modules."""
    doc = importlib.import_module(f"agents.{folder}").__doc__ or ""
    row = next(ln for ln in LAYOUT.splitlines() if ln.startswith(f"| `agents/{folder}/` |"))
    for path in sorted((AGENTS / folder).glob("*.py")):
        if path.stem == "__init__":
            continue
        assert f"``{path.stem}``" in doc, f"agents/{folder}/__init__.py does not name {path.stem}"
        assert f"`{path.stem}`" in row, f"docs/layout.md's agents/{folder}/ row does not name {path.stem}"


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_is_a_small_module_calling_a_main(command):
    mod = importlib.import_module(f"agents.{command}")
    assert f"python -m agents.{command}" in mod.__doc__
    target = re.search(r":mod:`(agents\.[\w.]+)`", mod.__doc__).group(1)
    assert mod.main is importlib.import_module(target).main
    # the import under imports_without_gc (tests/test_startup.py) and sys.exit(main())
    assert len((AGENTS / f"{command}.py").read_text().splitlines()) <= 11
