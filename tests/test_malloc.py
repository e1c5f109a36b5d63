"""agents.common.malloc: freed memory is reused instead of faulted in again."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from agents.common import malloc

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# A fresh process: glibc's thresholds are per process and cannot be reset once set.
# Four 2 MB temporaries alive at once, then all freed, as a minibatch's forward leaves
# them: by default the 8 MB then free at the top of the heap is over glibc's trim
# threshold (twice the largest freed mapping, 4 MB), so it goes back to the OS and the
# next iteration faults all of it in again.
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
    out = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt: Linux with glibc only")
def test_kept_memory_stops_the_page_faults_of_repeated_temporaries():
    default, kept = churn("default"), churn("keep")
    assert kept["kept"] is True
    # default: 100 iterations x 4 temporaries x 512 pages of 4 KB, each faulted in again
    assert default["faults"] > 100_000, default
    assert kept["faults"] < default["faults"] / 20, (kept, default)


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
