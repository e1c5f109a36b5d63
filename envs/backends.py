"""The two array namespaces a task's rules are written against: one set of rules, two backends.

Every task writes its hooks once, against ``self.xp``:

* :class:`TorchXP`: a batch of copies as tensors on one device; a per-copy number
  is a tensor ``[B]``, a per-copy row (ring buffer, options, grid) a tensor ``[B, k]``.
* ``PY`` (:class:`PythonXP`): one copy as plain Python values; a number is an
  ``int``, ``float`` or ``bool``, a row a ``list`` (or, for grids and images read
  whole, a numpy array: tables made with ``const(..., dense=True)``). This is what
  the single gymnasium env steps: an op on a Python int costs ~40 ns, on a
  1-element numpy array ~1 µs and on a 1-element tensor ~5 µs.

Operators act alike on both and are used directly in the rules: ``+ - * // %
<< >> & | ^`` and comparisons (integers stay below 2**63, where int64 and Python
ints agree; ``/`` is avoided, since it would give float32 in one and float64 in
the other). What the value types decide goes through the namespace: ``where``,
bool to int or float, ``not_`` (``~True`` is -2 in Python), row reads and writes,
the observation. Float constants that meet rewards are rounded to float32 once
(``f32``), so a reward is the same number in both backends.

State updates are written ``self.x = xp.fill(self.x, mask, 0)``: :class:`TorchXP`
does them in place in eager mode (no allocation) and out of place while a step
is traced for compilation (``inplace = False``), where the inputs must stay intact.
"""

from __future__ import annotations

import operator
import struct

import numpy as np
import torch

_F32 = struct.Struct("f")


def f32(x: float) -> float:
    """``x`` rounded to the nearest float32, as a Python float (exact in both backends)."""
    return _F32.unpack(_F32.pack(x))[0]


# Rows up to this wide are built column by column when traced for compilation (narrow
# rows as a second loop over [copies, width] vectorise badly).
_COLUMNS = 16


class TorchXP:
    """A batch of ``n`` copies as tensors on ``device`` (see the module docstring)."""

    python = False

    def __init__(self, n: int, device: torch.device):
        self.n, self.device = n, device
        self.inplace = True
        self._aranges: dict[int, torch.Tensor] = {}

    # ------------------------------------------------------------- allocation
    def zeros(self, width: int | None = None, dtype=torch.int64) -> torch.Tensor:
        shape = (self.n,) if width is None else (self.n, width)
        return torch.zeros(shape, dtype=dtype, device=self.device)

    def full(self, value, width: int | None = None, dtype=torch.int64) -> torch.Tensor:
        shape = (self.n,) if width is None else (self.n, width)
        return torch.full(shape, value, dtype=dtype, device=self.device)

    def const(self, table, dense: bool = False) -> torch.Tensor:
        """A constant table (a tensor, or nested lists of ints), on the device."""
        return torch.as_tensor(table).to(self.device)

    def _arange(self, width: int) -> torch.Tensor:
        if not self.inplace:  # being traced: no tensor of the trace may stay behind
            return torch.arange(width, device=self.device)
        if width not in self._aranges:
            self._aranges[width] = torch.arange(width, device=self.device)
        return self._aranges[width]

    # ------------------------------------------------------------ elementwise
    where = staticmethod(torch.where)

    @staticmethod
    def int(c: torch.Tensor) -> torch.Tensor:
        return c.long()

    @staticmethod
    def float(c: torch.Tensor) -> torch.Tensor:
        return c.float()

    @staticmethod
    def not_(c: torch.Tensor) -> torch.Tensor:
        return ~c

    @staticmethod
    def false(like: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(like, dtype=torch.bool)

    def maybe(self, mask: torch.Tensor) -> bool:
        """Whether work for the copies in ``mask`` may be needed; the work must leave the
        other copies as they are. On an accelerator always (asking would sync the host),
        and while traced for ``envs.compiled`` (one program for every case). On the CPU,
        where asking costs no sync, whether any copy is in ``mask``: copies whose episodes
        end together then skip the new-episode draws on every step but the one where they
        end, and Autoencode its deal in the play phase."""
        if self.device.type != "cpu" or torch.compiler.is_compiling():
            return True
        return bool(mask.any())

    @staticmethod
    def minimum(x: torch.Tensor, high) -> torch.Tensor:
        return x.clamp(max=high)

    @staticmethod
    def maximum(x: torch.Tensor, low) -> torch.Tensor:
        return x.clamp(min=low)

    @staticmethod
    def clip(x: torch.Tensor, low, high) -> torch.Tensor:
        return x.clamp(low, high)

    @staticmethod
    def copy(x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    def fill(self, x: torch.Tensor, mask: torch.Tensor, value) -> torch.Tensor:
        """``x`` with ``value`` where ``mask`` (per copy; a row is filled whole)."""
        m = mask if x.dim() == 1 else mask.reshape(-1, *([1] * (x.dim() - 1)))
        return x.masked_fill_(m, value) if self.inplace else x.masked_fill(m, value)

    # -------------------------------------------------------------------- rows
    @staticmethod
    def get(row: torch.Tensor, i) -> torch.Tensor:
        """Element ``i`` (per copy) of each copy's row."""
        return row.gather(1, i[:, None]).squeeze(1)

    def put(self, row: torch.Tensor, i, value) -> torch.Tensor:
        """``row`` with element ``i`` (per copy, or one index for all) set to ``value``."""
        if isinstance(i, int):
            i = torch.full((row.shape[0],), i, dtype=torch.int64, device=row.device)
        if not isinstance(value, torch.Tensor):
            value = torch.full_like(i, value)
        if self.inplace:
            return row.scatter_(1, i[:, None], value[:, None])
        return row.scatter(1, i[:, None], value[:, None])

    def add_at(self, row: torch.Tensor, i: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """``row`` with ``value`` added to element ``i`` (both per copy)."""
        if self.inplace:
            return row.scatter_add_(1, i[:, None], value[:, None])
        return row.scatter_add(1, i[:, None], value[:, None])

    @staticmethod
    def row(table: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        """Row ``i`` (per copy) of a 2-D constant table (read it, do not write it)."""
        return table[i]

    def slice(self, table: torch.Tensor, start: torch.Tensor, width: int) -> torch.Tensor:
        """``table[start : start + width]`` of a flat constant table, per copy: a row."""
        if not self.inplace and width <= _COLUMNS:  # traced: columns fuse into the main loop
            return torch.stack([table[start + j] for j in range(width)], dim=1)
        return table[start[:, None] + self._arange(width)]

    @staticmethod
    def take(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``table[index]`` element by element (``index`` a number or a row per copy)."""
        return table[index]

    @staticmethod
    def gather(row: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Each copy's row read at that copy's row of indices."""
        return row.gather(1, index)

    def with_values(self, base: torch.Tensor, index: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """The constant row ``base`` with ``values`` (a row per copy) written at ``index``."""
        return base.expand(self.n, -1).scatter(1, index, values)

    @staticmethod
    def row_where(mask: torch.Tensor, a: torch.Tensor, b) -> torch.Tensor:
        return torch.where(mask[:, None], a, b)

    @staticmethod
    def row_add(row: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Each copy's row plus that copy's number."""
        return row + x[:, None]

    @staticmethod
    def rowwise(fn, *args):
        """``fn`` of operators applied element by element: rows with the copy's numbers."""
        return fn(*[a[:, None] if isinstance(a, torch.Tensor) and a.dim() == 1 else a for a in args])

    @staticmethod
    def cols(row: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        return row[:, start:stop]

    @staticmethod
    def sum(row: torch.Tensor) -> torch.Tensor:
        return row.sum(1)

    @staticmethod
    def contains(row: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return (row == x[:, None]).any(1)

    @staticmethod
    def category(counts: torch.Tensor, u: torch.Tensor, start: int, width: int) -> torch.Tensor:
        """The category (0 .. width - 1) of item ``u`` (from 0) when the items of the categories
        ``start .. start + width - 1`` of each copy's row of ``counts`` are laid out one
        category after another; the last category for an item past them all."""
        return (counts[:, start:start + width].cumsum(1) <= u[:, None]).sum(1).clamp(max=width - 1)

    def obs(self, *parts: torch.Tensor) -> torch.Tensor:
        """The observation: the per-copy numbers and rows of ``parts``, side by side."""
        if not self.inplace and all(p.dim() == 1 or p.shape[1] <= _COLUMNS for p in parts):
            # traced: one column at a time, so the compiled loop over copies writes them all
            return torch.stack([c for p in parts for c in ((p,) if p.dim() == 1 else p.unbind(1))], 1)
        return torch.cat([p[:, None] if p.dim() == 1 else p for p in parts], dim=1)

    def tiles(self, sprites: torch.Tensor, cells: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """An image per copy: its ``rows`` x ``cols`` cell ids drawn as ``sprites`` [ids, h, w, c]."""
        _, h, w, c = sprites.shape
        img = sprites[cells].reshape(self.n, rows, cols, h, w, c)
        return img.permute(0, 1, 3, 2, 4, 5).reshape(self.n, rows * h, cols * w, c)


class PythonXP:
    """One copy as plain Python values (see the module docstring); use the instance ``PY``.

    The same operations as :class:`TorchXP`, on ints, floats, bools and lists (numpy
    arrays for rows read whole). In-place row updates write the list itself: a
    row from a constant table (``row``) must be read, not written.
    """

    python = True
    inplace = True

    # ------------------------------------------------------------- allocation
    @staticmethod
    def zeros(width: int | None = None, dtype=torch.int64):
        zero = 0.0 if dtype.is_floating_point else False if dtype == torch.bool else 0
        return zero if width is None else [zero] * width

    @staticmethod
    def full(value, width: int | None = None, dtype=None):
        return value if width is None else [value] * width

    @staticmethod
    def const(table, dense: bool = False):
        """A constant table as (nested) lists of ints or bools, or with ``dense`` a numpy
        array (for a table read at a row of indices at once: grids, windows, images)."""
        table = torch.as_tensor(table)
        return table.numpy() if dense else table.tolist()

    # ------------------------------------------------------------ elementwise
    @staticmethod
    def where(c, a, b):
        return a if c else b

    int = staticmethod(int)
    float = staticmethod(float)
    not_ = staticmethod(operator.not_)

    @staticmethod
    def false(like):
        return False

    maybe = staticmethod(bool)

    minimum = staticmethod(min)
    maximum = staticmethod(max)

    @staticmethod
    def clip(x, low, high):
        return low if x < low else high if x > high else x

    @staticmethod
    def copy(x):
        return x

    @staticmethod
    def fill(x, mask, value):
        if not mask:
            return x
        if type(x) is list:
            x[:] = [value] * len(x)
            return x
        return value

    # -------------------------------------------------------------------- rows
    @staticmethod
    def get(row, i):
        return row[i] if type(row) is list else row[i].item()

    @staticmethod
    def put(row, i, value):
        row[i] = value
        return row

    @staticmethod
    def add_at(row, i, value):
        row[i] += value
        return row

    row = staticmethod(operator.getitem)

    @staticmethod
    def slice(table, start, width):
        return table[start : start + width]

    @staticmethod
    def take(table, index):
        """A list for a list of indices; an array for an array of them (``table`` dense)."""
        if type(index) is list:
            return [table[i] for i in index]
        return table[index]

    @staticmethod
    def gather(row, index):
        if type(row) is list:
            return [row[i] for i in index]
        return row[index]

    @staticmethod
    def with_values(base, index, values):
        out = base.copy()
        for i, v in zip(index, values, strict=True):
            out[i] = v
        return out

    @staticmethod
    def row_where(mask, a, b):
        if mask:
            return a
        return b if type(b) is list else [b] * len(a)

    @staticmethod
    def row_add(row, x):
        if type(row) is list:
            return [v + x for v in row]
        return row + x

    @staticmethod
    def rowwise(fn, *args):
        n = next(len(a) for a in args if type(a) is list)
        cols = [a if type(a) is list else [a] * n for a in args]
        return [fn(*v) for v in zip(*cols, strict=True)]

    @staticmethod
    def cols(row, start, stop):
        return row[start:stop]

    sum = staticmethod(sum)

    @staticmethod
    def contains(row, x):
        return x in row

    @staticmethod
    def category(counts, u, start, width):
        total = 0
        for k in range(start, start + width - 1):
            total += counts[k]
            if total > u:
                return k - start
        return width - 1

    @staticmethod
    def obs(*parts):
        """A list, or an int64 array when the first part is an array (a grid)."""
        first = parts[0]
        if type(first) is np.ndarray:
            out = np.empty(len(first) + len(parts) - 1, dtype=np.int64)
            out[: len(first)] = first
            out[len(first):] = parts[1:]
            return out
        out = []
        for p in parts:
            if type(p) is list:
                out += p
            else:
                out.append(p)
        return out

    @staticmethod
    def tiles(sprites, cells, rows, cols):
        _, h, w, c = sprites.shape
        img = sprites[cells].reshape(rows, cols, h, w, c)
        return img.transpose(0, 2, 1, 3, 4).reshape(rows * h, cols * w, c)


PY = PythonXP()
