"""memory_modules.gru_native: the GRU scan's C++ loops against its Python loops."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from memory_modules import gru_native
from memory_modules.gru_sequence import gru_sequence, gru_step
from memory_modules.rnn import GRUCore


@pytest.fixture
def kernel(monkeypatch):
    """Run the scan with ``kernel("python")`` or ``kernel("native")`` (skipped where the
    C++ loops cannot be built)."""
    def use(name: str) -> None:
        monkeypatch.setenv(gru_native.KERNEL_ENV, name)
        gru_native.loops.cache_clear()
        if name == "native" and gru_native.loops() is None:
            pytest.skip("the GRU scan's C++ loops could not be built here")
    yield use
    gru_native.loops.cache_clear()


def _case(dtype, T=11, B=5, D=7, H=16, resets=True, seed=0):
    torch.manual_seed(seed)
    gru = nn.GRU(D, H).to(dtype)
    x = torch.randn(T, B, D, dtype=dtype, requires_grad=True)
    h0 = torch.randn(B, H, dtype=dtype, requires_grad=True)
    keep = None
    if resets:
        keep = torch.ones(T, B, 1, dtype=dtype)
        keep[[0, 3, 4, T - 1], [1, 0, 0, 2]] = 0  # at step 0, two in a row, at the end
    weights = [gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0]
    return x, h0, keep, weights


def _run(x, h0, keep, weights):
    leaves = (x, h0, *weights)
    out = gru_sequence(x, h0, keep, *weights)
    w = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    grads = torch.autograd.grad((out * w).sum(), leaves)
    return [out.detach(), *grads]


@pytest.mark.parametrize("resets", [True, False], ids=["resets", "no-resets"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_native_matches_python(kernel, dtype, resets):
    """The output and the gradients of x, h0 and the four weights agree with the Python loops."""
    case = _case(dtype, resets=resets)
    kernel("python")
    ref = _run(*case)
    kernel("native")
    got = _run(*case)
    tol = dict(atol=1e-12, rtol=1e-10) if dtype == torch.float64 else dict(atol=2e-5, rtol=2e-5)
    for name, a, b in zip(["out", "x", "h0", "w_ih", "w_hh", "b_ih", "b_hh"], got, ref, strict=True):
        torch.testing.assert_close(a, b, msg=name, **tol)
    if resets:  # copy 1 starts at step 0: h0 gets no gradient there
        assert torch.all(got[2][1] == 0) and torch.any(got[2][0] != 0)


def test_native_gradcheck(kernel):
    kernel("native")
    x, h0, keep, weights = _case(torch.float64, T=6, B=3, D=4, H=5)
    assert torch.autograd.gradcheck(lambda *a: gru_sequence(a[0], a[1], keep, *a[2:]),
                                    (x, h0, *weights))


def test_native_sizes_of_a_ppo_minibatch(kernel):
    """A GRU-128 over 103 steps of 16 sequences (Autoencode's minibatch), float32."""
    case = _case(torch.float32, T=103, B=16, D=16, H=128, resets=False, seed=1)
    kernel("python")
    ref = _run(*case)
    kernel("native")
    for a, b in zip(_run(*case), ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_native_saturated_gates(kernel, dtype):
    """Pre-activations far past where exp overflows (|x| in the thousands): the gates sit
    at 0 and 1, finite, as in the Python loops (an approximate division once gave NaN)."""
    x, h0, keep, weights = _case(dtype, seed=2)
    x = (x.detach() * 300).requires_grad_()
    kernel("python")
    ref = _run(x, h0, keep, weights)
    kernel("native")
    got = _run(x, h0, keep, weights)
    for name, a, b in zip(["out", "x", "h0", "w_ih", "w_hh", "b_ih", "b_hh"], got, ref, strict=True):
        assert torch.isfinite(a).all(), name
        scale = max(1.0, b.abs().max().item())  # w_ih's gradients are x's size: about 1e3
        torch.testing.assert_close(a, b, atol=1e-5 * scale, rtol=1e-5, msg=name)


def test_native_gates_exact_at_half_and_one(kernel):
    """sigmoid(0) is 0.5 and sigmoid(40) is 1 in float32, bit for bit as torch gives them:
    weights 0, biases 0 (r = z = 1/2, n = 0) and then 40 on z (the state kept whole)."""
    kernel("native")
    H = 8
    x, h0 = torch.zeros(3, 2, 4), torch.ones(2, H)
    w = [torch.zeros(3 * H, 4), torch.zeros(3 * H, H), torch.zeros(3 * H), torch.zeros(3 * H)]
    half = gru_sequence(x, h0, None, *w)
    assert torch.equal(half[0], torch.full((2, H), 0.5))  # n = 0: z * h = h / 2 each step
    assert torch.equal(half[2], torch.full((2, H), 0.125))
    w[2] = torch.zeros(3 * H).index_fill_(0, torch.arange(H, 2 * H), 40.0)
    assert torch.equal(gru_sequence(x, h0, None, *w), torch.ones(3, 2, H))


def test_native_propagates_nan(kernel):
    """A NaN in one copy's input is NaN in that copy's outputs from then on, nowhere else,
    as in the Python loops (the trainer's non-finite loss check relies on it)."""
    x, h0, keep, weights = _case(torch.float32, resets=False, seed=3)
    x = x.detach().clone()
    x[3, 2, 0] = float("nan")
    kernel("python")
    ref = gru_sequence(x, h0, None, *weights).detach()
    kernel("native")
    got = gru_sequence(x, h0, None, *weights).detach()
    assert torch.equal(got.isnan(), ref.isnan())
    assert got[3:, 2].isnan().all() and not got[:3].isnan().any() and not got[:, [0, 1, 3, 4]].isnan().any()


def test_kernel_switch(kernel, monkeypatch):
    kernel("python")
    assert gru_native.loops() is None and not gru_native.available()
    monkeypatch.setenv(gru_native.KERNEL_ENV, "cuda")
    gru_native.loops.cache_clear()
    with pytest.raises(ValueError, match=r"RECALL_GRU_KERNEL='cuda'; accepted: native, python"):
        gru_native.loops()


def test_failed_build_warns_and_falls_back(kernel, monkeypatch, tmp_path):
    """A build that fails (here: no compiler found) warns once, and the scan runs its Python loops."""
    kernel("native")  # skips where nothing builds
    monkeypatch.setenv(gru_native.CACHE_ENV, str(tmp_path))  # nothing built there yet

    def no_compiler(name, where):
        raise RuntimeError("Error building extension: c++: command not found")

    monkeypatch.setattr(gru_native, "_build", no_compiler)
    gru_native.loops.cache_clear()
    with pytest.warns(UserWarning, match="C\\+\\+ loops are not available .*command not found"):
        assert gru_native.loops() is None
    x, h0, keep, weights = _case(torch.float64)
    out = gru_sequence(x, h0, keep, *weights)  # the Python loops
    assert out.shape == (11, 5, 16) and torch.isfinite(out).all()


def test_module_command_names_the_loops_in_use(kernel):
    """``python -m memory_modules.gru_native`` (what ``make setup`` runs) builds or finds the
    C++ loops and says which loops the scan will use."""
    kernel("native")
    done = subprocess.run([sys.executable, "-m", "memory_modules.gru_native"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("GRU scan loops: C++, ")
    assert gru_native.build_name() in done.stdout


def test_native_refuses_strided_buffers(kernel):
    """The loops read raw pointers: a strided buffer is an error naming it, not misread."""
    kernel("native")
    loops = gru_native.loops()
    T, B, H = 3, 2, 4
    pre, gi = torch.zeros(T, B, 3 * H), torch.zeros(B, T, 3 * H).transpose(0, 1)
    bufs = torch.empty(T, B, 2 * H), torch.empty(T, B, H), torch.empty(T, B, H)
    with pytest.raises(RuntimeError, match=r"gru_loops: gi must be contiguous"):
        loops.forward_loop(pre, gi, torch.zeros(B, H), torch.zeros(3 * H, H), None, None, *bufs)
    grad = torch.zeros(B, T, H).transpose(0, 1)
    with pytest.raises(RuntimeError, match=r"gru_loops: grad_out must be contiguous"):
        loops.backward_loop(grad, bufs[0], bufs[1], pre, bufs[2], None, torch.zeros(3 * H, H),
                            torch.empty(T, B, 4 * H))


@pytest.mark.parametrize("layers", [1, 2])
def test_acting_step_is_the_scans_first_step(kernel, layers):
    """A GRU core's acting step (T = 1, no autograd) takes the scan's C++ step: the state it
    returns is, bit for bit, what the training pass's scan computes at that step, and within
    rounding of torch's fused cell; resets wipe the state as before."""
    kernel("native")
    torch.manual_seed(0)
    core = GRUCore(7, 16, num_layers=layers, retain_bias=-2.0)
    x = torch.randn(1, 5, 7)
    state = {"h": torch.randn(5, layers, 16)}
    starts = torch.tensor([[True, False, False, True, False]])
    with torch.no_grad():
        y, new = core(x, state, starts)
        scan_y, scan_new = core._run_scan(x, {"h": state["h"] * (~starts[0]).view(5, 1, 1)},
                                          starts)
        kernel("python")  # the Python loops: no C++ step, so torch's fused cell
        fused_y, fused_new = core(x, state, starts)
    assert torch.equal(y, scan_y) and torch.equal(new["h"], scan_new["h"])
    torch.testing.assert_close(y, fused_y, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(new["h"], fused_new["h"], atol=1e-6, rtol=1e-6)
    assert new["h"].shape == (5, layers, 16) and torch.equal(new["h"][:, -1], y[0])


def test_acting_step_leaves_autograd_and_other_dtypes_to_torch(kernel):
    """With autograd on, or a dtype the loops do not take, ``gru_step`` declines (None) and
    the core's step is torch's fused cell, its gradients intact."""
    kernel("native")
    gru = nn.GRU(3, 4)
    w = [gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0]
    assert gru_step(torch.randn(2, 3), torch.randn(2, 4), *w) is None  # autograd on
    with torch.no_grad():
        assert gru_step(torch.randn(2, 3), torch.randn(2, 4), *w) is not None
        half = [t.bfloat16() for t in w]
        assert gru_step(torch.randn(2, 3).bfloat16(), torch.randn(2, 4).bfloat16(), *half) is None
    core = GRUCore(3, 4)
    y, _ = core(torch.randn(1, 2, 3), core.initial_state(2, "cpu"), torch.zeros(1, 2, dtype=torch.bool))
    y.sum().backward()
    assert core.layers[0].weight_hh_l0.grad is not None
