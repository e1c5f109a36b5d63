"""benchmarks/env_throughput.py: recall-rl beside its peers, with ratios, on tiny real runs."""

from __future__ import annotations

import os
import re

import pytest

from benchmarks import env_throughput as et
from benchmarks import peer_venv


def test_popgym_numpy_envs_measured_beside_recall_with_ratios():
    pytest.importorskip("popgym")  # a dev extra: installed by `make setup`
    tasks = [("recall/RepeatPrevious-v0", {"difficulty": "easy"})]
    rows = et.measure(tasks, [4], ["cpu"], seconds=0.05, threads=1)
    single, batched = rows
    assert single["popgym_id"] == "popgym-RepeatPreviousEasy-v0"
    assert single["recall"]["sps"] > 0 and single["popgym"]["sps"] > 0
    assert batched["num_envs"] == 4 and batched["popgym"]["sps"] > 0
    text = et.render(rows, ["cpu"])
    ratios = re.findall(r"\| ([0-9.]+)x \|", text)
    assert len(ratios) == 2  # one per table
    want = batched["recall"]["cpu"]["sps"] / batched["popgym"]["sps"]
    assert et.ratio(batched["recall"]["cpu"]["sps"], batched["popgym"]["sps"]) in text
    assert float(ratios[1]) == pytest.approx(want, rel=0.06)


def test_a_peer_that_is_not_installed_is_marked_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(peer_venv, "PEERS_DIR", tmp_path)
    tasks = [("recall/DelayedMatch-v0", {"delay": 2})]
    rows = et.measure(tasks, [2], ["cpu"], seconds=0.02, threads=1, install=False)
    assert rows[1]["gymnax"].startswith("not installed")
    text = et.render(rows, ["cpu"])
    assert "not installed" in text and "| - |" in text  # no ratio against a missing peer
    assert not (tmp_path / "gymnax").exists()


def test_ratio_and_units():
    assert et.ratio(30.0, 10.0) == "3.0x" and et.ratio(1.0, 40.0) == "0.025x"
    assert et.ratio(500.0, 10.0) == "50x" and et.ratio(None, 1.0) == "-"
    assert et.fmt(2.5e9) == "2.50 G" and et.fmt(6.4e6) == "6.40 M" and et.fmt(221e3) == "221.0 k"


def test_an_unreachable_registry_is_one_line_not_a_crash(tmp_path, monkeypatch):
    # pip with no index and an empty wheel folder: the offline failure, for real.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "no-wheels"))
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    lines = []
    with pytest.raises(peer_venv.PeerUnavailable, match=r"^not installed: pip install .* failed") as err:
        peer_venv.ensure_venv("probe", ["gymnax==1.0.1"], root=tmp_path, log=lines.append)
    assert "\n" not in str(err.value)
    assert lines and lines[0].startswith("[peers] making")
    assert not (tmp_path / "probe" / peer_venv.STAMP).exists()
    assert os.path.exists(peer_venv.venv_python("probe", tmp_path))  # kept: a retry reuses it


def test_pin_cpu_runs_on_one_core_and_names_the_accepted_cpus():
    before = os.sched_getaffinity(0)
    try:
        cpu = min(before)
        et.pin_cpu(cpu)
        assert os.sched_getaffinity(0) == {cpu}
        with pytest.raises(SystemExit, match=rf"--pin-cpu 4096 is not accepted; accepted: one of \[{cpu}\]"):
            et.pin_cpu(4096)
        et.pin_cpu(None)  # leaves the affinity alone
        assert os.sched_getaffinity(0) == {cpu}
    finally:
        os.sched_setaffinity(0, before)


def test_gymnax_worker_pinned_to_one_cpu_reports_about_one_core():
    got = et.gymnax_sps("MemoryChain-bsuite", {"memory_length": 2}, [8], 0.05, 1, install=False,
                        cpu=min(os.sched_getaffinity(0)), repeats=2)
    if isinstance(got, str) and got.startswith("not installed"):
        pytest.skip(f"gymnax venv: {got} (python benchmarks/env_throughput.py makes it)")
    assert isinstance(got, dict), got
    assert got[8]["sps"] > 0 and got[8]["cpu"] <= 1.1  # pinned: at most one core's time
