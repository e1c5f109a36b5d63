"""What each memory core costs: parameters, state size, acting step and training pass.

    python benchmarks/core_cost.py [--quick] [--cores lstm gtrxl ...] [--threads N]
                                   [--no-sweep] [--rnn-layouts]

For every core in ``memory_modules.CORES`` whose module imports (the others are
reported as not available), with its default config and input size 64, on CPU
and, when present, CUDA:

* parameter count and state bytes per env;
* one acting step (T = 1, no grad) for 1024 envs, from a state warmed by 128 steps;
* one training forward + backward over T = 128 for 256 envs (loss: mean square of
  the outputs), with episode starts drawn at rate 1/32 per step, so the training
  path has to cut sequences at resets as in a real rollout.

Then, for ``hcam`` and ``gtrxl``, the acting step against the history the core can
attend to (128, 1024, 4096 steps): GTrXL with ``window = history`` (full attention
over the history), HCAM with ``max_chunks * chunk_size = history``. The cache is
first filled by running ``history`` steps of the core's own sequence path on 2 envs,
whose state rows are then tiled to all envs (the state is batch-first, so any row
is a valid env state).

With ``--rnn-layouts``, the LSTM/GRU training pass is also timed without episode
starts and with each of its two segment layouts forced.

Times are the median over repeats after warm-up calls (``torch.cuda.synchronize``
around every call on CUDA). The CPU runs torch on ``--threads`` threads (default 1). Where a case is too slow or too large on the CPU, the
number of envs is reduced; the tables always print the env count used.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch
from tqdm import tqdm

from memory_modules import CORES, core_class, core_options, make_core

INPUT = 64
ACT_ENVS = 1024
TRAIN_ENVS = 256
TRAIN_T = 128
WARM_STEPS = 128
RESET_RATE = 1 / 32
HISTORIES = (128, 1024, 4096)
FILL_ENVS = 2
FILL_CHUNK = 256
# Env counts for the history sweep: the CPU would need minutes (and GBs of state) for
# 1024 envs at 4096 steps of history; a GPU gets the full acting batch.
SWEEP_ENVS = {"cpu": 64, "cuda": ACT_ENVS}
# Per-core CPU caps for the training pass, where 256 envs take too long on 2 cores.
CPU_TRAIN_ENVS: dict[str, int] = {}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> float:
    """Median wall time of ``fn()`` in seconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def state_bytes(state: dict[str, torch.Tensor], batch: int) -> float:
    return sum(v.numel() * v.element_size() for v in state.values()) / batch


def warm_state(core, n_envs: int, steps: int, device: torch.device) -> dict[str, torch.Tensor]:
    """A state after ``steps`` steps of one episode: run the core's sequence path on
    ``FILL_ENVS`` envs in chunks of ``FILL_CHUNK`` steps, then tile the rows to ``n_envs``."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    seed_envs = min(FILL_ENVS, n_envs)
    state = core.initial_state(seed_envs, device)
    done = 0
    with torch.no_grad():
        while done < steps:
            t = min(FILL_CHUNK, steps - done)
            x = torch.randn(t, seed_envs, INPUT, generator=gen).to(device)
            starts = torch.zeros(t, seed_envs, dtype=torch.bool, device=device)
            starts[0] = done == 0
            _, state = core(x, state, starts)
            done += t
    rows = torch.arange(n_envs, device=device) % seed_envs
    return {k: v[rows].contiguous() for k, v in state.items()}


def acting_time(core, n_envs: int, device: torch.device, state, repeats: int) -> float:
    core.eval()
    x = torch.randn(1, n_envs, INPUT, device=device)
    starts = torch.zeros(1, n_envs, dtype=torch.bool, device=device)
    holder = [state]

    def step():
        with torch.no_grad():
            _, holder[0] = core(x, holder[0], starts)

    return time_call(step, device, repeats, warmup=3)


def training_time(
    core, n_envs: int, device: torch.device, repeats: int, reset_rate: float = RESET_RATE
) -> float:
    core.train()
    gen = torch.Generator(device="cpu").manual_seed(1)
    x = torch.randn(TRAIN_T, n_envs, INPUT, generator=gen).to(device)
    starts = (torch.rand(TRAIN_T, n_envs, generator=gen) < reset_rate).to(device)
    state = warm_state(core, n_envs, 32, device)
    params = list(core.parameters())

    def step():
        for p in params:
            p.grad = None
        y, _ = core(x, state, starts)
        y.square().mean().backward()

    return time_call(step, device, repeats, warmup=1)


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1e3
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def fmt_rate(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.2f} M"
    if x >= 1e3:
        return f"{x / 1e3:.1f} k"
    return f"{x:.0f}"


def fmt_bytes(n: float) -> str:
    if n >= 2**20:
        return f"{n / 2**20:.2f} MiB"
    if n >= 2**10:
        return f"{n / 2**10:.1f} KiB"
    return f"{n:.0f} B"


def sweep_config(name: str, history: int) -> dict:
    if name == "gtrxl":
        return {"window": history}
    if name == "hcam":
        chunk = core_options("hcam")["chunk_size"]  # the default chunk size
        return {"max_chunks": history // chunk}
    raise ValueError(name)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cores", nargs="*", default=list(CORES))
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: on a shared 2-core machine the 2-thread "
        "OpenMP pool is up to 60x slower when other processes load the cores)",
    )
    parser.add_argument("--no-sweep", action="store_true", help="skip the history sweep")
    parser.add_argument(
        "--rnn-layouts",
        action="store_true",
        help="also time the LSTM/GRU training pass without resets and in each sequence "
        "layout (packed, padded, scan)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    act_repeats, train_repeats = (5, 1) if args.quick else (20, 3)

    available, missing = [], []
    for name in args.cores:
        try:
            core_class(name)
            available.append(name)
        except Exception as exc:  # noqa: BLE001 -- a core being written may fail in any way
            missing.append(name)
            print(f"{name}: not available ({type(exc).__name__}: {exc})")

    devices = [torch.device("cpu")] + (
        [torch.device("cuda")] if torch.cuda.is_available() else []
    )
    jobs = [("cost", name, dev, None) for dev in devices for name in available]
    if not args.no_sweep:
        jobs += [
            ("sweep", name, dev, h)
            for dev in devices
            for name in ("gtrxl", "hcam")
            if name in available
            for h in HISTORIES
        ]

    if args.rnn_layouts:
        jobs += [
            ("layout", name, dev, None)
            for dev in devices
            for name in ("lstm", "gru")
            if name in available
        ]

    cost: dict[tuple[str, str], dict] = {}
    layouts: dict[tuple[str, str], dict] = {}
    sweep: dict[tuple[str, str, int], dict] = {}
    bar = tqdm(jobs, desc="core cost")
    for kind, name, dev, history in bar:
        bar.set_postfix_str(f"{name} {dev.type}" + (f" history {history}" if history else ""))
        torch.manual_seed(0)
        if kind == "cost":
            core = make_core(name, INPUT).to(dev)
            train_envs = TRAIN_ENVS if dev.type == "cuda" else CPU_TRAIN_ENVS.get(name, TRAIN_ENVS)
            state = warm_state(core, ACT_ENVS, WARM_STEPS, dev)
            act = acting_time(core, ACT_ENVS, dev, state, act_repeats)
            del state
            train = training_time(core, train_envs, dev, train_repeats)
            cost[(name, dev.type)] = dict(
                params=sum(p.numel() for p in core.parameters()),
                state=state_bytes(core.initial_state(1, dev), 1),
                act=act,
                train=train,
                train_envs=train_envs,
            )
        elif kind == "layout":
            core = make_core(name, INPUT).to(dev)
            row = {"none": training_time(core, TRAIN_ENVS, dev, train_repeats, 0.0)}
            for path in ("packed", "padded", "scan"):
                core.sequence_path = path
                row[path] = training_time(core, TRAIN_ENVS, dev, train_repeats)
            layouts[(name, dev.type)] = row
        else:
            n_envs = SWEEP_ENVS[dev.type]
            core = make_core(name, INPUT, **sweep_config(name, history)).to(dev)
            state = warm_state(core, n_envs, history, dev)
            act = acting_time(core, n_envs, dev, state, act_repeats)
            sweep[(name, dev.type, history)] = dict(
                envs=n_envs, state=state_bytes(state, n_envs), act=act
            )
            del state
        del core

    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    cpu_name = platform.processor() or platform.machine()
    print(
        f"\nMachine: {cpu_name}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}{gpu}. Input size {INPUT}, default configs, float32."
    )
    if missing:
        print(f"Not available: {', '.join(missing)}")
    print(
        f"\nAct: one step (T=1, no grad) for {ACT_ENVS} envs. Train: forward + backward "
        f"over T={TRAIN_T}, episode starts at rate 1/{round(1 / RESET_RATE)}.\n"
    )
    head = "| core | params | state / env |"
    for dev in devices:
        head += f" act {dev.type} (ms) | act {dev.type} (env-steps/s) |"
        head += f" train {dev.type} envs | train {dev.type} (ms) | train {dev.type} (env-steps/s) |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for name in available:
        first = cost[(name, devices[0].type)]
        line = f"| {name} | {first['params']:,} | {fmt_bytes(first['state'])} |"
        for dev in devices:
            r = cost[(name, dev.type)]
            line += f" {fmt_time(r['act'])} | {fmt_rate(ACT_ENVS / r['act'])} |"
            line += (
                f" {r['train_envs']} | {fmt_time(r['train'])} |"
                f" {fmt_rate(TRAIN_T * r['train_envs'] / r['train'])} |"
            )
        print(line)

    if sweep:
        print(
            "\nActing step against history (cache filled to the history first). "
            "GTrXL: window = history (full attention); HCAM: max_chunks * chunk_size "
            "= history (default chunk_size and top_k).\n"
        )
        head = "| core | history | state / env |"
        for dev in devices:
            head += f" {dev.type} envs | act {dev.type} (ms) | act {dev.type} (µs per env) |"
        print(head)
        print("|" + "---|" * (head.count("|") - 1))
        for name in ("gtrxl", "hcam"):
            for h in HISTORIES:
                if (name, devices[0].type, h) not in sweep:
                    continue
                line = f"| {name} | {h} | {fmt_bytes(sweep[(name, devices[0].type, h)]['state'])} |"
                for dev in devices:
                    r = sweep[(name, dev.type, h)]
                    line += f" {r['envs']} | {fmt_time(r['act'])} | {r['act'] / r['envs'] * 1e6:.1f} |"
                print(line)

    if layouts:
        print(
            f"\nLSTM/GRU training pass (forward + backward, T={TRAIN_T}, {TRAIN_ENVS} envs): "
            "no episode starts (one plain fused call), and starts at rate "
            f"1/{round(1 / RESET_RATE)} with the segments packed or padded, or one scan "
            "(``sequence_path``; \"auto\" picks packed on CUDA; elsewhere padded, "
            "or the scan when the padded buckets take more steps than T).\n"
        )
        head = "| core |"
        for dev in devices:
            head += (f" no starts {dev.type} (ms) | packed {dev.type} (ms) | padded {dev.type} (ms) |"
                     f" scan {dev.type} (ms) |")
        print(head)
        print("|" + "---|" * (head.count("|") - 1))
        for name in ("lstm", "gru"):
            if (name, devices[0].type) not in layouts:
                continue
            line = f"| {name} |"
            for dev in devices:
                r = layouts[(name, dev.type)]
                line += (f" {fmt_time(r['none'])} | {fmt_time(r['packed'])} | {fmt_time(r['padded'])} |"
                         f" {fmt_time(r['scan'])} |")
            print(line)


if __name__ == "__main__":
    main()
