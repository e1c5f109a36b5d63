"""Small drawing helpers shared by the tasks' ``render_frame`` (host side, not the hot loop).

Marks, the same in every task: the right answer is outlined in green around it;
the agent's action (``render_frame(..., action=a)``) is drawn apart from it, as a
bar under the option it picked, a border inside the cell it steps onto, or an
arrow of its move: green where that action is scored right, red where it is
scored wrong, yellow where it is not scored at this step.
"""

from __future__ import annotations

import colorsys

import numpy as np

BACKGROUND = (24, 24, 32)
TEXT = (230, 230, 230)
ANSWER = (60, 220, 90)
WRONG = (235, 50, 50)
PICK = (240, 200, 60)


def verdict(right: bool | None) -> tuple[int, int, int]:
    """The colour of the agent's mark: green right, red wrong, yellow not scored."""
    return PICK if right is None else (ANSWER if right else WRONG)


def palette(n: int) -> list[tuple[int, int, int]]:
    """n distinct, saturated colours (symbol i -> palette[i])."""
    cols = []
    for i in range(n):
        h = (i * 0.618033988749895) % 1.0  # golden-ratio hues stay apart for any n
        v = 0.95 if i % 2 == 0 else 0.7
        r, g, b = colorsys.hsv_to_rgb(h, 0.75, v)
        cols.append((int(r * 255), int(g * 255), int(b * 255)))
    return cols


class Canvas:
    """A PIL canvas with the few primitives the tasks need."""

    def __init__(self, width: int, height: int):
        # PIL on the first frame drawn, not at the import of every task (training draws none)
        from PIL import Image, ImageDraw

        self.image = Image.new("RGB", (width, height), BACKGROUND)
        self.draw = ImageDraw.Draw(self.image)

    def text(self, xy, s: str, fill=TEXT) -> None:
        self.draw.text(xy, s, fill=fill)

    def tile(self, x: int, y: int, size: int, symbol: int, colors, outline=None) -> None:
        """Symbol 0 is blank; symbol k >= 1 is a coloured square with its number."""
        box = (x, y, x + size - 1, y + size - 1)
        if symbol <= 0:
            self.draw.rectangle(box, outline=(70, 70, 80), width=1)
        else:
            self.draw.rectangle(box, fill=colors[(symbol - 1) % len(colors)])
            self.draw.text((x + 3, y + 2), str(symbol), fill=(0, 0, 0))
        if outline is not None:
            self.draw.rectangle((x - 3, y - 3, x + size + 2, y + size + 2), outline=outline, width=3)

    def pick_bar(self, x: int, y: int, width: int, right: bool | None = None) -> None:
        """The agent's pick: a bar under the option at (x, y) of the given width."""
        self.draw.rectangle((x, y, x + width - 1, y + 5), fill=verdict(right))

    def pick_box(self, box, right: bool | None = None) -> None:
        """The agent's pick: a border inside the cell ``box`` (the answer's outline is outside)."""
        x0, y0, x1, y1 = box
        self.draw.rectangle((x0 + 2, y0 + 2, x1 - 2, y1 - 2), outline=verdict(right), width=3)

    def arrow(self, start, end, right: bool | None = None) -> None:
        """The agent's move from ``start`` to ``end`` (pixel centres)."""
        (x0, y0), (x1, y1) = start, end
        fill = verdict(right)
        self.draw.line((x0, y0, x1, y1), fill=fill, width=3)
        dx, dy = x1 - x0, y1 - y0
        norm = max((dx * dx + dy * dy) ** 0.5, 1e-6)
        ux, uy = dx / norm, dy / norm
        head = [(x1, y1), (x1 - 6 * ux + 4 * uy, y1 - 6 * uy - 4 * ux),
                (x1 - 6 * ux - 4 * uy, y1 - 6 * uy + 4 * ux)]
        self.draw.polygon(head, fill=fill)

    def array(self) -> np.ndarray:
        return np.asarray(self.image, dtype=np.uint8).copy()
