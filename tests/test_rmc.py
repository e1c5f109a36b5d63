"""What is specific to the relational memory core (memory_modules.rmc)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from memory_modules import make_core
from memory_modules.rmc import RMCCore

IN = 5
B = 3


def _core(seed: int = 0, **cfg) -> RMCCore:
    torch.manual_seed(seed)
    return make_core("rmc", IN, **cfg).eval()


def _no_starts(T: int, B: int = B) -> torch.Tensor:
    return torch.zeros(T, B, dtype=torch.bool)


def test_bad_gate_style_names_value_and_accepted():
    with pytest.raises(ValueError, match=r"'lstm'.*accepted: unit, memory"):
        RMCCore(IN, gate_style="lstm")
    with pytest.raises(ValueError, match=r"None.*accepted: unit, memory"):
        make_core("rmc", IN, gate_style=None)


def test_sizes():
    core = _core(mem_slots=3, head_size=8, num_heads=2)
    assert core.mem_size == 16
    assert core.output_size == 3 * 16
    y, state = core(torch.randn(4, B, IN), core.initial_state(B, "cpu"), _no_starts(4))
    assert y.shape == (4, B, 48)
    assert state["memory"].shape == (B, 3, 16)
    # the output is the flattened new memory
    torch.testing.assert_close(y[-1], state["memory"].flatten(1))


@pytest.mark.parametrize(
    "mem_slots, head_size, num_heads", [(4, 4, 2), (3, 1, 2), (2, 2, 1)]  # pad, truncate, square
)
def test_initial_memory_is_identity_padded_or_truncated(mem_slots, head_size, num_heads):
    core = _core(mem_slots=mem_slots, head_size=head_size, num_heads=num_heads)
    mem = core.initial_state(2, "cpu")["memory"]
    size = head_size * num_heads
    assert mem.shape == (2, mem_slots, size)
    for n in range(mem_slots):
        for s in range(size):
            assert mem[0, n, s] == (1.0 if n == s else 0.0)
    torch.testing.assert_close(mem[0], mem[1])


def test_mlp_layers_have_separate_weights():
    core = _core(attention_mlp_layers=3)
    layers = [m for m in core.mlp.modules() if isinstance(m, nn.Linear)]
    assert len(layers) == 3
    ptrs = {layer.weight.data_ptr() for layer in layers}
    assert len(ptrs) == 3, "attention MLP layers share a weight tensor"
    assert not torch.equal(layers[0].weight, layers[1].weight)
    # changing one layer leaves the others untouched
    before = [layer.weight.detach().clone() for layer in layers]
    with torch.no_grad():
        layers[0].weight.add_(1.0)
    torch.testing.assert_close(layers[1].weight, before[1])
    torch.testing.assert_close(layers[2].weight, before[2])
    names = [n for n, _ in core.named_parameters() if n.startswith("mlp.")]
    assert len(names) == 6  # 3 weights + 3 biases, each its own parameter


def test_layer_norms_normalise_each_slot_over_features_only():
    core = _core(num_blocks=2)
    size = core.mem_size
    norms = [m for m in core.modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == 2 * 3  # qkv, after attention, after MLP; per block
    for norm in norms:
        assert len(norm.normalized_shape) == 1, "layer norm spans more than the feature dim"
        # scale one slot's values by 100: the other slots' outputs must not move
        rows = torch.randn(2, core.mem_slots + 1, norm.normalized_shape[0])
        rows2 = rows.clone()
        rows2[:, 0] *= 100.0
        with torch.no_grad():
            torch.testing.assert_close(norm(rows)[:, 1:], norm(rows2)[:, 1:])
    # in a real forward, every layer norm sees [B, slots + 1, features] and its output
    # (affine is identity at init) has zero mean, unit variance per slot.
    seen = []

    def hook(module, inputs, output):
        seen.append(inputs[0].shape)
        torch.testing.assert_close(output.mean(-1), torch.zeros(output.shape[:-1]), atol=1e-5, rtol=0)
        torch.testing.assert_close(
            output.var(-1, unbiased=False), torch.ones(output.shape[:-1]), atol=2e-2, rtol=0
        )

    handles = [n.register_forward_hook(hook) for n in norms]
    with torch.no_grad():
        core(torch.randn(3, B, IN) * 5, core.initial_state(B, "cpu"), _no_starts(3))
    for h in handles:
        h.remove()
    assert len(seen) == 3 * 6
    assert all(s[:2] == (B, core.mem_slots + 1) for s in seen)
    assert {s[2] for s in seen} == {size, 3 * size}


def test_blocks_have_their_own_attention():
    core = _core(num_blocks=2)
    a, b = core.blocks
    assert a.qkv.weight.data_ptr() != b.qkv.weight.data_ptr()


@pytest.mark.parametrize("gate_style", ["unit", "memory"])
def test_gated_update_equation(gate_style):
    """M' = sigmoid(i) * tanh(M~) + sigmoid(f + 1) * M, gates from input and tanh(M)."""
    core = _core(gate_style=gate_style)
    G = core.mem_size if gate_style == "unit" else 1
    assert core.gate_memory.out_features == core.gate_input.out_features == 2 * G
    x = torch.randn(1, B, IN)
    state = core.initial_state(B, "cpu")
    with torch.no_grad():
        _, state = core(torch.randn(2, B, IN), state, _no_starts(2))  # non-trivial memory
        m = state["memory"]
        u = core.input_proj(x[0])
        rows = torch.cat([m, u.unsqueeze(1)], 1)
        for block in core.blocks:
            rows = block(rows, core.mlp)
        cand = rows[:, :-1]
        gates = core.gate_memory(torch.tanh(m)) + core.gate_input(u).unsqueeze(1)
        i, f = gates[..., :G], gates[..., G:]
        expected = torch.sigmoid(i) * torch.tanh(cand) + torch.sigmoid(f + 1.0) * m
        y, new = core(x, state, _no_starts(1))
    torch.testing.assert_close(new["memory"], expected)
    torch.testing.assert_close(y[0], expected.flatten(1))


def test_closed_gates_keep_memory():
    """Input gate shut, forget gate wide open: memory passes through untouched."""
    core = _core()
    G = core.gate_size
    with torch.no_grad():
        core.gate_memory.weight.zero_()
        core.gate_input.weight.zero_()
        core.gate_memory.bias.zero_()
        core.gate_input.bias[:G] = -1e4
        core.gate_input.bias[G:] = 1e4
        state = core.initial_state(B, "cpu")
        state["memory"] = torch.randn_like(state["memory"])
        _, new = core(torch.randn(6, B, IN), state, _no_starts(6))
    torch.testing.assert_close(new["memory"], state["memory"])


@pytest.mark.parametrize(
    "cfg",
    [
        dict(gate_style="memory"),
        dict(num_blocks=2, attention_mlp_layers=1),
        dict(mem_slots=6, head_size=2, num_heads=2),
    ],
)
def test_variants_sequence_equals_single_steps(cfg):
    core = _core(**cfg)
    T = 12
    x = torch.randn(T, B, IN)
    starts = _no_starts(T)
    starts[5, 1] = True
    with torch.no_grad():
        y_seq, s_seq = core(x, core.initial_state(B, "cpu"), starts)
        state, ys = core.initial_state(B, "cpu"), []
        for t in range(T):
            y, state = core(x[t : t + 1], state, starts[t : t + 1])
            ys.append(y)
    torch.testing.assert_close(y_seq, torch.cat(ys), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s_seq["memory"], state["memory"], atol=1e-5, rtol=1e-5)


def test_reset_restores_identity_memory():
    core = _core()
    starts = _no_starts(4)
    starts[2] = True
    x = torch.randn(4, B, IN)
    with torch.no_grad():
        y, _ = core(x, core.initial_state(B, "cpu"), starts)
        fresh, _ = core(x[2:3], core.initial_state(B, "cpu"), _no_starts(1))
    torch.testing.assert_close(y[2], fresh[0])


def test_empty_sequence_keeps_state():
    core = _core()
    state = core.initial_state(B, "cpu")
    y, new = core(torch.zeros(0, B, IN), state, _no_starts(0))
    assert y.shape == (0, B, core.output_size)
    assert new["memory"] is state["memory"]
