"""GTrXL specifics: the window, resets inside a sequence, sequence pieces vs steps, detached cache."""

from __future__ import annotations

import pytest
import torch
from core_runs import run_pieces, run_steps

from memory_modules.gtrxl import GRUGate, GTrXLCore

IN = 5


def _core(seed: int = 0, **cfg) -> GTrXLCore:
    torch.manual_seed(seed)
    cfg = {"hidden_size": 32, "num_heads": 4, **cfg}
    return GTrXLCore(IN, **cfg).double().eval()


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("path", ["sequence", "steps"])
def test_window_limits_what_is_seen(num_layers, path):
    W, T, B = 5, 24, 2
    core = _core(num_layers=num_layers, window=W)
    x = torch.randn(T, B, IN, dtype=torch.float64)
    x2 = x.clone()
    x2[0] += 3.0
    starts = torch.zeros(T, B, dtype=torch.bool)
    with torch.no_grad():
        if path == "sequence":
            y1, _ = core(x, core.initial_state(B, "cpu"), starts)
            y2, _ = core(x2, core.initial_state(B, "cpu"), starts)
        else:
            y1, _ = run_steps(core, x, core.initial_state(B, "cpu"), starts)
            y2, _ = run_steps(core, x2, core.initial_state(B, "cpu"), starts)
    changed = (y1 - y2).abs().amax(dim=(1, 2)) > 1e-9
    # Layer l's cache holds layer l-1's outputs: the stack sees num_layers * W steps back.
    reach = num_layers * W
    assert changed[: reach + 1].all(), changed
    assert not changed[reach + 1 :].any(), changed


@pytest.mark.parametrize("window", [1, 3, 8])
def test_sequence_pieces_equal_single_steps(window):
    T, B = 30, 3
    core = _core(window=window, num_layers=2)
    gen = torch.Generator().manual_seed(window)
    x = torch.randn(T, B, IN, generator=gen, dtype=torch.float64)
    starts = torch.rand(T, B, generator=gen) < 0.1
    starts[9, 0] = True
    starts[10, 0] = True  # two starts in a row
    with torch.no_grad():
        warm = core(torch.randn(4, B, IN, dtype=torch.float64), core.initial_state(B, "cpu"),
                    torch.zeros(4, B, dtype=torch.bool))[1]
        y_step, s_step = run_steps(core, x, warm, starts)
        for cuts in ([], [7], [1, 2, 13, 29]):
            y_seq, s_seq = run_pieces(core, x, warm, starts, cuts)
            torch.testing.assert_close(y_seq, y_step, atol=1e-10, rtol=1e-10)
            for k in s_step:
                torch.testing.assert_close(s_seq[k], s_step[k], atol=1e-10, rtol=1e-10)


def test_reset_mid_sequence_starts_from_scratch():
    """After a start at step r of env b, that env's outputs are those of a fresh core on x[r:]."""
    T, B = 40, 3
    core = _core(window=16)
    x = torch.randn(T, B, IN, dtype=torch.float64)
    starts = torch.zeros(T, B, dtype=torch.bool)
    resets = [5, 17, 30]
    for b, r in enumerate(resets):
        starts[r, b] = True
    with torch.no_grad():
        warm = core(torch.randn(20, B, IN, dtype=torch.float64), core.initial_state(B, "cpu"),
                    torch.zeros(20, B, dtype=torch.bool))[1]
        y, s = core(x, warm, starts)
        for b, r in enumerate(resets):
            y_fresh, s_fresh = core(
                x[r:, b : b + 1], core.initial_state(1, "cpu"), starts[r:, b : b + 1]
            )
            torch.testing.assert_close(y[r:, b : b + 1], y_fresh, atol=1e-10, rtol=1e-10)
            for k in s:
                torch.testing.assert_close(s[k][b : b + 1], s_fresh[k], atol=1e-10, rtol=1e-10)
        # ...while before its reset each env still used the warm cache.
        y_cold, _ = core(x, core.initial_state(B, "cpu"), starts)
        for b, r in enumerate(resets):
            assert not torch.allclose(y[:r, b], y_cold[:r, b])


def test_cache_is_detached_but_sequence_has_gradient():
    T, B = 12, 2
    core = _core(window=8).train()
    x = torch.randn(T, B, IN, dtype=torch.float64, requires_grad=True)
    y, state = core(x, core.initial_state(B, "cpu"), torch.zeros(T, B, dtype=torch.bool))
    assert not any(v.requires_grad for v in state.values())
    (y[-1] * torch.randn_like(y[-1])).sum().backward()  # (a plain sum of a layer norm is flat)
    # the last step reads the first step through attention within the sequence
    assert x.grad[0].abs().sum() > 0


def test_gate_starts_close_to_identity():
    torch.manual_seed(0)
    gate = GRUGate(16)
    x = torch.randn(100, 16)
    y = torch.randn(100, 16)
    z = torch.sigmoid(gate.from_y(y).chunk(3, -1)[1] + gate.from_x(x).chunk(2, -1)[1])
    # the update gate is biased by -2: it mostly keeps the residual stream
    assert z.mean() < 0.25


def test_state_layout():
    core = _core(window=7, num_layers=3)
    state = core.initial_state(4, "cpu")
    assert set(state) == {"cache0", "cache1", "cache2", "kv0", "kv1", "kv2", "valid", "kv_params"}
    assert state["cache1"].shape == (4, 7, 32) and state["kv1"].shape == (4, 7, 64)
    assert state["kv_params"].isnan().all()  # a fresh state's keys are computed at its first step
    assert state["valid"].shape == (4, 7) and not state["valid"].any()


def test_forward_never_reads_tensor_data_on_the_host():
    """The core runs on the meta device (no data at all), so forward has no .item(),
    no nonzero() and no other shape that depends on values: nothing syncs the device."""
    core = GTrXLCore(IN, hidden_size=32, window=6).to("meta")
    for T in (1, 4, 13):
        state = core.initial_state(2, "meta")
        starts = torch.zeros(T, 2, dtype=torch.bool, device="meta")
        y, new = core(torch.empty(T, 2, IN, device="meta"), state, starts)
        assert y.shape == (T, 2, 32)
        assert {k: v.shape for k, v in new.items()} == {k: v.shape for k, v in state.items()}


def _projected_rows(core):
    """Rows each layer's key/value projection sees per call, recorded by forward hooks."""
    rows: list[int] = []
    for layer in core.layers:
        layer.key_value.register_forward_hook(lambda mod, inp, out: rows.append(inp[0].shape[1]))
    return rows


def test_acting_steps_project_only_the_new_step_and_match_a_full_projection():
    W, B = 6, 3
    core = _core(window=W, num_layers=2)
    gen = torch.Generator().manual_seed(1)
    xs = torch.randn(12, B, IN, generator=gen, dtype=torch.float64)
    starts = torch.zeros(B, dtype=torch.bool)[None]
    never = torch.zeros(len(xs), starts.shape[1], dtype=torch.bool)  # one row a step
    rows = _projected_rows(core)
    with torch.no_grad():
        _, state = run_steps(core, xs[:8], core.initial_state(B, "cpu"), never[:8])
        assert rows[:2] == [W + 1, W + 1] and set(rows[2:]) == {1}  # the first step projects all
        rows.clear()
        y_cached, s_cached = run_steps(core, xs[8:], state, never[8:])
        forced = {**state, "kv_params": torch.full((B,), float("nan"), dtype=torch.float64)}
        y_full, s_full = core(xs[8:9], forced, starts)  # a mismatched checksum: all projected
    assert set(rows[:8]) == {1} and rows[8:] == [W + 1, W + 1]
    torch.testing.assert_close(y_cached[:1], y_full, atol=1e-12, rtol=1e-12)
    # the sequence path (every step projected) agrees with the cached steps
    with torch.no_grad():
        y_seq, s_seq = core(xs[8:], state, torch.zeros(4, B, dtype=torch.bool))
    torch.testing.assert_close(y_cached, y_seq, atol=1e-10, rtol=1e-10)
    for k in s_seq:
        torch.testing.assert_close(s_cached[k], s_seq[k], atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("how", ["optimizer", "data", "load_state_dict"])
def test_a_weight_change_projects_the_cache_again(how):
    """Keys cached under the old weights are never read under new ones, however the
    weights changed (``.data`` writes do not bump a tensor's version, so the check is on values)."""
    W, B = 5, 2
    core = _core(window=W, num_layers=1)
    xs = torch.randn(7, B, IN, dtype=torch.float64)
    starts = torch.zeros(1, B, dtype=torch.bool)
    never = torch.zeros(len(xs), starts.shape[1], dtype=torch.bool)  # one row a step
    with torch.no_grad():
        _, state = run_steps(core, xs[:6], core.initial_state(B, "cpu"), never[:6])
    weight = core.layers[0].key_value.weight
    if how == "optimizer":
        opt = torch.optim.SGD(core.parameters(), lr=0.1)
        y, _ = core(xs[:3], core.initial_state(B, "cpu"), torch.zeros(3, B, dtype=torch.bool))
        (y**2).sum().backward()  # not y.sum(): the output LayerNorm makes its gradient 0
        opt.step()
    elif how == "data":
        weight.data.add_(0.05)
    else:
        sd = {k: v + 0.05 if k.endswith("key_value.weight") else v for k, v in core.state_dict().items()}
        core.load_state_dict(sd)
    rows = _projected_rows(core)
    with torch.no_grad():
        y_next, _ = core(xs[6:7], state, starts)
        forced = {**state, "kv_params": torch.full((B,), float("nan"), dtype=torch.float64)}
        y_full, _ = core(xs[6:7], forced, starts)
    assert rows == [W + 1, W + 1]
    torch.testing.assert_close(y_next, y_full, atol=0, rtol=0)


def test_a_saved_and_restored_state_keeps_its_cached_keys():
    """A checkpoint's carried state, cloned and loaded back, reads its keys as a run that
    never stopped does: the resumed step's output is bit-identical."""
    core = _core(window=4, num_layers=2)
    xs = torch.randn(9, 2, IN, dtype=torch.float64)
    starts = torch.zeros(1, 2, dtype=torch.bool)
    never = torch.zeros(len(xs), starts.shape[1], dtype=torch.bool)  # one row a step
    with torch.no_grad():
        _, state = run_steps(core, xs[:8], core.initial_state(2, "cpu"), never[:8])
        restored = {k: v.clone() for k, v in state.items()}
        rows = _projected_rows(core)
        y_straight, _ = core(xs[8:], state, starts)
        y_resumed, _ = core(xs[8:], restored, starts)
    assert rows == [1, 1, 1, 1]
    assert torch.equal(y_straight, y_resumed)


def test_a_state_without_its_derived_keys_gives_the_same_outputs():
    """A caller that stores states compactly drops ``derived_state_keys`` (sample-factory):
    the step projects the cache itself and hands the keys back in the new state."""
    core = _core(window=4, num_layers=2)
    xs = torch.randn(8, 2, IN, dtype=torch.float64)
    starts = torch.zeros(1, 2, dtype=torch.bool)
    never = torch.zeros(len(xs), starts.shape[1], dtype=torch.bool)  # one row a step
    with torch.no_grad():
        _, state = run_steps(core, xs[:7], core.initial_state(2, "cpu"), never[:7])
        compact = {k: v for k, v in state.items() if k not in core.derived_state_keys()}
        assert set(compact) == {"cache0", "cache1", "valid"}
        y_full, s_full = core(xs[7:], state, starts)
        y_compact, s_compact = core(xs[7:], compact, starts)
    torch.testing.assert_close(y_compact, y_full, atol=1e-12, rtol=1e-12)
    assert set(s_compact) == set(s_full)
