"""agents.common.malloc: freed memory is reused instead of faulted in again."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from agents.common import malloc

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# A fresh process: glibc's thresholds are per process and cannot be reset once set.
# Both processes start with glibc's starting thresholds held fixed (128 KB, the
# MALLOC_*_THRESHOLD_ variables): every 2 MB temporary is then its own mapping, unmapped
# when freed and faulted in again when next made. Left to glibc's own adjustment, whether
# freed memory goes back depends on what else lies at the top of the heap (in one CI run
# of 4 the default process faulted 20 k times, not 200 k), so it cannot be the baseline
# of a test. Four 2 MB temporaries alive at once, then all freed, as a minibatch's
# forward leaves them.
CHURN = """
import json, resource, sys, torch
from agents.common.malloc import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
torch.set_num_threads(1)
x = torch.rand(512, 1024)
def iteration():
    temporaries = [x + i for i in range(4)]
iteration()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(100):
    iteration()
print(json.dumps({"kept": kept, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def churn(mode: str) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
    out = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True, text=True,
                         check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt: Linux with glibc only")
def test_kept_memory_stops_the_page_faults_of_repeated_temporaries():
    start, kept = churn("start"), churn("keep")
    assert kept["kept"] is True
    # glibc's starting thresholds: 100 iterations x 4 temporaries x 512 pages of 4 KB,
    # each faulted in again; keep_freed_memory, called at run time, overrides them
    assert start["faults"] > 100_000, start
    assert kept["faults"] < start["faults"] / 20, (kept, start)


def test_elsewhere_it_changes_nothing(monkeypatch):
    monkeypatch.setattr(malloc.sys, "platform", "darwin")
    assert malloc.keep_freed_memory() is False


@pytest.mark.parametrize("setting,calls", [(True, 1), (False, 0)])
def test_the_trainer_sets_it_unless_the_config_says_no(monkeypatch, tmp_path, setting, calls):
    from agents.common import device
    from agents.common.config import compose
    from agents.ppo import trainer

    seen = []
    monkeypatch.setattr(device, "keep_freed_memory", lambda: seen.append(1) or True)
    cfg = compose(["env=delayed_match", "core=gru", f"keep_freed_memory={setting}",
                   f"runs_root={tmp_path}", "algo.num_envs=8", "algo.num_steps=8", "algo.seq_len=8"])
    trainer.Trainer(cfg, tmp_path / "run", None)
    assert len(seen) == calls
