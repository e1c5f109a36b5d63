"""LSTM/GRU cores: the sequence paths (packed, padded, the GRU's scan) against the one-step loop."""

from __future__ import annotations

import os

import pytest
import torch

import memory_modules.rnn as rnn
from memory_modules import make_core

IN = 5
CASES = [("lstm", 1), ("gru", 1), ("lstm", 2), ("gru", 2)]
IDS = [f"{n}-L{layers}" for n, layers in CASES]


PATHS = ["packed", "padded", "scan"]
CASE_PATHS = [(n, layers, p) for n, layers in CASES for p in PATHS]
CASE_PATH_IDS = [f"{n}-L{layers}-{p}" for n, layers, p in CASE_PATHS]


def _core(name: str, num_layers: int, hidden: int = 16, seed: int = 0, path: str = "auto"):
    torch.manual_seed(seed)
    core = make_core(name, IN, hidden_size=hidden, num_layers=num_layers)
    core.sequence_path = path
    return core


def _warm_state(core, B: int):
    """A state that is far from zeros, so resetting it or not makes a difference."""
    return {k: torch.randn_like(v) for k, v in core.initial_state(B, "cpu").items()}


def _step_loop(core, x, state, starts):
    ys = []
    for t in range(x.shape[0]):
        y, state = core(x[t : t + 1], state, starts[t : t + 1])
        ys.append(y)
    return torch.cat(ys), state


def _assert_same(seq, step):
    (y_seq, s_seq), (y_step, s_step) = seq, step
    torch.testing.assert_close(y_seq, y_step, atol=1e-5, rtol=1e-5)
    assert s_seq.keys() == s_step.keys()
    for k in s_step:
        torch.testing.assert_close(s_seq[k], s_step[k], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,num_layers,path", CASE_PATHS, ids=CASE_PATH_IDS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_many_resets_match_step_loop(name, num_layers, seed, path):
    """Dense random resets: runs of starts (length-1 segments), starts at t=0 and t=T-1."""
    core = _core(name, num_layers, seed=seed, path=path).eval()
    gen = torch.Generator().manual_seed(100 + seed)
    T, B = 37, 9
    x = torch.randn(T, B, IN, generator=gen)
    starts = torch.rand(T, B, generator=gen) < 0.3
    starts[:, 0] = False  # env 0: no reset at all (one segment from the stored state)
    starts[:, 1] = True  # env 1: every step is a new episode
    starts[-1, 2] = True  # env 2: last segment is a single step
    starts[0, 3] = True  # env 3: reset right at the first step
    with torch.no_grad():
        state = _warm_state(core, B)
        _assert_same(core(x, state, starts), _step_loop(core, x, state, starts))


@pytest.mark.parametrize("name,num_layers", CASES, ids=IDS)
def test_no_resets_match_step_loop(name, num_layers):
    core = _core(name, num_layers).eval()
    T, B = 20, 4
    x = torch.randn(T, B, IN)
    starts = torch.zeros(T, B, dtype=torch.bool)
    with torch.no_grad():
        state = _warm_state(core, B)
        _assert_same(core(x, state, starts), _step_loop(core, x, state, starts))


@pytest.mark.parametrize("name,path", [(n, p) for n in ("lstm", "gru") for p in PATHS])
def test_sequence_path_calls(name, path, monkeypatch):
    """Resets inside the sequence: each layer's fused RNN runs all segments in one
    PackedSequence, or in one padded batch per length bucket; no loop over steps in
    Python. The scan calls no torch RNN at all, resets or not."""
    core = _core(name, 2, path=path).eval()
    calls = []
    for i, layer in enumerate(core.layers):
        layer.register_forward_hook(lambda mod, args, out, i=i: calls.append((i, args[0])))
    packs = []
    real_pack = rnn.pack_padded_sequence

    def counting_pack(*args, **kwargs):
        packs.append(kwargs.get("enforce_sorted"))
        return real_pack(*args, **kwargs)

    monkeypatch.setattr(rnn, "pack_padded_sequence", counting_pack)
    T, B = 30, 6
    starts = torch.zeros(T, B, dtype=torch.bool)
    starts[[3, 4, 10, 29], [0, 0, 2, 5]] = True  # segments: 4 + 2 + 1 + 1 = 10
    with torch.no_grad():
        core(torch.randn(T, B, IN), core.initial_state(B, "cpu"), starts)
    if path == "scan":
        assert packs == [] and calls == []
        return
    if path == "packed":
        assert packs == [False]
        assert [i for i, _ in calls] == [0, 1]
        assert all(isinstance(a, torch.nn.utils.rnn.PackedSequence) for _, a in calls)
    else:
        assert packs == []
        # Segment lengths 3, 1, 26 | 30 | 10, 20 | 30 | 30 | 29, 1, bucketed by length in
        # (2^(k-1), 2^k]: {1, 1}, {3}, {10}, {26, 30, 20, 30, 30, 29}; each bucket is one
        # padded batch [longest, segments], run through both layers.
        batches = [(1, 2), (3, 1), (10, 1), (30, 6)]
        assert [(i, tuple(a.shape[:2])) for i, a in calls] == [
            (i, shape) for shape in batches for i in (0, 1)
        ]

    # Without resets inside the sequence there is nothing to cut: one plain call per layer.
    calls.clear()
    packs.clear()
    starts = torch.zeros(T, B, dtype=torch.bool)
    starts[0] = True  # a start at step 0 only resets the stored state
    with torch.no_grad():
        core(torch.randn(T, B, IN), core.initial_state(B, "cpu"), starts)
    assert packs == []
    assert [(i, tuple(a.shape[:2])) for i, a in calls] == [(0, (T, B)), (1, (T, B))]


def _auto_path_taken(core, monkeypatch, T: int, B: int, starts) -> list[str]:
    seen = []
    for path in ("packed", "padded"):
        real = getattr(core, f"_segments_{path}")
        monkeypatch.setattr(
            core, f"_segments_{path}", lambda *a, p=path, f=real: seen.append(p) or f(*a)
        )
    real_scan = core._run_scan
    monkeypatch.setattr(core, "_run_scan", lambda *a: seen.append("scan") or real_scan(*a))
    core(torch.randn(T, B, IN), core.initial_state(B, "cpu"), starts)
    return seen


def test_auto_path_on_cpu(monkeypatch):
    """Off CUDA the GRU scans when the padded buckets would loop over more steps than the
    sequence has (ragged episodes) or when no episode starts inside it, and pads when
    episodes tile it; the LSTM pads (its padded batches run torch's fused oneDNN kernel)."""
    ragged = torch.zeros(30, 6, dtype=torch.bool)
    ragged[[3, 4, 10, 29], [0, 0, 2, 5]] = True  # buckets of 1, 3, 10 and 30 steps: 44 > 30
    tiled = torch.zeros(8, 3, dtype=torch.bool)
    tiled[4] = True  # two episodes of 4 steps per env: one bucket of 4 steps
    lstm, gru = _core("lstm", 1), _core("gru", 1)
    assert lstm.sequence_path == gru.sequence_path == "auto"
    assert _auto_path_taken(lstm, monkeypatch, 30, 6, ragged) == ["padded"]
    assert _auto_path_taken(gru, monkeypatch, 30, 6, ragged) == ["scan"]
    assert _auto_path_taken(gru, monkeypatch, 8, 3, tiled) == ["padded"]
    # No start inside the sequence: the GRU scans (without the reset multiply), the LSTM
    # makes one fused call.
    uncut = torch.zeros(8, 3, dtype=torch.bool)
    uncut[0] = True
    assert _auto_path_taken(gru, monkeypatch, 8, 3, uncut) == ["scan"]
    assert _auto_path_taken(lstm, monkeypatch, 8, 3, uncut) == []


def test_bad_sequence_path_is_an_error():
    core = _core("gru", 1, path="loop")
    starts = torch.zeros(5, 2, dtype=torch.bool)
    starts[2, 0] = True
    with pytest.raises(ValueError, match="sequence_path must be one of"):
        core(torch.randn(5, 2, IN), core.initial_state(2, "cpu"), starts)


@pytest.mark.parametrize("name,num_layers,path", CASE_PATHS, ids=CASE_PATH_IDS)
def test_gradients_match_step_loop(name, num_layers, path):
    """Backward through the packed path equals backward through T single steps,
    for the weights and for the stored state."""
    starts = torch.zeros(16, 5, dtype=torch.bool)
    starts[[0, 2, 3, 9, 15], [1, 0, 0, 3, 4]] = True
    _check_gradients(name, num_layers, path, starts)


@pytest.mark.parametrize("name,num_layers", CASES, ids=IDS)
def test_gradients_without_starts_inside(name, num_layers):
    """"auto" with a start at step 0 only (the GRU's scan without the reset multiply off
    CUDA, the LSTM's fused call): backward equals T single steps."""
    starts = torch.zeros(16, 5, dtype=torch.bool)
    starts[0, 1] = True
    _check_gradients(name, num_layers, "auto", starts)


def _check_gradients(name, num_layers, path, starts):
    T, B = starts.shape
    x = torch.randn(T, B, IN)
    w = torch.randn(T, B, 16)
    state0 = _warm_state(_core(name, num_layers), B)

    def grads(sequence: bool):
        core = _core(name, num_layers, path=path)
        state = {k: v.clone().requires_grad_(True) for k, v in state0.items()}
        if sequence:
            y, final = core(x, state, starts)
        else:
            y, final = _step_loop(core, x, state, starts)
        loss = (y * w).sum() + sum(v.square().sum() for v in final.values())
        loss.backward()
        out = {n: p.grad for n, p in core.named_parameters()}
        out.update({f"state.{k}": v.grad for k, v in state.items()})
        return out

    g_seq, g_step = grads(True), grads(False)
    assert g_seq.keys() == g_step.keys()
    for k in g_step:
        torch.testing.assert_close(g_seq[k], g_step[k], atol=1e-5, rtol=1e-4, msg=k)
    # Env 1 resets at step 0: nothing may flow back into its stored state.
    for k in state0:
        assert torch.all(g_seq[f"state.{k}"][1] == 0)
        assert torch.any(g_seq[f"state.{k}"][0] != 0)


@pytest.mark.parametrize("name,keys", [("lstm", {"h", "c"}), ("gru", {"h"})])
def test_state_is_batch_first(name, keys):
    core = _core(name, 3, hidden=7)
    state = core.initial_state(4, "cpu")
    assert set(state) == keys
    for v in state.values():
        assert v.shape == (4, 3, 7)
        assert v.dtype == torch.float32
        assert torch.all(v == 0)
    y, new = core(torch.randn(6, 4, IN), state, torch.zeros(6, 4, dtype=torch.bool))
    assert y.shape == (6, 4, 7)
    assert {k: v.shape for k, v in new.items()} == {k: v.shape for k, v in state.items()}


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_start_at_step_zero_forgets_stored_state(name):
    core = _core(name, 2).eval()
    T, B = 12, 3
    x = torch.randn(T, B, IN)
    starts = torch.zeros(T, B, dtype=torch.bool)
    starts[0] = True
    with torch.no_grad():
        y_warm, s_warm = core(x, _warm_state(core, B), starts)
        y_zero, s_zero = core(x, core.initial_state(B, "cpu"), starts)
        y_one, _ = core(x[:1], _warm_state(core, B), starts[:1])
    _assert_same((y_warm, s_warm), (y_zero, s_zero))
    torch.testing.assert_close(y_one, y_zero[:1])


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_empty_sequence_keeps_state(name):
    core = _core(name, 1)
    state = _warm_state(core, 3)
    y, new = core(torch.randn(0, 3, IN), state, torch.zeros(0, 3, dtype=torch.bool))
    assert y.shape == (0, 3, core.output_size)
    for k in state:
        assert torch.equal(new[k], state[k])


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_retain_gate_bias(name):
    """The forget (LSTM) / update (GRU) gate bias starts shifted by RETAIN_BIAS."""
    core = _core(name, 2, hidden=64)
    H = 64
    for layer in core.layers:
        b = layer.bias_ih_l0
        other = torch.cat([b[:H], b[2 * H :]])
        assert abs(b[H : 2 * H].mean().item() - rnn.RETAIN_BIAS) < 0.1
        assert other.abs().mean().item() < 0.5


@pytest.mark.parametrize("name", ["lstm", "gru"])
@pytest.mark.parametrize("shift", [0.0, -1.0, 3.5])
def test_retain_bias_option(name, shift):
    """``retain_bias`` replaces the shift; 0 leaves torch's init (gate bias like the others)."""
    H = 64
    torch.manual_seed(0)
    core = make_core(name, IN, hidden_size=H, num_layers=2, retain_bias=shift)
    torch.manual_seed(0)
    default = make_core(name, IN, hidden_size=H, num_layers=2)
    for layer, ref in zip(core.layers, default.layers, strict=True):
        b, b_ref = layer.bias_ih_l0, ref.bias_ih_l0
        assert torch.allclose(b[H : 2 * H], b_ref[H : 2 * H] - rnn.RETAIN_BIAS + shift, atol=1e-6)
        assert torch.equal(torch.cat([b[:H], b[2 * H :]]), torch.cat([b_ref[:H], b_ref[2 * H :]]))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_retain_bias_rejects_non_finite(bad):
    with pytest.raises(ValueError, match="retain_bias"):
        make_core("gru", IN, retain_bias=bad)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_cuda_matches_cpu(name):
    core = _core(name, 2).eval()
    T, B = 25, 8
    x = torch.randn(T, B, IN)
    starts = torch.rand(T, B) < 0.2
    state = _warm_state(core, B)
    # Full fp32 on the GPU: cuDNN's RNNs use TF32 on Ampere and later by default, which
    # differs from the CPU by ~1e-3 relative after 25 steps (seen on an H200).
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.no_grad():
            y_cpu, s_cpu = core(x, state, starts)
            core_gpu = core.to("cuda")
            y_gpu, s_gpu = core_gpu(x.cuda(), {k: v.cuda() for k, v in state.items()}, starts.cuda())
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    assert y_gpu.device.type == "cuda"
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, atol=1e-4, rtol=1e-4)
    for k in s_cpu:
        assert s_gpu[k].device.type == "cuda"
        torch.testing.assert_close(s_gpu[k].cpu(), s_cpu[k], atol=1e-4, rtol=1e-4)


def test_update_paths_benchmark_runs(capsys):
    """benchmarks/update_paths.py times a real PPO update per layout and names what auto took."""
    from benchmarks.update_paths import main

    # 102-step sequences (the recipe takes 51, one episode each, so no start inside)
    assert main(["--experiments", "gru_repeat_first", "--paths", "padded", "scan", "auto",
                 "--repeats", "1", "algo.num_envs=64", "algo.num_steps=102",
                 "algo.seq_len=102"]) == 0
    row = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| `gru_repeat_first`")]
    cells = [c.strip() for c in row[0].strip("|").split("|")]
    assert cells[1] == "64 x 102"
    assert all(float(c) > 0 for c in cells[2:5])
    assert cells[5] == "padded"  # two 51-step episodes tile each 102-step sequence


@pytest.mark.parametrize("flags, columns", [
    (["--kernels", "native", "python"], ["scan/native (ms)", "scan/python (ms)"]),
    (["--precisions", "float32", "bfloat16"], ["scan/float32 (ms)", "scan/bfloat16 (ms)"]),
], ids=["kernels", "precisions"])
def test_update_paths_times_each_kernel_and_precision(capsys, monkeypatch, flags, columns):
    """--kernels and --precisions give one column per value (with the path), and the
    process's GRU kernel is left as it was."""
    from benchmarks.update_paths import main
    from memory_modules import gru_native

    monkeypatch.delenv(gru_native.KERNEL_ENV, raising=False)
    assert main(["--experiments", "gru_repeat_first", "--paths", "scan", *flags,
                 "--repeats", "1", "algo.num_steps=51", "algo.seq_len=51"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = [c.strip() for c in next(ln for ln in lines if ln.startswith("| experiment")).strip("|").split("|")]
    assert header[2:4] == columns
    row = [c.strip() for c in next(ln for ln in lines if ln.startswith("| `gru_repeat_first`")).strip("|").split("|")]
    assert float(row[2]) > 0 and float(row[3]) > 0
    assert gru_native.KERNEL_ENV not in os.environ
