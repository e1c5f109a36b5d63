"""Small batched grid helpers shared by the gridworld tasks (HiddenObjects, Ballet).

Grids are flat per copy: cell (row, col) of a ``size`` x ``size`` room is index
``row * size + col``. Everything here is pure tensor ops over the batch.
"""

from __future__ import annotations

import torch

from envs.render import BACKGROUND, Canvas

FLOOR_RGB = (40, 40, 48)
WALL_RGB = (120, 120, 130)
AGENT_RGB = (240, 240, 240)


def room_walls(size: int, device) -> torch.Tensor:
    """[size * size] bool: True on the border walls of a square room."""
    r = torch.arange(size, device=device)
    border = (r == 0) | (r == size - 1)
    return (border[:, None] | border[None, :]).reshape(-1)


class Window:
    """Egocentric ``view`` x ``view`` windows of a ``size`` x ``size`` room, on a task's ``xp``.

    The window of every agent cell is precomputed, so reading the windows of a
    batch is one index and one gather. The grid read must carry one extra
    column at index ``size * size`` holding what lies outside the room. The
    agent sits at the centre cell (index ``view * view // 2``).
    """

    def __init__(self, size: int, view: int, xp):
        self.size, self.view, self.xp = size, view, xp
        half = view // 2
        off = torch.arange(-half, half + 1)
        dr = off[:, None].expand(view, view).reshape(-1)
        dc = off[None, :].expand(view, view).reshape(-1)
        cell = torch.arange(size * size)
        rows = (cell // size)[:, None] + dr
        cols = (cell % size)[:, None] + dc
        inside = (rows >= 0) & (rows < size) & (cols >= 0) & (cols < size)
        #: [size * size, view * view] flat cells seen from each agent cell (size * size = outside)
        self.table = xp.const(torch.where(inside, rows * size + cols, size * size), dense=True)
        self.centre = view * view // 2

    def cells(self, grid, pos):
        """The window around flat cell ``pos`` of every copy, read from its grid (size*size + 1)."""
        return self.xp.gather(grid, self.xp.row(self.table, pos))


def draw_grid(canvas: Canvas, x0: int, y0: int, cell: int, colors, highlight=(), outline=None):
    """Draw a 2-D list of RGB tuples (or None for background) as square cells."""
    for i, row in enumerate(colors):
        for j, col in enumerate(row):
            box = (x0 + j * cell, y0 + i * cell, x0 + (j + 1) * cell - 1, y0 + (i + 1) * cell - 1)
            canvas.draw.rectangle(box, fill=col if col is not None else BACKGROUND)
    for i, j in highlight:
        canvas.draw.rectangle(
            (x0 + j * cell - 2, y0 + i * cell - 2, x0 + (j + 1) * cell + 1, y0 + (i + 1) * cell + 1),
            outline=outline,
            width=3,
        )
