"""Supervised fit of Ballet's instruction-step move through the policy: does the head learn?

    python -m benchmarks.head_fit [--copies 4096] [--steps 300] [--overrides policy.core_norm=true ...]
    python -m benchmarks.head_fit --sequence [--steps 2000] [--batch 256] [--overrides ...]

Plays the watch phase of ``--copies`` Ballet episodes (2 dancers, delay 16; the
task ignores actions while watching), then fits the policy of
``experiment=gru_ballet`` to the oracle's first move at the instruction step,
from that step's observation alone (cross-entropy, Adam 1e-3, batches of 256,
one step through the core from a fresh state). The first move heads for one of
the two dancers, which the view shows, so about 0.5 accuracy needs no memory; a
fit that stays at the label's marginal (loss ~1.55, accuracy ~0.27) has not
learned to read the view at all. Each ``--overrides`` group is one row (default:
the experiment as committed, and with ``policy.core_norm=true``). Held-out
accuracy on the first 512 copies. CPU, one thread.

``--sequence``: the same label, but from the whole episode up to the instruction
(the 64 watch steps and the instruction step through the core from the first step),
each Adam step on ``--batch`` (256) fresh episodes, held-out accuracy on 1024 other episodes
(``--held-out``) every ``--report`` steps. Above about 0.5 the policy has bound the
named dance to its dancer, with the label given directly: how many episodes this
takes bounds from below what PPO, whose signal is a noisy +-1 at the end of the
walk, would need.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import envs
from agents.common.config import compose, make_policy, policy_spec


def episodes(copies: int, seed: int, whole: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``copies`` episodes played to the instruction: its observation ``[B, 122]`` (with
    ``whole``, every observation up to it, ``[T, B, 122]``) and the oracle's first move."""
    env = envs.make_vec("recall/Ballet-v0", copies, seed=seed)
    obs, _ = env.reset(seed=seed)
    seen = [obs]
    for _ in range(env.watch_steps):  # 2 dancers x (16 dance + 16 delay)
        obs, *_ = env.step(torch.zeros(copies, dtype=torch.int64))
        if whole:
            seen.append(obs)
    if not (obs[:, -1] > 0).all():
        raise RuntimeError("the instruction did not come after the watch phase")
    return (torch.stack(seen) if whole else obs), env.oracle_actions().clone()


def _policy(overrides: list[str], seed: int):
    """A fresh policy of ``experiment=gru_ballet`` with ``overrides``, and its Adam (1e-3)."""
    torch.manual_seed(seed)
    env = envs.make_vec("recall/Ballet-v0", 1)
    policy = make_policy(policy_spec(compose(["experiment=gru_ballet", *overrides]), env))
    return policy, torch.optim.Adam(policy.parameters(), lr=1e-3)


def _name(overrides: list[str]) -> str:
    return " ".join(overrides) or "(as committed)"


def fit_sequence(overrides: list[str], steps: int, seed: int, report: int, held: int = 1024,
                 batch: int = 256) -> dict:
    policy, opt = _policy(overrides, seed)

    def logits(obs):
        T, B = obs.shape[:2]
        starts = torch.zeros(T, B, dtype=torch.bool)
        starts[0] = True
        y, _ = policy._core(policy.features(obs, starts), policy.initial_state(B, "cpu"), starts)
        return policy.heads(y[-1])[0]

    held_obs, held_label = episodes(held, 10**6 + seed, whole=True)
    start, curve = time.perf_counter(), []
    for i in range(1, steps + 1):
        obs, label = episodes(batch, seed * 10**5 + i, whole=True)
        loss = F.nll_loss(logits(obs), label)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i % report == 0 or i == steps:
            with torch.no_grad():
                out = logits(held_obs)
            acc = (out.argmax(-1) == held_label).float().mean().item()
            curve.append((i * batch, F.nll_loss(out, held_label).item(), acc))
            print(f"  {_name(overrides)}: {i * batch} episodes, held-out loss "
                  f"{curve[-1][1]:.3f}, accuracy {acc:.3f}, {time.perf_counter() - start:.0f} s", flush=True)
    return {"overrides": _name(overrides), "loss": curve[-1][1],
            "accuracy": curve[-1][2], "seconds": time.perf_counter() - start,
            "best": max(a for *_, a in curve)}


def fit(overrides: list[str], obs, label, steps: int, seed: int) -> dict:
    policy, opt = _policy(overrides, seed)
    held = torch.arange(512)

    def logits(idx):
        y, _ = policy._step(obs[idx], policy.initial_state(len(idx), "cpu"),
                            torch.ones(len(idx), dtype=torch.bool), None, None)
        return policy.heads(y)[0]

    start = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(512, len(label), (256,))
        loss = F.nll_loss(logits(idx), label[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = logits(held)
        acc = (out.argmax(-1) == label[held]).float().mean().item()
        held_loss = F.nll_loss(out, label[held]).item()
    return {"overrides": _name(overrides), "loss": held_loss, "accuracy": acc,
            "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--copies", type=int, default=4096)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sequence", action="store_true", help="fit from the whole episode (see above)")
    p.add_argument("--report", type=int, default=100, help="--sequence: held-out accuracy every N steps")
    p.add_argument("--held-out", type=int, default=1024, help="--sequence: held-out episodes")
    p.add_argument("--batch", type=int, default=256, help="--sequence: fresh episodes per Adam step")
    p.add_argument("--overrides", nargs="*", action="append", default=None,
                   help="one row per use; e.g. --overrides --overrides policy.core_norm=true")
    a = p.parse_args(argv)
    if a.copies <= 512:
        raise SystemExit(f"--copies {a.copies} is not accepted; accepted: > 512 (512 are held out)")
    torch.set_num_threads(1)
    rows = a.overrides if a.overrides is not None else [[], ["policy.core_norm=true"]]
    if a.sequence:
        if a.batch < 1:
            raise SystemExit(f"--batch {a.batch} is not accepted; accepted: >= 1")
        print(f"Ballet instruction-step move from the whole episode, {a.steps} Adam steps of "
              f"{a.batch} fresh episodes\n", flush=True)
        results = [fit_sequence(over, a.steps, a.seed, a.report, a.held_out, a.batch) for over in rows]
        print("\n| policy overrides | episodes | held-out loss | held-out accuracy (best) | seconds |\n"
              "|---|---:|---:|---:|---:|")
        for r in results:
            print(f"| {r['overrides']} | {a.steps * a.batch} | {r['loss']:.3f} | {r['accuracy']:.3f} "
                  f"({r['best']:.3f}) | {r['seconds']:.0f} |")
        return
    obs, label = episodes(a.copies, a.seed)
    marginal = torch.bincount(label, minlength=8).float() / len(label)
    entropy = -(marginal[marginal > 0] * marginal[marginal > 0].log()).sum().item()
    print(f"Ballet instruction-step move, {a.copies} copies, {a.steps} Adam steps of 256; "
          f"the label's marginal: loss {entropy:.3f}, accuracy {marginal.max():.3f}\n")
    print("| policy overrides | held-out loss | held-out accuracy | seconds |\n|---|---:|---:|---:|")
    for over in rows:
        r = fit(over, obs, label, a.steps, a.seed)
        print(f"| {r['overrides']} | {r['loss']:.3f} | {r['accuracy']:.3f} | {r['seconds']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
