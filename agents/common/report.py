"""The report of a sweep: which memory works where, and up to which horizon.

    python -m agents.report runs/horizon/20260101-120000 [--out docs/horizon] [--md docs/horizon.md]

Reads every run folder under the given folder (a folder with ``config.yaml``): its
``results.json`` row (agents/common/results.py) and its TensorBoard events. Runs without a
row (still going, failed or stopped) are listed, not fatal. Aggregates final greedy
success over seeds as the IQM with a 95% stratified bootstrap confidence interval
(rliable, Agarwal et al. 2021), prints a markdown table core x task (each column with
the memory horizon xi of its env configuration, each row with the core's context K;
a cell marked with a dagger is long-term memory, xi > K), and writes to ``--out``
(default ``<runs>/report``): ``horizon.png`` (success against xi, a line per core, CI
bands), ``learning_curves.png`` (training success against env steps, mean and CI over
seeds per core), ``heatmap.png`` (core x task) and ``report.md`` (the tables and the
figures; ``--md`` puts it elsewhere, e.g. ``docs/horizon.md``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from agents.common.results import RESULTS, read_results

SUCCESS_TAG = "charts/success_rate"
FIGURES = ("horizon.png", "learning_curves.png", "heatmap.png")
LONG_TERM = "\u2020"
# A run folder whose files changed this recently counts as still running.
RUNNING_WITHIN_S = 600


# ------------------------------------------------------------------------------- reading
def find_runs(root: Path) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """(results rows, runs without a row) of every run folder under ``root``."""
    rows, pending = [], []
    for config in sorted(Path(root).rglob("config.yaml")):
        run = config.parent
        if (run / RESULTS).is_file():
            row = read_results(run / RESULTS)
            row["path"] = str(run)
            rows.append(row)
            continue
        newest = max(p.stat().st_mtime for p in run.rglob("*") if p.is_file())
        recent = time.time() - newest < RUNNING_WITHIN_S
        pending.append({"run": str(run), "status": "running" if recent else "failed or stopped"})
    return rows, pending


def read_scalars(tb_dir: Path, tags: list[str]) -> dict[str, dict[int, float]]:
    """step -> value of each tag found in the run's event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, dict[int, float]] = {tag: {} for tag in tags}
    if not tb_dir.is_dir():
        return out
    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    found = acc.Tags().get("scalars", [])
    for tag in tags:
        if tag in found:
            out[tag] = {int(e.step): float(e.value) for e in acc.Scalars(tag)}
    return out


def success_curve(row: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Training success against env steps, on the run's own task.

    Under a curriculum, success logged while an easier stage is in force is not
    success on the task, so it counts as 0 (the stage is logged at the same step).
    """
    cur = row.get("curriculum") or {}
    if cur.get("knob"):
        tag, final = f"curriculum/{cur['knob']}", row["env_knobs"][cur["knob"]]
    elif cur.get("stages"):  # a curriculum over several knobs: its stage number
        tag, final = "curriculum/stage", len(cur["stages"])
    else:
        tag = final = None
    scalars = read_scalars(Path(row["path"]) / "tb", [SUCCESS_TAG] + ([tag] if tag else []))
    points = scalars[SUCCESS_TAG]
    if tag:
        stage = scalars[tag]
        points = {s: (v if stage.get(s, final) == final else 0.0) for s, v in points.items()}
    steps = np.array(sorted(points), dtype=np.float64)
    return steps, np.array([points[int(s)] for s in steps], dtype=np.float64)


# ----------------------------------------------------------------------------- grouping
def final_success(row: dict[str, Any]) -> float | None:
    ev = row.get("eval") or {}
    for mode in ("greedy", "sampled"):
        if mode in ev and "success_rate" in ev[mode]:
            return float(ev[mode]["success_rate"])
    return None


def short_env(env_id: str) -> str:
    return env_id.split("/")[-1].removesuffix("-v0")


def _varying(rows: list[dict[str, Any]], field: str) -> set[str]:
    """Keys of the dict ``row[field]`` whose value differs between some rows."""
    keys = {k for r in rows for k in r[field]}
    return {k for k in keys if len({repr(r[field].get(k)) for r in rows}) > 1}


def label_rows(rows: list[dict[str, Any]]) -> None:
    """Set ``task`` (env and the knobs that vary across runs of that env) and ``agent``
    (core and the options that vary across runs of that core) on every row."""
    for key, field, name, out in (("env", "env_knobs", short_env, "task"),
                                  ("core", "core_options", str, "agent")):
        by = defaultdict(list)
        for r in rows:
            by[r[key]].append(r)
        for value, group in by.items():
            varying = sorted(_varying(group, field))
            for r in group:
                extra = " ".join(f"{k}={r[field].get(k)}" for k in varying)
                r[out] = f"{name(value)} {extra}".strip()


def _steps(row: dict[str, Any]) -> str:
    if row.get("env_steps") is None:  # trained offline (decision transformer)
        return f"{row.get('updates', 0):,} updates"
    return f"{row['env_steps']:,}"


def _reached(row: dict[str, Any]) -> str:
    """The curriculum stage a run ended in ("delay=16 of 64"), or "" without one."""
    cur = row.get("curriculum")
    if not cur or row.get("curriculum_value") is None:
        return ""
    if not cur.get("knob"):
        return f"stage {row['curriculum_value']} of {len(cur['stages'])}"
    return f"{cur['knob']}={row['curriculum_value']} of {row['env_knobs'][cur['knob']]}"


def _fmt_k(K: float) -> str:
    return "inf" if math.isinf(K) else str(int(K))


class Report:
    """Rows grouped into cells (agent, task), each aggregated over its seeds."""

    def __init__(self, rows: list[dict[str, Any]], reps: int = 2000):
        self.rows = [r for r in rows if final_success(r) is not None]
        label_rows(self.rows)
        self.reps = reps
        first = {}
        # an env that does not state its horizon (None) sorts last
        for r in sorted(self.rows, key=lambda r: (r["env"], r["memory_horizon"] is None,
                                                  r["memory_horizon"] or 0, r["task"])):
            first.setdefault(r["task"], r)
        self.tasks = list(first)
        self.task_row = first
        order = {}
        for r in self.rows:
            order.setdefault(r["agent"], r["context_length"])
        self.agents = sorted(order, key=lambda a: (order[a], a))
        self.context = order
        self.cells: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for r in self.rows:
            self.cells[(r["agent"], r["task"])].append(r)
        self.stats = {cell: self._iqm(runs) for cell, runs in self.cells.items()}

    def _iqm(self, runs: list[dict[str, Any]]) -> tuple[float, float, float]:
        from rliable import library as rly
        from rliable import metrics

        scores = np.array([[final_success(r)] for r in runs], dtype=np.float64)
        point, ci = rly.get_interval_estimates(
            {"x": scores}, lambda s: np.array([metrics.aggregate_iqm(s)]), reps=self.reps
        )
        return float(point["x"][0]), float(ci["x"][0, 0]), float(ci["x"][1, 0])

    def long_term(self, agent: str, task: str) -> bool:
        xi = self.task_row[task]["memory_horizon"]
        return xi is not None and xi > self.context[agent]

    # ------------------------------------------------------------------------- table
    def table(self) -> str:
        head = ["core (K)"] + [f"{t} (xi={self.task_row[t]['memory_horizon']})" for t in self.tasks]
        lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        for agent in self.agents:
            cells = [f"{agent} (K={_fmt_k(self.context[agent])})"]
            for task in self.tasks:
                if (agent, task) not in self.stats:
                    cells.append("")
                    continue
                point, lo, hi = self.stats[(agent, task)]
                n = len(self.cells[(agent, task)])
                mark = LONG_TERM if self.long_term(agent, task) else ""
                cells.append(f"{point:.2f} [{lo:.2f}, {hi:.2f}]{mark} n={n}")
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def runs_table(self) -> str:
        lines = ["| core | task | seed | env steps | wall (s) | trained up to | greedy success | "
                 "sampled success | xi | K | memory |", "|" + " --- |" * 11]
        for r in sorted(self.rows, key=lambda r: (self.agents.index(r["agent"]),
                                                   self.tasks.index(r["task"]), r["seed"])):
            ev = r["eval"]
            g = ev.get("greedy", {}).get("success_rate")
            s = ev.get("sampled", {}).get("success_rate")
            lines.append(
                f"| {r['agent']} | {r['task']} | {r['seed']} | {_steps(r)} | "
                f"{r.get('wall_time_s') or ''} | {_reached(r)} | {'' if g is None else f'{g:.3f}'} | "
                f"{'' if s is None else f'{s:.3f}'} | {r['memory_horizon']} | "
                f"{_fmt_k(r['context_length'])} | {r['memory']} |"
            )
        return "\n".join(lines)

    # ----------------------------------------------------------------------- figures
    def plot_horizon(self, path: Path) -> None:
        import matplotlib.pyplot as plt

        envs = sorted({r["env"] for r in self.rows})
        fig, axes = plt.subplots(1, len(envs), figsize=(6 * len(envs), 4.2), squeeze=False)
        colors = _colors(self.agents)
        for ax, env in zip(axes[0], envs, strict=True):
            tasks = [t for t in self.tasks if self.task_row[t]["env"] == env
                     and self.task_row[t]["memory_horizon"] is not None]
            for agent in self.agents:
                pts = sorted((self.task_row[t]["memory_horizon"], *self.stats[(agent, t)])
                             for t in tasks if (agent, t) in self.stats)
                if not pts:
                    continue
                xi, mid, lo, hi = (np.array(v, dtype=np.float64) for v in zip(*pts, strict=True))
                K = self.context[agent]
                ax.plot(xi, mid, "o-", color=colors[agent], label=f"{agent} (K={_fmt_k(K)})")
                ax.fill_between(xi, lo, hi, color=colors[agent], alpha=0.2)
                if math.isfinite(K) and xi.min() <= K <= xi.max():
                    ax.axvline(K, color=colors[agent], ls=":", lw=1)
            chance = {self.task_row[t].get("chance") for t in tasks}
            if len(chance) == 1 and None not in chance:
                ax.axhline(chance.pop(), color="grey", ls="--", lw=1, label="chance")
            ax.set_xscale("log", base=2)
            ticks = sorted({self.task_row[t]["memory_horizon"] for t in tasks})
            ax.set_xticks(ticks, [str(x) for x in ticks])
            ax.minorticks_off()
            ax.set_xlabel("memory horizon xi (steps, log scale)")
            ax.set_ylabel("final greedy success (IQM, 95% CI)")
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"{short_env(env)}: success against memory horizon")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)

    def plot_learning_curves(self, path: Path, points: int = 60) -> None:
        import matplotlib.pyplot as plt
        from matplotlib.ticker import EngFormatter, MaxNLocator
        from rliable import library as rly

        n = len(self.tasks)
        cols = min(n, 4)
        rows_ = math.ceil(n / cols)
        fig, axes = plt.subplots(rows_, cols, figsize=(4.5 * cols, 3.4 * rows_), squeeze=False)
        colors = _colors(self.agents)
        for ax, task in zip(axes.flat, self.tasks, strict=False):
            for agent in self.agents:
                curves = [success_curve(r) for r in self.cells.get((agent, task), [])]
                curves = [c for c in curves if len(c[0])]
                if not curves:
                    continue
                # up to where every seed has data, so the mean never mixes in fewer runs
                end = min(steps[-1] for steps, _ in curves)
                start = min(steps[0] for steps, _ in curves)
                grid = np.linspace(start, end, points if end > start else 1)
                ys = np.stack([np.interp(grid, steps, vals) for steps, vals in curves])
                mean, ci = rly.get_interval_estimates(
                    {"x": ys}, lambda s: s.mean(axis=0), reps=max(100, self.reps // 10)
                )
                ax.plot(grid, mean["x"], color=colors[agent], label=agent,
                        marker="o" if len(grid) == 1 else None)
                ax.fill_between(grid, ci["x"][0], ci["x"][1], color=colors[agent], alpha=0.2)
            ax.set_title(f"{task} (xi={self.task_row[task]['memory_horizon']})", fontsize=10)
            ax.xaxis.set_major_formatter(EngFormatter())
            ax.xaxis.set_major_locator(MaxNLocator(5))
            ax.set_xlabel("env steps")
            ax.set_ylabel("training success")
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[n:]:
            ax.axis("off")
        handles, labels = axes.flat[0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 7), fontsize=8)
        fig.text(0.5, 0.01, "mean over seeds, 95% bootstrap CI; under a curriculum, success "
                 "counts as 0 until training reaches the task's own level",
                 ha="center", fontsize=8, color="dimgrey")
        fig.tight_layout(rect=(0, 0.03, 1, 0.93))
        fig.savefig(path, dpi=110)
        plt.close(fig)

    def plot_heatmap(self, path: Path) -> None:
        import matplotlib.pyplot as plt

        grid = np.full((len(self.agents), len(self.tasks)), np.nan)
        for (agent, task), (point, _, _) in self.stats.items():
            grid[self.agents.index(agent), self.tasks.index(task)] = point
        fig, ax = plt.subplots(figsize=(1.4 * len(self.tasks) + 2.5, 0.6 * len(self.agents) + 1.8))
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for i, agent in enumerate(self.agents):
            for j, task in enumerate(self.tasks):
                if np.isnan(grid[i, j]):
                    continue
                mark = LONG_TERM if self.long_term(agent, task) else ""
                ax.text(j, i, f"{grid[i, j]:.2f}{mark}", ha="center", va="center", fontsize=8,
                        color="black" if grid[i, j] > 0.6 else "white")
        ax.set_xticks(range(len(self.tasks)),
                      [f"{t}\nxi={self.task_row[t]['memory_horizon']}" for t in self.tasks],
                      fontsize=8, rotation=30, ha="right")
        ax.set_yticks(range(len(self.agents)),
                      [f"{a} (K={_fmt_k(self.context[a])})" for a in self.agents], fontsize=8)
        ax.set_title(f"final greedy success (IQM over seeds; {LONG_TERM} long-term: xi > K)")
        fig.colorbar(im, ax=ax, fraction=0.04)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)


def _colors(agents: list[str]) -> dict[str, Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {a: cmap(i % 10) for i, a in enumerate(agents)}


def write_report(root: Path, out: Path, reps: int = 2000, md: Path | None = None) -> str:
    """Write the figures to ``out`` and the markdown (linking them) to ``md`` (default
    ``out/report.md``); returns the markdown."""
    import matplotlib

    matplotlib.use("Agg")
    rows, pending = find_runs(root)
    pending += [{"run": r["path"], "status": "finished without an evaluation"}
                for r in rows if final_success(r) is None]
    out.mkdir(parents=True, exist_ok=True)
    header = f"Runs under `{root}`: {len(rows)} with results, {len(pending)} without"
    record = Path(root) / "multirun.yaml"
    if record.is_file():
        from omegaconf import OmegaConf

        from agents.common.sweep import planned_jobs

        planned = planned_jobs(OmegaConf.load(record))
        header += f", {max(0, planned - len(rows) - len(pending))} not started ({planned} planned)"
    parts = [header + "."]
    rep = Report(rows, reps=reps) if rows else None
    if rep is not None and rep.rows:
        parts += [
            "",
            "Final greedy success, IQM over seeds [95% stratified bootstrap CI], n seeds. "
            f"xi: the task's memory horizon; K: the core's context; {LONG_TERM}: long-term "
            "memory (xi > K).",
            "",
            rep.table(),
            "",
            rep.runs_table(),
        ]
        rep.plot_horizon(out / "horizon.png")
        rep.plot_learning_curves(out / "learning_curves.png")
        rep.plot_heatmap(out / "heatmap.png")
        md_dir = (md or out / "report.md").parent
        for f in FIGURES:
            parts += ["", f"![{Path(f).stem}]({os.path.relpath(out / f, md_dir)})"]
    if pending:
        parts += ["", "Runs without results:", ""]
        parts += [f"- `{p['run']}`: {p['status']}" for p in pending]
    text = "\n".join(parts) + "\n"
    md = md or out / "report.md"
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, help="a sweep folder (or any folder of run folders)")
    parser.add_argument("--out", type=Path, default=None, help="default: <runs>/report")
    parser.add_argument("--md", type=Path, default=None,
                        help="the markdown file (default: <out>/report.md), e.g. docs/horizon.md")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples")
    args = parser.parse_args(argv)
    if not args.runs.is_dir():
        print(f"error: {args.runs} is not a folder", file=sys.stderr)
        return 2
    print(write_report(args.runs, args.out or args.runs / "report", args.reps, args.md), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
