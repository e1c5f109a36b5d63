"""agents/evaluation/snapshots.py: each update's weights kept, replayed, and put back."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from agents.evaluation.snapshots import WeightSnapshots


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))  # parameters and buffers


def test_replay_loads_each_snapshot_in_order_and_puts_the_weights_back():
    net, snaps = _net(), WeightSnapshots()
    seen = []
    for step in (10, 20, 30):
        with torch.no_grad():
            net[0].weight.fill_(step)
            net[1].running_mean.fill_(-step)
        snaps.take(net, steps=step, update=step // 10)
    with torch.no_grad():
        net[0].weight.fill_(99.0)
    with snaps.replay(net) as each:
        for snap in each:
            seen.append((snap.steps, snap.update, net[0].weight[0, 0].item(), net[1].running_mean[0].item()))
    assert seen == [(10, 1, 10.0, -10.0), (20, 2, 20.0, -20.0), (30, 3, 30.0, -30.0)]
    assert torch.all(net[0].weight == 99.0) and torch.all(net[1].running_mean == -30.0)
    assert len(snaps) == 0  # replayed once, then dropped


def test_a_snapshot_is_a_copy_and_its_time_is_when_it_was_taken():
    net, snaps = _net(), WeightSnapshots()
    snaps.take(net, steps=1)
    snaps.take(net, steps=2)
    with torch.no_grad():
        net[0].weight.add_(1.0)  # training goes on: the snapshot must not follow it
    first, second = snaps.taken
    assert not torch.equal(first.weights["0.weight"], net[0].weight)
    assert first.walltime <= second.walltime


def test_the_weights_come_back_when_an_evaluation_fails():
    net, snaps = _net(), WeightSnapshots()
    before = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.zero_()
    snaps.take(net, steps=1)
    with torch.no_grad():
        net[0].weight.copy_(before)
    with pytest.raises(RuntimeError, match="boom"), snaps.replay(net) as each:
        for _ in each:
            raise RuntimeError("boom")
    assert torch.equal(net[0].weight, before)


def test_past_the_limit_every_other_snapshot_is_dropped():
    net, snaps = _net(), WeightSnapshots(limit=4)
    for step in range(1, 6):
        snaps.take(net, steps=step)
    assert [s.steps for s in snaps.taken] == [2, 4]  # an even, coarser grain
    for step in range(6, 9):
        snaps.take(net, steps=step)
    assert [s.steps for s in snaps.taken] == [2, 4, 6, 8]  # and it goes on at that grain
    for step in range(9, 11):
        snaps.take(net, steps=step)
    assert [s.steps for s in snaps.taken] == [4, 8]
    with snaps.replay(net) as each:
        list(each)
    snaps.take(net, steps=11)
    assert [s.steps for s in snaps.taken] == [11]  # a fresh interval starts at every update
    with pytest.raises(ValueError, match="limit=1 is not accepted; accepted: an int >= 2"):
        WeightSnapshots(limit=1)
