"""HCAM specifics: the empty read, top-k selection, the ring buffer, resets, pieces vs steps."""

from __future__ import annotations

import pytest
import torch
from core_runs import run_pieces, run_steps

from memory_modules.attention import masked_top_k_weights
from memory_modules.hcam import HCAMCore

IN = 5


def _core(seed: int = 0, **cfg) -> HCAMCore:
    torch.manual_seed(seed)
    cfg = {"hidden_size": 32, "num_heads": 4, "chunk_size": 4, "top_k": 2, "max_chunks": 3, **cfg}
    return HCAMCore(IN, **cfg).double().eval()


def _capture_reads(core):
    """Record every layer's hierarchical read (the output of ``mem_out``), as [T, B, H]."""
    reads = {i: [] for i in range(len(core.layers))}
    for i, layer in enumerate(core.layers):
        layer.mem_out.register_forward_hook(
            lambda mod, inp, out, i=i: reads[i].append(out.transpose(0, 1))
        )
    return reads


@pytest.mark.parametrize("path", ["sequence", "steps"])
def test_read_is_exactly_zero_without_a_completed_chunk(path):
    C, T, B = 4, 20, 2
    core = _core(chunk_size=C, num_layers=2)
    reads = _capture_reads(core)
    x = torch.randn(T, B, IN, dtype=torch.float64)
    starts = torch.zeros(T, B, dtype=torch.bool)
    starts[0] = True
    starts[10, 1] = True
    warm = core(torch.randn(9, B, IN, dtype=torch.float64), core.initial_state(B, "cpu"),
                torch.zeros(9, B, dtype=torch.bool))[1]
    for r in reads.values():
        r.clear()
    with torch.no_grad():
        if path == "sequence":
            core(x, warm, starts)
        else:
            run_steps(core, x, warm, starts)
    for i in reads:
        read = torch.cat(reads[i])  # [T, B, H]
        # the first chunk of an episode completes at step C-1 and is readable from step C
        empty = torch.zeros(T, B, dtype=torch.bool)
        empty[:C, :] = True
        empty[10 : 10 + C, 1] = True
        assert (read[empty] == 0).all(), f"layer {i}: non-zero read with nothing to read"
        assert (read[~empty].abs().amax(-1) > 0).all(), f"layer {i}: a read of real chunks is 0"


def test_top_k_weights_mask_missing_picks():
    scores = torch.tensor([[0.3, 5.0, -1.0, 2.0], [1.0, 2.0, 3.0, 4.0]])
    visible = torch.tensor([[False, True, False, True], [False, False, False, False]])
    weights, idx = masked_top_k_weights(scores, visible, 3)
    assert set(idx[0, :2].tolist()) == {1, 3}
    torch.testing.assert_close(weights[0, :2].sum(), torch.tensor(1.0))
    assert weights[0, 2] == 0  # the third pick is invisible
    assert (weights[1] == 0).all()  # nothing visible: no softmax over garbage
    torch.testing.assert_close(weights[0, 0], torch.sigmoid(torch.tensor(3.0)))


@pytest.mark.parametrize("planted", [0, 5])
def test_top_k_selects_the_chunk_with_the_planted_key(planted):
    """With top_k=1 the read comes from the chunk whose key matches the query, and from no other."""
    M, C, H, B = 8, 4, 32, 1
    core = _core(hidden_size=H, chunk_size=C, max_chunks=M, top_k=1, num_layers=1)
    layer = core.layers[0]
    with torch.no_grad():
        layer.select.weight.copy_(torch.eye(H))  # score = cosine of layer input and chunk key
    x = torch.randn(1, B, IN, dtype=torch.float64)
    start = torch.zeros(1, B, dtype=torch.bool)
    state = core.initial_state(B, "cpu")
    gen = torch.Generator().manual_seed(planted)
    state["chunks0"] = torch.randn(B, M, C, H, generator=gen, dtype=torch.float64)
    keys = torch.randn(B, M, H, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        keys[:, planted] = core.embed(x[0])  # the query's own input as key
    # stored keys are layer-normalised: the planted one has the largest possible score
    state["keys0"] = torch.nn.functional.layer_norm(keys, (H,))
    state["chunk_valid"][:] = True
    reads = _capture_reads(core)

    def read_with(chunks):
        reads[0].clear()
        with torch.no_grad():
            core(x, {**state, "chunks0": chunks}, start)
        return reads[0][0]

    base = read_with(state["chunks0"])
    assert base.abs().amax() > 0
    for j in range(M):
        changed = state["chunks0"].clone()
        changed[:, j] += torch.randn(B, C, H, generator=gen, dtype=torch.float64)
        moved = not torch.allclose(read_with(changed), base)
        assert moved == (j == planted), f"chunk {j}: read moved={moved}, planted={planted}"
    # an invalid slot is never read, however well its key matches
    state["chunk_valid"][:, planted] = False
    changed = state["chunks0"].clone()
    changed[:, planted] += 1.0
    torch.testing.assert_close(read_with(changed), read_with(state["chunks0"]))


@pytest.mark.parametrize("cuts", [[], [5, 10, 15], list(range(1, 20))])
def test_ring_buffer_wraps_after_max_chunks(cuts):
    M, C, T, B = 3, 2, 20, 2  # 10 chunks through 3 slots
    core = _core(chunk_size=C, max_chunks=M, num_layers=1)
    x = torch.randn(T, B, IN, dtype=torch.float64)
    starts = torch.zeros(T, B, dtype=torch.bool)
    with torch.no_grad():
        _, state = run_pieces(core, x, core.initial_state(B, "cpu"), starts, cuts)
        embedded = core.embed(x).transpose(0, 1)  # layer 0 files its input: [B, T, H]
    assert (state["write_ptr"] == 10 % M).all()
    assert state["chunk_valid"].all()
    assert (state["partial_len"] == 0).all()
    for k in range(10 - M, 10):  # the last M chunks, chunk k in slot k % M
        chunk = embedded[:, C * k : C * (k + 1)]
        torch.testing.assert_close(state["chunks0"][:, k % M], chunk)
        key = torch.nn.functional.layer_norm(chunk.mean(1), (chunk.shape[-1],))
        torch.testing.assert_close(state["keys0"][:, k % M], key)


def test_overwritten_chunks_are_forgotten():
    """With one layer, step 0's input lives only in chunk 0; once chunk M overwrites it, it is gone."""
    M, C, T, B = 3, 2, 20, 2
    core = _core(chunk_size=C, max_chunks=M, num_layers=1, top_k=M)
    x = torch.randn(T, B, IN, dtype=torch.float64)
    x2 = x.clone()
    x2[0] += 3.0
    starts = torch.zeros(T, B, dtype=torch.bool)
    with torch.no_grad():
        for run in (lambda z: core(z, core.initial_state(B, "cpu"), starts)[0],
                    lambda z: run_steps(core, z, core.initial_state(B, "cpu"), starts)[0]):
            changed = (run(x) - run(x2)).abs().amax(dim=(1, 2)) > 1e-9
            gone = C * (M + 1)  # chunk M completes at step C(M+1)-1
            assert changed[:gone].all(), changed
            assert not changed[gone:].any(), changed


@pytest.mark.parametrize(
    "cfg",
    [
        dict(chunk_size=4, max_chunks=3, top_k=2),
        dict(chunk_size=1, max_chunks=2, top_k=4),  # every step is a chunk; top_k > slots
        dict(chunk_size=3, max_chunks=1, top_k=1),
        dict(chunk_size=5, max_chunks=16, top_k=3),
    ],
)
def test_sequence_pieces_equal_single_steps(cfg):
    T, B = 41, 3
    core = _core(num_layers=2, **cfg)
    gen = torch.Generator().manual_seed(cfg["chunk_size"])
    x = torch.randn(T, B, IN, generator=gen, dtype=torch.float64)
    starts = torch.rand(T, B, generator=gen) < 0.08
    starts[12, 0] = True
    starts[13, 0] = True  # two starts in a row
    starts[0, 2] = True
    with torch.no_grad():
        warm = core(torch.randn(7, B, IN, dtype=torch.float64), core.initial_state(B, "cpu"),
                    torch.zeros(7, B, dtype=torch.bool))[1]
        y_step, s_step = run_steps(core, x, warm, starts)
        for cuts in ([], [6], [2, 3, 17, 30]):
            y_seq, s_seq = run_pieces(core, x, warm, starts, cuts)
            torch.testing.assert_close(y_seq, y_step, atol=1e-10, rtol=1e-10)
            assert s_seq.keys() == s_step.keys()
            for k in s_step:
                torch.testing.assert_close(s_seq[k], s_step[k], atol=1e-10, rtol=1e-10)


def test_reset_mid_sequence_starts_from_scratch():
    """After a start at step r of env b, that env's outputs and memory are a fresh core's on x[r:].

    The ring pointer is not rewound by a start (slots are unordered), so the fresh
    core starts writing at the slot env b had reached at step r.
    """
    C, M, T, B = 4, 4, 40, 3
    core = _core(chunk_size=C, max_chunks=M, top_k=2)
    x = torch.randn(T, B, IN, dtype=torch.float64)
    starts = torch.zeros(T, B, dtype=torch.bool)
    resets = [5, 18, 31]
    for b, r in enumerate(resets):
        starts[r, b] = True
    with torch.no_grad():
        warm = core(torch.randn(22, B, IN, dtype=torch.float64), core.initial_state(B, "cpu"),
                    torch.zeros(22, B, dtype=torch.bool))[1]
        y, s = core(x, warm, starts)
        for b, r in enumerate(resets):
            fresh = core.initial_state(1, "cpu")
            done = (warm["partial_len"][b] + r) // C  # chunks completed before the start
            fresh["write_ptr"][:] = (warm["write_ptr"][b] + done) % M
            y_fresh, s_fresh = core(x[r:, b : b + 1], fresh, starts[r:, b : b + 1])
            torch.testing.assert_close(y[r:, b : b + 1], y_fresh, atol=1e-10, rtol=1e-10)
            for k in ("chunk_valid", "partial_len", "write_ptr", "partial0", "partial1"):
                torch.testing.assert_close(s[k][b : b + 1], s_fresh[k], atol=1e-10, rtol=1e-10)
            valid = s["chunk_valid"][b]
            assert valid.any()
            for k in ("chunks0", "chunks1", "keys0", "keys1"):
                torch.testing.assert_close(s[k][b][valid], s_fresh[k][0][valid], atol=1e-10, rtol=1e-10)
        y_cold, _ = core(x, core.initial_state(B, "cpu"), starts)
        for b, r in enumerate(resets):
            assert not torch.allclose(y[:r, b], y_cold[:r, b])


def test_state_is_detached_and_sequence_chunks_carry_gradient():
    C, T, B = 4, 14, 2
    core = _core(chunk_size=C, num_layers=1, max_chunks=3, top_k=3).train()
    x = torch.randn(T, B, IN, dtype=torch.float64, requires_grad=True)
    y, state = core(x, core.initial_state(B, "cpu"), torch.zeros(T, B, dtype=torch.bool))
    assert not any(v.requires_grad for v in state.values())
    # the last step reaches step 0 only through chunk 0 of this sequence
    (y[-1] * torch.randn_like(y[-1])).sum().backward()  # (a plain sum of a layer norm is flat)
    assert x.grad[0].abs().sum() > 0


def test_state_layout():
    core = _core(chunk_size=4, max_chunks=6, num_layers=2)
    state = core.initial_state(5, "cpu")
    assert state["chunks1"].shape == (5, 6, 4, 32)
    assert state["keys0"].shape == (5, 6, 32)
    assert state["partial0"].shape == (5, 4, 32)
    assert state["chunk_valid"].shape == (5, 6) and not state["chunk_valid"].any()
    assert state["partial_len"].shape == (5,) and state["write_ptr"].shape == (5,)


def test_forward_never_reads_tensor_data_on_the_host():
    """The core runs on the meta device (no data at all), so forward has no .item(),
    no nonzero() and no other shape that depends on values: nothing syncs the device."""
    core = HCAMCore(IN, hidden_size=32, chunk_size=4, max_chunks=3).to("meta")
    for T in (1, 6, 13):  # 13 steps complete more chunks than there are slots
        state = core.initial_state(2, "meta")
        starts = torch.zeros(T, 2, dtype=torch.bool, device="meta")
        y, new = core(torch.empty(T, 2, IN, device="meta"), state, starts)
        assert y.shape == (T, 2, 32)
        assert {k: v.shape for k, v in new.items()} == {k: v.shape for k, v in state.items()}


def test_a_handed_over_ring_buffer_is_written_in_place():
    """Acting with ``reuse_state=True`` files chunks into the given buffer, never a copy."""
    M, C, T, B = 3, 2, 20, 2
    core = _core(chunk_size=C, max_chunks=M, num_layers=2)
    x = torch.randn(T, B, IN, dtype=torch.float64)
    starts = torch.zeros(T, B, dtype=torch.bool)
    state = core.initial_state(B, "cpu")
    buffers = {k: state[k] for k in ("chunks0", "keys0", "chunks1", "keys1")}
    with torch.no_grad():
        for t in range(T):
            _, state = core(x[t : t + 1], state, starts[t : t + 1], reuse_state=True)
    for k, tensor in buffers.items():
        assert state[k] is tensor, k
    assert state["chunk_valid"].all() and bool(buffers["chunks0"].abs().sum() > 0)
