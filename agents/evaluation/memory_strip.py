"""The memory strip under each video frame: where the core read at this step.

A core that records its reads (``MemoryCore.record_reads``) reports a
``memory_modules.Read`` per acting step; :func:`step_read` takes copy 0's row of
it to the host, and :func:`draw_strip` draws one episode's reads at step t:

* ``steps`` (GTrXL, HCAM): the episode's timeline, one column per step (pooled
  when the episode has more steps than pixels). Blue: steps the memory holds at
  t; yellow, brighter for more weight: where the read at t comes from (the row's
  strongest step at full brightness); white tick: t itself. The cue shows up as
  blue from the step it is seen and lights up when it is read back.
* ``slots`` (RMC, DT-Mem): one cell per memory slot; brightness is the weight
  (attention rows) or how much the slot was rewritten (``write`` row), scaled by
  the row's largest value in the episode, so a big write stands out.
* ``change`` (LSTM, GRU): per step, how much the state moved (RMS), as bars over
  the timeline up to t (scaled by the episode's largest); the bar at t in yellow.

Only the recorder calls this (host side, after the episode), never training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

BACKGROUND = (16, 16, 22)
TEXT = (230, 230, 230)
FUTURE = (26, 26, 34)
EMPTY = (40, 40, 50)
HELD = (45, 80, 150)
READ = (255, 215, 60)
PAST_BAR = (90, 140, 220)
LABEL_WIDTH = 64
INFO_WIDTH = 92
ROW_HEIGHT = 14
TITLE_HEIGHT = 16


@dataclass
class StepRead:
    """One step's read of copy 0, on the host (see ``memory_modules.Read``)."""

    kind: str
    weights: np.ndarray  # [rows, N]
    rows: tuple[str, ...]
    stored: np.ndarray | None = None  # [N] bool, for "steps"
    columns: tuple[str, ...] | None = None


def step_read(read, index: int = 0) -> StepRead | None:
    """Copy ``index``'s row of a ``memory_modules.Read`` (or None), moved to the host."""
    if read is None:
        return None
    stored = None if read.stored is None else read.stored[index].cpu().numpy().astype(bool)
    return StepRead(read.kind, read.weights[index].float().cpu().numpy(), read.rows, stored,
                    read.columns)


def _blend(base, top, amount: np.ndarray) -> np.ndarray:
    """Per-entry mix of two colours: amount 0 -> base, 1 -> top; [..., 3] uint8."""
    a = np.clip(amount, 0.0, 1.0)[..., None]
    return (np.asarray(base) * (1 - a) + np.asarray(top) * a).astype(np.uint8)


def _to_pixels(rgb: np.ndarray, width: int) -> np.ndarray:
    """Step columns of ``rgb`` [R, L, 3] onto ``width`` pixel columns: spread when there are
    fewer steps than pixels, else each pixel shows the brightest of its steps (a read or
    a bar is never averaged away)."""
    steps = rgb.shape[1]
    if steps <= width:
        return rgb[:, np.arange(width) * steps // width]
    bounds = np.searchsorted(np.arange(steps) * width // steps, np.arange(width + 1))
    key = rgb.astype(np.int32).sum(-1)
    rows = np.arange(rgb.shape[0])
    out = np.empty((rgb.shape[0], width, 3), np.uint8)
    for x in range(width):
        a, b = bounds[x], max(bounds[x + 1], bounds[x] + 1)
        out[:, x] = rgb[rows, a + key[:, a:b].argmax(1)]
    return out


def _timeline_rows(reads: list[StepRead | None], t: int, length: int) -> tuple[np.ndarray, list[str]]:
    """RGB [R, length, 3] of the read at step t over the episode's steps, and per-row notes."""
    read = reads[t]
    R = read.weights.shape[0]
    back = t - np.arange(length)  # how far back each episode step lies from t
    seen = (back >= 0) & (back < read.weights.shape[1])
    idx = np.clip(back, 0, read.weights.shape[1] - 1)
    weights = np.where(seen[None], read.weights[:, idx], 0.0)  # [R, length]
    held = seen & (read.stored[idx] if read.stored is not None else True)
    rgb = np.empty((R, length, 3), np.uint8)
    rgb[:] = np.where(back[:, None] < 0, FUTURE, np.where(held[:, None], HELD, EMPTY))
    notes = []
    for r in range(R):
        peak = float(weights[r].max())
        if peak > 0:
            rgb[r] = np.where((weights[r] > 0)[:, None],
                              _blend(HELD, READ, 0.25 + 0.75 * weights[r] / peak), rgb[r])
            notes.append(f"t={int(weights[r].argmax())} {peak:.0%}")
        else:
            notes.append("reads nothing")
    return rgb, notes


def _change_rows(reads: list[StepRead | None], t: int, length: int, height: int) -> np.ndarray:
    """RGB [R * height, length, 3]: bars of each step's state change up to t."""
    R = reads[t].weights.shape[0]
    values = np.zeros((R, length))
    for s, read in enumerate(reads):
        if read is not None:
            values[:, s] = read.weights[:, 0]
    scale = values.max(1, keepdims=True)
    tall = np.where(scale > 0, values / np.where(scale > 0, scale, 1), 0.0)
    rgb = np.empty((R, height, length, 3), np.uint8)
    rgb[:] = np.where(np.arange(length)[:, None] > t, FUTURE, EMPTY)
    levels = (height - 1 - np.arange(height))[:, None] / (height - 1)  # 1 at the top row
    for r in range(R):
        bar = (levels <= tall[r][None]) & (np.arange(length) <= t)[None] & (tall[r][None] > 0)
        colour = np.where((np.arange(length) == t)[:, None], READ, PAST_BAR)
        rgb[r][bar] = np.broadcast_to(colour, (height, length, 3))[bar]
    return rgb.reshape(R * height, length, 3)


def draw_strip(reads: list[StepRead | None], t: int, width: int, title: str) -> np.ndarray:
    """The strip of step ``t`` of an episode whose steps read ``reads`` (one per step)."""
    read = reads[t]
    length = len(reads)
    rows = read.rows if read is not None else ()
    height = TITLE_HEIGHT + ROW_HEIGHT * max(len(rows), 1) + 4
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    area = max(width - LABEL_WIDTH - INFO_WIDTH, 8)
    if read is None:
        draw.text((8, 2), f"{title}: no memory read to show", fill=TEXT)
        return np.asarray(canvas).copy()
    notes = [""] * len(rows)
    if read.kind == "steps":
        draw.text((8, 2), f"{title}: reads over the episode (blue held, yellow read)", fill=TEXT)
        rgb, notes = _timeline_rows(reads, t, length)
        pixels = _to_pixels(rgb, area)
        block = np.repeat(pixels, ROW_HEIGHT - 2, axis=0).reshape(len(rows), ROW_HEIGHT - 2, area, 3)
        x_now = min(t * area // length, area - 1)
        for r in range(len(rows)):
            y = TITLE_HEIGHT + r * ROW_HEIGHT
            canvas.paste(Image.fromarray(block[r]), (LABEL_WIDTH, y))
            draw.line((LABEL_WIDTH + x_now, y, LABEL_WIDTH + x_now, y + ROW_HEIGHT - 3), fill=TEXT)
    elif read.kind == "change":
        draw.text((8, 2), f"{title}: state change per step (yellow: now)", fill=TEXT)
        rgb = _change_rows(reads, t, length, ROW_HEIGHT - 2)
        pixels = _to_pixels(rgb, area)
        for r in range(len(rows)):
            y = TITLE_HEIGHT + r * ROW_HEIGHT
            part = pixels[r * (ROW_HEIGHT - 2):(r + 1) * (ROW_HEIGHT - 2)]
            canvas.paste(Image.fromarray(np.ascontiguousarray(part)), (LABEL_WIDTH, y))
            notes[r] = f"{read.weights[r, 0]:.3f}"
    else:  # slots
        columns = read.columns or tuple(str(n) for n in range(read.weights.shape[1]))
        draw.text((8, 2), f"{title}: slots {' '.join(columns)}", fill=TEXT)
        peak = np.max([r.weights for r in reads if r is not None], axis=0).max(1)  # [R]
        cell = max(area // len(columns), 4)
        for r in range(len(rows)):
            y = TITLE_HEIGHT + r * ROW_HEIGHT
            level = read.weights[r] / peak[r] if peak[r] > 0 else np.zeros_like(read.weights[r])
            for n, colour in enumerate(_blend(EMPTY, READ, level)):
                x = LABEL_WIDTH + n * cell
                draw.rectangle((x, y, x + cell - 2, y + ROW_HEIGHT - 3), fill=tuple(int(v) for v in colour))
            notes[r] = f"max {columns[int(read.weights[r].argmax())]}"
    for r, name in enumerate(rows):
        y = TITLE_HEIGHT + r * ROW_HEIGHT
        draw.text((8, y), name, fill=TEXT)
        draw.text((LABEL_WIDTH + area + 6, y), notes[r], fill=TEXT)
    return np.asarray(canvas).copy()
