"""Every core with memory learns a supervised recall task; the MLP control cannot.

A cue (one of K symbols) is shown at step 0, then ``DELAY`` steps of noise, then
a query step at which the core's output must name the cue. Chance is 1/K.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from memory_modules import CORES, make_core

K = 4
DELAY = 32
IN = K + 1  # symbol channels + query flag

# Per-core recipe: core config, learning rate, max updates. Keep budgets small (CPU CI).
RECIPES: dict[str, dict] = {
    "mlp": dict(cfg={}, lr=3e-3, updates=300),
    "lstm": dict(cfg={"hidden_size": 32}, lr=5e-3, updates=800),
    "gru": dict(cfg={"hidden_size": 32}, lr=1e-2, updates=400),
    "gtrxl": dict(cfg=dict(hidden_size=64, window=40), lr=1e-3, updates=600),
    "hcam": dict(cfg=dict(hidden_size=32, max_chunks=4, top_k=2), lr=1e-3, updates=600),
    "rmc": dict(cfg=dict(head_size=16, num_heads=2), lr=1e-3, updates=300),
    "dtmem": dict(cfg=dict(hidden_size=32, mem_slots=4, num_heads=2), lr=2e-3, updates=300),
}


def recall_batch(batch: int, gen: torch.Generator):
    T = DELAY + 2
    cue = torch.randint(0, K, (batch,), generator=gen)
    x = torch.zeros(T, batch, IN)
    x[0, torch.arange(batch), cue] = 1.0
    x[1 : 1 + DELAY, :, :K] = torch.randn(DELAY, batch, K, generator=gen) * 0.5
    x[-1, :, K] = 1.0
    starts = torch.zeros(T, batch, dtype=torch.bool)
    starts[0] = True
    return x, starts, cue


def train_recall(name: str, seed: int = 0) -> float:
    return fit_recall(name, seed)[2]


def fit_recall(name: str, seed: int = 0, target: float = 0.98):
    """(core, head, test accuracy) after training until ``target`` accuracy or the budget."""
    recipe = RECIPES[name]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    core = make_core(name, IN, **recipe["cfg"])
    head = nn.Linear(core.output_size, K)
    params = list(core.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=recipe["lr"])
    x_test, s_test, y_test = recall_batch(512, torch.Generator().manual_seed(1234))

    def accuracy() -> float:
        with torch.no_grad():
            out, _ = core(x_test, core.initial_state(512, "cpu"), s_test)
            return (head(out[-1]).argmax(-1) == y_test).float().mean().item()

    acc = 0.0
    for update in range(recipe["updates"]):
        x, starts, cue = recall_batch(64, gen)
        out, _ = core(x, core.initial_state(64, "cpu"), starts)
        loss = nn.functional.cross_entropy(head(out[-1]), cue)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if update % 50 == 49:
            acc = accuracy()
            if acc >= target and name != "mlp":
                break
    return core, head, accuracy()


@pytest.mark.parametrize("name", [c for c in CORES if c != "mlp"])
def test_memory_core_learns_recall(name):
    acc = train_recall(name)
    assert acc >= 0.95, f"{name} reached only {acc:.3f} on delay-{DELAY} recall"


def test_mlp_stays_at_chance():
    acc = train_recall("mlp")
    # chance = 0.25; 512 test samples give a std of ~0.02
    assert acc < 0.25 + 0.08, f"the memoryless control scored {acc:.3f}: the task leaks the cue"
