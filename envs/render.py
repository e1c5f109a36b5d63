"""Small drawing helpers shared by the tasks' ``render_frame`` (host side, not the hot loop)."""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw

BACKGROUND = (24, 24, 32)
TEXT = (230, 230, 230)
ANSWER = (60, 220, 90)


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

    def array(self) -> np.ndarray:
        return np.asarray(self.image, dtype=np.uint8).copy()
