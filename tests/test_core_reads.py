"""Cores report where they read (``record_reads`` / ``last_read``) for videos: off by default,
nothing changes when on, and trained cores show the cue stored and read back."""

from __future__ import annotations

import pytest
import torch
from core_runs import run_steps
from test_core_learning import DELAY, fit_recall, recall_batch

from memory_modules import CORES, make_core

SMALL = {
    "mlp": {}, "lstm": {"hidden_size": 16, "num_layers": 2}, "gru": {"hidden_size": 16},
    "gtrxl": {"hidden_size": 16, "num_heads": 2, "window": 5},
    "hcam": {"hidden_size": 16, "num_heads": 2, "chunk_size": 3, "max_chunks": 2, "top_k": 2},
    "rmc": {"head_size": 8, "num_heads": 2, "num_blocks": 2}, "dtmem": {"hidden_size": 16, "mem_slots": 3},
}
KEPT = ("last_probs", "last_pick", "read_trace")  # what layers keep while recording


def _inputs(T=12, B=3, D=6):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(T, B, D, generator=gen)
    starts = torch.zeros(T, B, dtype=torch.bool)
    starts[0] = True
    starts[7, 1] = True  # an episode start inside the sequence
    return x, starts


def _pair(name):
    torch.manual_seed(1)
    off = make_core(name, 6, **SMALL[name])
    on = make_core(name, 6, **SMALL[name])
    on.load_state_dict(off.state_dict())
    return off, on.record_reads(True)


@pytest.mark.parametrize("name", CORES)
def test_recording_changes_nothing_and_off_keeps_nothing(name):
    off, on = _pair(name)
    x, starts = _inputs()
    with torch.no_grad():
        for run in (run_steps, lambda c, *a: c(*a)):  # acting path, then sequence path
            y_off, s_off = run(off, x, off.initial_state(3, "cpu"), starts)
            y_on, s_on = run(on, x, on.initial_state(3, "cpu"), starts)
            torch.testing.assert_close(y_on, y_off, rtol=1e-5, atol=1e-5)
            for key in s_off:
                torch.testing.assert_close(s_on[key].float(), s_off[key].float(), rtol=1e-5, atol=1e-5)
    assert off.last_read() is None
    assert not any(hasattr(m, k) for m in off.modules() for k in KEPT), "recording off kept weights"
    on.record_reads(False)
    assert on.last_read() is None


@pytest.mark.parametrize("name", CORES)
def test_read_of_an_acting_step(name):
    _, core = _pair(name)
    x, starts = _inputs()
    state = core.initial_state(3, "cpu")
    with torch.no_grad():
        for t in range(x.shape[0]):
            _, state = core(x[t : t + 1], state, starts[t : t + 1])
            read = core.last_read()
            if name == "mlp":
                assert read is None
                continue
            w = read.weights
            assert w.dim() == 3 and w.shape[:2] == (3, len(read.rows)) and bool((w >= 0).all())
            if read.kind == "steps":
                # Weights over the steps back sum to 1 once anything is held, and lie on held steps.
                assert bool((w * ~read.stored[:, None]).eq(0).all())
                assert bool(read.stored[:, 0].all()), "the current step is always held"
                since = t - 7 if t >= 7 else t  # copy 1 restarts at step 7
                held = read.stored[1].sum().item()
                if name == "gtrxl":
                    assert held == min(since, 5) + 1
                    torch.testing.assert_close(w.sum(-1), torch.ones(3, 2))
                else:  # hcam: the partial chunk and up to 2 completed chunks of 3 steps
                    assert held == min(since, 6 + since % 3) + 1
                    sums = w.sum(-1)
                    expect = 1.0 if since >= 3 else 0.0  # no completed chunk: the read is zero
                    torch.testing.assert_close(sums[1], torch.full((2,), expect))
            elif read.kind == "slots":
                assert len(read.columns) == w.shape[-1]
                attention = [i for i, r in enumerate(read.rows) if r != "write"]
                torch.testing.assert_close(w[:, attention].sum(-1), torch.ones(3, len(attention)))
            else:
                assert read.kind == "change" and w.shape[-1] == 1


@pytest.mark.parametrize("name", ["hcam", "lstm"])
def test_sequence_calls_keep_no_read_where_only_acting_steps_have_one(name):
    _, core = _pair(name)
    x, starts = _inputs()
    core(x, core.initial_state(3, "cpu"), starts)
    assert core.last_read() is None


def test_bad_read_kind_is_one_clear_error():
    core = make_core("gru", 4)
    with pytest.raises(ValueError, match=r"read kind 'heads'; accepted: steps, slots, change"):
        core.keep_read("heads", torch.zeros(1, 1, 1), ["x"])


def _acting_reads(core, x, starts):
    core.record_reads(True)
    state, reads = core.initial_state(x.shape[1], "cpu"), []
    with torch.no_grad():
        for t in range(x.shape[0]):
            _, state = core(x[t : t + 1], state, starts[t : t + 1])
            reads.append(core.last_read())
    return reads


@pytest.mark.parametrize("name", ["gtrxl", "hcam"])
def test_trained_attention_core_reads_the_cue_back(name):
    """After learning delay-32 recall, the query step reads the cue's step (0), which the
    memory has held since it was seen."""
    core, _, acc = fit_recall(name)
    assert acc >= 0.95
    x, starts, _ = recall_batch(8, torch.Generator().manual_seed(7))
    reads = _acting_reads(core, x, starts)
    T = DELAY + 2
    for t, read in enumerate(reads):
        assert bool(read.stored[:, t].all()), f"the cue is not held at step {t}"
    w = reads[-1].weights  # [8, layers, steps back]; the cue is T - 1 steps back
    if name == "gtrxl":
        at_cue = w[:, :, T - 1].max(1).values  # the best layer's weight on the cue step
        assert bool((at_cue > 10 / T).all()), at_cue  # > 10x an even spread over the steps
    else:
        # the chunk holding the cue (steps 0..15) gets the chunk read; the cue step most of it
        chunk = w[:, :, T - 16 : T].sum(-1).max(1).values
        assert bool((chunk > 0.9).all()), chunk
        assert bool((w[:, :, T - 1].max(1).values > 2 / 16).all())


def test_trained_gru_state_moves_more_at_the_cue_than_in_the_delay():
    core, _, acc = fit_recall("gru")
    assert acc >= 0.95
    x, starts, _ = recall_batch(8, torch.Generator().manual_seed(7))
    change = torch.stack([r.weights[:, 0, 0] for r in _acting_reads(core, x, starts)], 1)
    ratio = change[:, 0] / change[:, 1 : 1 + DELAY].median(1).values  # cue vs noise steps
    assert bool((ratio > 1.25).all()) and float(ratio.mean()) > 2.0, ratio
