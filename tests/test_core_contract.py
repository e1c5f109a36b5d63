"""The interface contract every memory core must keep (memory_modules.base)."""

from __future__ import annotations

import pytest
import torch

from memory_modules import CORES, make_core

IN = 6
B = 3
T = 40


def _core(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return make_core(name, IN).eval()


def _starts(T: int, B: int) -> torch.Tensor:
    starts = torch.zeros(T, B, dtype=torch.bool)
    starts[0, 0] = True  # a reset right at the sequence start
    starts[7, 1] = True
    starts[23, 0] = True
    starts[24, 2] = True
    return starts


def _warm_state(core, B: int):
    """A non-trivial state: the core after a few random steps."""
    state = core.initial_state(B, "cpu")
    x = torch.randn(5, B, IN)
    _, state = core(x, state, torch.zeros(5, B, dtype=torch.bool))
    return state


@pytest.mark.parametrize("name", CORES)
def test_sequence_equals_single_steps(name):
    core = _core(name)
    x = torch.randn(T, B, IN)
    starts = _starts(T, B)
    with torch.no_grad():
        state0 = _warm_state(core, B)
        y_seq, s_seq = core(x, state0, starts)
        state, ys = state0, []
        for t in range(T):
            y, state = core(x[t : t + 1], state, starts[t : t + 1])
            ys.append(y)
        y_step = torch.cat(ys)
    assert y_seq.shape == (T, B, core.output_size)
    torch.testing.assert_close(y_seq, y_step, atol=1e-5, rtol=1e-5)
    assert s_seq.keys() == state.keys()
    for k in state:
        torch.testing.assert_close(s_seq[k], state[k], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", CORES)
def test_handing_the_state_over_changes_no_result(name):
    """``reuse_state=True`` (the acting loop's) gives the same outputs and states,
    ``need_state=False`` the same outputs, and without ``reuse_state`` the tensors of
    the state given are never written."""
    core = _core(name)
    x = torch.randn(T, B, IN)
    starts = _starts(T, B)
    with torch.no_grad():
        kept = _warm_state(core, B)
        before = {k: v.clone() for k, v in kept.items()}
        handed = {k: v.clone() for k, v in kept.items()}
        state = kept
        for t in range(T):
            y_dropped, _ = core(x[t : t + 1], state, starts[t : t + 1], need_state=False)
            y, state = core(x[t : t + 1], state, starts[t : t + 1])
            torch.testing.assert_close(y_dropped, y, atol=0, rtol=0)
            y_reused, handed = core(x[t : t + 1], handed, starts[t : t + 1], reuse_state=True)
            torch.testing.assert_close(y_reused, y, atol=0, rtol=0)
            for k in state:
                torch.testing.assert_close(handed[k], state[k], atol=0, rtol=0)
        y_seq, _ = core(x, kept, starts, need_state=False)
        torch.testing.assert_close(y_seq, core(x, kept, starts)[0], atol=0, rtol=0)
    for k, v in kept.items():
        assert torch.equal(v, before[k]), f"{name}: the given state's {k!r} was written"


@pytest.mark.parametrize("name", CORES)
def test_episode_start_cuts_memory(name):
    core = _core(name)
    x = torch.randn(T, B, IN)
    starts = torch.zeros(T, B, dtype=torch.bool)
    starts[20, :] = True
    x2 = x.clone()
    x2[:20] = torch.randn(20, B, IN) * 3  # different past before the reset
    with torch.no_grad():
        y1, _ = core(x, _warm_state(core, B), starts)
        y2, _ = core(x2, core.initial_state(B, "cpu"), starts)
    torch.testing.assert_close(y1[20:], y2[20:], atol=1e-5, rtol=1e-5)
    if name != "mlp":
        # ...and before the reset the past does matter (the core has memory at all).
        assert not torch.allclose(y1[5:20], y2[5:20], atol=1e-4)


@pytest.mark.parametrize("name", CORES)
def test_gradients_reach_every_parameter(name):
    core = _core(name).train()
    x = torch.randn(T, B, IN)
    y, _ = core(x, core.initial_state(B, "cpu"), _starts(T, B))
    (y * torch.randn_like(y)).sum().backward()
    missing = [n for n, p in core.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, f"no gradient reaches {missing}"


@pytest.mark.parametrize("name", CORES)
def test_state_size_is_fixed(name):
    core = _core(name)
    state = core.initial_state(B, "cpu")
    shapes = {k: v.shape for k, v in state.items()}
    with torch.no_grad():
        for _ in range(3):
            _, state = core(torch.randn(50, B, IN), state, torch.zeros(50, B, dtype=torch.bool))
    assert {k: v.shape for k, v in state.items()} == shapes
    assert all(v.shape[0] == B for v in state.values()), "state tensors must be batch-first"


@pytest.mark.parametrize("name", CORES)
def test_state_rows_are_independent(name):
    """A rollout stores the state and indexes it by env: row b must depend on env b alone."""
    core = _core(name)
    x = torch.randn(T, B, IN)
    starts = _starts(T, B)
    with torch.no_grad():
        state = _warm_state(core, B)
        y_all, _ = core(x, state, starts)
        sub = {k: v[1:2] for k, v in state.items()}
        y_one, _ = core(x[:, 1:2], sub, starts[:, 1:2])
    torch.testing.assert_close(y_all[:, 1:2], y_one, atol=1e-5, rtol=1e-5)


def test_unknown_core_lists_accepted():
    with pytest.raises(ValueError, match="accepted: mlp, lstm, gru"):
        make_core("transformer9000", IN)


@pytest.mark.parametrize("name", CORES)
def test_unknown_option_lists_accepted(name):
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['bogus'\].*accepted"):
        make_core(name, IN, bogus=1)


@pytest.mark.parametrize("name", CORES)
def test_bad_input_shape_is_an_error(name):
    core = _core(name)
    with pytest.raises(ValueError, match="expects x of shape"):
        core(torch.randn(4, B, IN + 1), core.initial_state(B, "cpu"), torch.zeros(4, B, dtype=torch.bool))
