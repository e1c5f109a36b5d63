"""What is specific to the DT-Mem working memory (memory_modules.dtmem)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from memory_modules import make_core
from memory_modules.dtmem import DTMemCore

IN = 5
B = 3
T = 16


def _core(seed: int = 0, **cfg) -> DTMemCore:
    torch.manual_seed(seed)
    cfg = {"hidden_size": 32, "mem_slots": 4, "num_heads": 4, **cfg}
    return make_core("dtmem", IN, **cfg).eval()


def _no_starts(T: int, B: int = B) -> torch.Tensor:
    return torch.zeros(T, B, dtype=torch.bool)


def test_sizes_and_bad_heads():
    core = _core()
    assert core.output_size == 32
    y, state = core(torch.randn(T, B, IN), core.initial_state(B, "cpu"), _no_starts(T))
    assert y.shape == (T, B, 32)
    assert state["memory"].shape == (B, 4, 32)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        DTMemCore(IN, hidden_size=30, num_heads=4)


@pytest.mark.parametrize("t", [0, 5, T - 2])
def test_causal_future_input_leaves_past_output_unchanged(t):
    core = _core()
    x = torch.randn(T, B, IN)
    x2 = x.clone()
    x2[t + 1 :] = torch.randn(T - t - 1, B, IN) * 3
    state = core.initial_state(B, "cpu")
    with torch.no_grad():
        y1, _ = core(x, state, _no_starts(T))
        y2, _ = core(x2, state, _no_starts(T))
    torch.testing.assert_close(y1[: t + 1], y2[: t + 1], atol=0, rtol=0)
    assert not torch.allclose(y1[t + 1], y2[t + 1], atol=1e-4)


def test_causal_gradients():
    """d y_t / d x_s == 0 for every s > t (also through the write and the read)."""
    core = _core().train()
    x = torch.randn(T, B, IN, requires_grad=True)
    y, _ = core(x, core.initial_state(B, "cpu"), _no_starts(T))
    t = 6
    # (a plain sum of a layer-normed output has zero gradient; weight it)
    (grad,) = torch.autograd.grad((y[t] * torch.randn_like(y[t])).sum(), x)
    assert grad[t + 1 :].abs().max() == 0
    assert grad[:t].abs().sum() > 0, "step t does not depend on the past at all"


def test_split_calls_equal_one_call():
    """The memory is the state: a window-by-window run equals one long run exactly."""
    core = _core()
    x = torch.randn(T, B, IN)
    starts = _no_starts(T)
    starts[9, 2] = True
    with torch.no_grad():
        y_all, s_all = core(x, core.initial_state(B, "cpu"), starts)
        state, ys = core.initial_state(B, "cpu"), []
        for lo in range(0, T, 4):  # context windows of 4 tokens
            y, state = core(x[lo : lo + 4], state, starts[lo : lo + 4])
            ys.append(y)
    torch.testing.assert_close(torch.cat(ys), y_all, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(state["memory"], s_all["memory"], atol=1e-5, rtol=1e-5)


def test_cue_in_one_call_reaches_the_next():
    core = _core()
    x1 = torch.randn(4, B, IN)
    x1_cue = x1.clone()
    x1_cue[0] += 3.0  # a cue in the first window only
    x2 = torch.randn(8, B, IN)  # the second window is the same in both runs
    with torch.no_grad():
        _, s_plain = core(x1, core.initial_state(B, "cpu"), _no_starts(4))
        _, s_cue = core(x1_cue, core.initial_state(B, "cpu"), _no_starts(4))
        y_plain, _ = core(x2, s_plain, _no_starts(8))
        y_cue, _ = core(x2, s_cue, _no_starts(8))
    # every step of the second call, the last one included, still differs
    diff = (y_plain - y_cue).abs().flatten(1).amax(-1)
    assert (diff > 1e-4).all(), diff


def test_cue_recall_across_windows_is_learnable():
    """Trained on windows of 4 tokens with the state carried, it recalls a cue 15 steps back.

    The cue is three windows before the query, so a model that forgot between calls
    would be at chance (1/2).
    """
    torch.manual_seed(0)
    core = make_core("dtmem", 3, hidden_size=16, mem_slots=2, num_heads=2)
    head = nn.Linear(core.output_size, 2)
    opt = torch.optim.Adam([*core.parameters(), *head.parameters()], lr=3e-3)
    gen = torch.Generator().manual_seed(0)

    def batch(n):
        cue = torch.randint(0, 2, (n,), generator=gen)
        x = torch.zeros(16, n, 3)
        x[0, torch.arange(n), cue] = 1.0
        x[1:15, :, :2] = torch.randn(14, n, 2, generator=gen) * 0.3
        x[15, :, 2] = 1.0
        return x, cue

    def run(x):
        state, starts = core.initial_state(x.shape[1], "cpu"), _no_starts(4, x.shape[1])
        for lo in range(0, 16, 4):
            # each window is its own call; the memory carries between calls
            y, state = core(x[lo : lo + 4], state, starts)
        return head(y[-1])

    for _ in range(60):
        x, cue = batch(32)
        loss = nn.functional.cross_entropy(run(x), cue)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, cue = batch(256)
    with torch.no_grad():
        acc = (run(x).argmax(-1) == cue).float().mean().item()
    assert acc >= 0.95, acc


def _set_gates(core: DTMemCore, input_logit: float, forget_logit: float) -> None:
    """Gates that ignore token and memory: constant sigmoid(input_logit), sigmoid(forget_logit)."""
    H = core.hidden_size
    with torch.no_grad():
        core.gate_memory.weight.zero_()
        core.gate_embed.weight.zero_()
        core.gate_embed.bias[:H] = input_logit
        core.gate_embed.bias[H:] = forget_logit - core.forget_bias


def test_open_forget_gate_and_shut_input_gate_keep_memory():
    core = _core()
    _set_gates(core, input_logit=-1e4, forget_logit=1e4)
    state = core.initial_state(B, "cpu")
    state["memory"] = torch.randn_like(state["memory"])
    with torch.no_grad():
        _, new = core(torch.randn(T, B, IN) * 3, state, _no_starts(T))
    torch.testing.assert_close(new["memory"], state["memory"], atol=0, rtol=0)


def test_forget_gate_scales_old_memory():
    """Input gate shut, forget gate at 1/2: the memory halves every step."""
    core = _core()
    _set_gates(core, input_logit=-1e4, forget_logit=0.0)
    state = core.initial_state(B, "cpu")
    with torch.no_grad():
        _, new = core(torch.randn(5, B, IN), state, _no_starts(5))
    torch.testing.assert_close(new["memory"], state["memory"] / 32)


def test_shut_forget_gate_drops_old_memory():
    """Forget gate at 0, input gate at 1: M_t = tanh(M~), so |M_t| < 1 whatever M_{t-1} was."""
    core = _core()
    _set_gates(core, input_logit=1e4, forget_logit=-1e4)
    state = core.initial_state(B, "cpu")
    state["memory"] = torch.randn_like(state["memory"]) * 100
    with torch.no_grad():
        _, new = core(torch.randn(1, B, IN), state, _no_starts(1))
    assert new["memory"].abs().max() < 1.0


def test_default_forget_gate_is_biased_open():
    core = _core()
    H = core.hidden_size
    with torch.no_grad():
        core.gate_memory.weight.zero_()
        core.gate_embed.weight.zero_()
        core.gate_embed.bias.zero_()
        core.gate_embed.bias[:H] = -1e4
        state = core.initial_state(B, "cpu")
        _, new = core(torch.randn(1, B, IN), state, _no_starts(1))
    torch.testing.assert_close(new["memory"], torch.sigmoid(torch.tensor(1.0)) * state["memory"])


def test_reset_uses_learned_initial_memory_and_trains_it():
    core = _core().train()
    starts = _no_starts(T)
    starts[0] = True
    starts[7, 1] = True
    x = torch.randn(T, B, IN)
    state = {"memory": torch.randn(B, 4, 32)}  # garbage that the resets must drop
    y, _ = core(x, state, starts)
    with torch.no_grad():
        fresh, _ = core(x[7:], core.initial_state(B, "cpu"), _no_starts(T - 7))
    torch.testing.assert_close(y[7:, 1], fresh[:, 1], atol=1e-5, rtol=1e-5)
    y.sum().backward()
    assert core.initial_memory.grad is not None and core.initial_memory.grad.abs().sum() > 0
    assert not core.initial_state(B, "cpu")["memory"].requires_grad


def test_write_and_read_split_equals_forward():
    core = _core()
    x = torch.randn(T, B, IN)
    state = core.initial_state(B, "cpu")
    with torch.no_grad():
        y, new = core(x, state, _no_starts(T))
        e = core.embed(x)
        memories = core.write(e, state["memory"], _no_starts(T))
        assert memories.shape == (T, B, 4, 32)
        torch.testing.assert_close(core.read(e, memories), y)
        torch.testing.assert_close(memories[-1], new["memory"])
        # the read at step t uses the memory after step t's write
        y_stale = core.read(e[1:], memories[:-1])
    assert not torch.allclose(y_stale, y[1:], atol=1e-4)


def test_empty_sequence_keeps_state():
    core = _core()
    state = core.initial_state(B, "cpu")
    y, new = core(torch.zeros(0, B, IN), state, _no_starts(0))
    assert y.shape == (0, B, core.output_size)
    assert new["memory"] is state["memory"]
