"""Every command block of README.md runs with tiny budgets, so the README cannot drift.

tests/readme_runner.py runs them all in README order, in one scratch folder and one process
(see there what each program gets appended); each README line is one test here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from readme_runner import PY_BUDGETS, ROOT, blocks, commands, program

CASES = [f"bash:{n}" for n, _, _ in commands()] + [f"python:{n}" for n, _ in blocks("python")]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    scratch = tmp_path_factory.mktemp("readme")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "readme_runner.py"), str(scratch)],
                          cwd=scratch, capture_output=True, text=True, timeout=1500, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((Path(scratch) / "results.json").read_text())


@pytest.mark.parametrize("case", CASES)
def test_readme_command_runs(case, results):
    result = results[case]
    assert result["ok"], f"README.md line {case.split(':')[1]}:\n{result['error']}"
    if result["done"].startswith("skipped"):
        pytest.skip(result["done"])


def test_every_program_has_a_tiny_budget_and_long_sweeps_say_their_time():
    for line, cmd, comment in commands():
        program(cmd)  # raises for a program without a tiny budget
        if comment.startswith("long"):
            assert any(unit in comment for unit in ("min", " h")), (line, comment)


def test_budget_literals_are_still_in_the_readme():
    text = "\n".join(code for _, code in blocks("python"))
    for literal in PY_BUDGETS:
        assert literal in text, f"{literal!r} is no longer in a README python block"
