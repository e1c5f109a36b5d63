"""Observation encoders, chosen from the observation space.

``make_encoder(space, **cfg)`` returns a module mapping a batch of observations
``[N, *space.shape]`` (a dict of such batches for a ``Dict`` space) to features
``[N, encoder.output_size]``:

* ``MultiDiscrete`` of one dimension (symbolic tasks): one embedding table per
  position, the embeddings concatenated, then an MLP. With ``symbol_grid=(H, W)``
  (a flat observation whose first H * W symbols are a row-major view, as Ballet's:
  the env's ``symbol_grid``), the view goes to the symbol-grid encoder below and
  the symbols after it to the per-position tables.
* ``MultiDiscrete`` of two or three dimensions (symbol grids, ``[H, W]`` or
  ``[H, W, C]`` / ``[C, H, W]``): every cell's symbols embedded (one table per
  channel, summed), then the small CNN (``grid_trunk="cnn"``, the default) or an
  MLP over the flattened cells (``grid_trunk="mlp"``: cheaper on small views).
* ``Discrete``: one embedding table.
* ``Box`` with an image shape (``[H, W, C]`` or ``[C, H, W]``, C in 1..4, or
  ``uint8`` pixels): the small CNN (pixels scaled to [0, 1]); with
  ``symbol_counts`` (an image whose channels hold ids, as MiniGrid's: the
  env's ``symbol_counts``), the symbol-grid encoder instead.
* any other ``Box`` and ``MultiBinary``: flattened, then an MLP.
* ``Dict`` / ``Tuple``: every sub-space encoded as above, features concatenated.

How symbols enter (``symbols``): ``"embed"`` (the default) looks each one up in a
learned table, as above; ``"onehot"`` makes each (position or cell, symbol) one input,
normalised by its running mean and standard deviation (``RunningNorm``: sample-factory's
``normalize_input``), so a rare symbol, MiniGrid's cue, stands out from the first update.

The optional previous action and reward are added by the policy, not here.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agents.common.multi_hot import multi_hot_mlp, one_hot


def _mlp(in_size: int, hidden: int, layers: int) -> tuple[nn.Module, int]:
    mods: list[nn.Module] = []
    width = in_size
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*mods), width


class SymbolEncoder(nn.Module):
    """1-D MultiDiscrete: an embedding per position, concatenated, then an MLP.

    With ``share_embeddings`` positions with the same range of values (say the
    cue and the options of DelayedMatch) read one token table, and a learned
    position embedding is added, so equal symbols get equal vectors wherever
    they appear: comparing them is then easy to learn. Without it every
    position has its own table. With ``symbols="onehot"`` every (position, symbol)
    is one input, normalised by ``RunningNorm``, then the MLP (no tables).
    """

    def __init__(
        self,
        nvec: np.ndarray,
        start,
        embed_dim: int,
        hidden_size: int,
        mlp_layers: int,
        share_embeddings: bool = True,
        symbols: str = "embed",
    ):
        super().__init__()
        nvec = [int(n) for n in np.asarray(nvec).reshape(-1)]
        start = [int(s) for s in np.asarray(start).reshape(-1)]
        self.positions = len(nvec)
        self.norm = None
        if check_symbols(symbols) == "onehot":  # position i's values: columns base_i + v
            base = np.cumsum([0, *nvec[:-1]]) - np.asarray(start)
            self.register_buffer("offsets", torch.as_tensor(base, dtype=torch.int64), persistent=False)
            self.norm = RunningNorm(sum(nvec))
            self.mlp, self.output_size = _mlp(sum(nvec), hidden_size, mlp_layers)
            return
        rows, base, tables = 0, [], {}
        for n, s in zip(nvec, start, strict=True):
            key = (n, s) if share_embeddings else len(base)
            if key not in tables:
                tables[key] = rows
                rows += n
            base.append(tables[key] - s)
        # Row of value v at position i in the one table: base_i + v.
        self.register_buffer("offsets", torch.tensor(base, dtype=torch.int64), persistent=False)
        self.embed = nn.Embedding(rows, embed_dim)
        self.position = nn.Parameter(torch.zeros(self.positions, embed_dim)) if share_embeddings else None
        if self.position is not None:
            nn.init.normal_(self.position, std=0.1)
        self.mlp, self.output_size = _mlp(self.positions * embed_dim, hidden_size, mlp_layers)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.norm is not None:
            return multi_hot_mlp(obs.long() + self.offsets, self.norm, self.mlp)
        e = self.embed(obs.long() + self.offsets)
        if self.position is not None:
            e = e + self.position
        return self.mlp(e.flatten(1))


class DiscreteEncoder(nn.Module):
    """``Discrete``: one embedding table, or (``symbols="onehot"``) the normalised one-hot."""

    def __init__(self, n: int, embed_dim: int, start: int = 0, symbols: str = "embed"):
        super().__init__()
        self.start = start
        if check_symbols(symbols) == "onehot":
            self.norm, self.n, self.output_size = RunningNorm(n), n, n
            return
        self.norm = None
        self.embed = nn.Embedding(n, embed_dim)
        self.output_size = embed_dim

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.long().reshape(-1, 1) - self.start
        if self.norm is not None:
            return self.norm(one_hot(x, self.n))
        return self.embed(x[:, 0])


class VectorEncoder(nn.Module):
    """Box vectors (any non-image shape) and MultiBinary: flatten, MLP."""

    def __init__(self, shape: tuple[int, ...], hidden_size: int, mlp_layers: int):
        super().__init__()
        size = int(np.prod(shape)) if shape else 1
        self.mlp, self.output_size = _mlp(size, hidden_size, max(mlp_layers, 1))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.mlp(obs.float().flatten(1))


class ConvTrunk(nn.Module):
    """A small CNN for images and symbol grids of any size, input ``[N, C, H, W]``.

    3x3 convolutions; grids larger than 16 cells a side are first strided down,
    so a 64x64 frame and an 11x11 grid both end in a few thousand features.
    """

    def __init__(self, in_channels: int, height: int, width: int, channels: int, hidden_size: int):
        super().__init__()
        layers: list[nn.Module] = []
        c, h, w = in_channels, height, width
        while max(h, w) > 16:
            layers += [nn.Conv2d(c, channels, 4, stride=2, padding=1), nn.ReLU()]
            c, h, w = channels, (h + 1) // 2, (w + 1) // 2
        layers += [nn.Conv2d(c, channels, 3, padding=1), nn.ReLU()]
        layers += [nn.Conv2d(channels, channels, 3, stride=2 if max(h, w) > 8 else 1, padding=1)]
        layers += [nn.ReLU(), nn.Flatten()]
        self.conv = nn.Sequential(*layers)
        with torch.no_grad():
            flat = self.conv(torch.zeros(1, in_channels, height, width)).shape[1]
        self.fc = nn.Sequential(nn.Linear(flat, hidden_size), nn.ReLU())
        self.output_size = hidden_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x))


def _channel_axis(shape: tuple[int, ...]) -> int:
    """For a 3-D grid or image: channels last unless the first axis is the small one."""
    if shape[-1] <= 4 or shape[-1] <= shape[0]:
        return 2
    return 0


class ImageEncoder(nn.Module):
    """Box images ``[H, W, C]`` or ``[C, H, W]``; uint8-range pixels are scaled to [0, 1]."""

    def __init__(self, space: gym.spaces.Box, channels: int, hidden_size: int):
        super().__init__()
        shape = space.shape
        if len(shape) == 2:
            shape, self.layout = (*shape, 1), "hw"
        else:
            self.layout = "hwc" if _channel_axis(shape) == 2 else "chw"
        h, w, c = shape if self.layout != "chw" else (shape[1], shape[2], shape[0])
        high = np.asarray(space.high, dtype=np.float64)
        self.scale = 1.0 / 255.0 if space.dtype == np.uint8 or float(high.max()) == 255.0 else 1.0
        self.trunk = ConvTrunk(c, h, w, channels, hidden_size)
        self.output_size = self.trunk.output_size

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.float() * self.scale
        if self.layout == "hw":
            x = x.unsqueeze(1)
        elif self.layout == "hwc":
            x = x.permute(0, 3, 1, 2)
        return self.trunk(x)


class FlatTrunk(nn.Module):
    """The MLP alternative to ``ConvTrunk``: input ``[N, C, H, W]`` flattened, then an MLP.

    Cheaper than the CNN on a small grid (a 7 x 7 MiniGrid view: about a quarter of
    the encoder's forward and backward time), at the price of the CNN's
    same-filter-everywhere prior.
    """

    def __init__(self, in_channels: int, height: int, width: int, hidden_size: int, layers: int):
        super().__init__()
        self.mlp, self.output_size = _mlp(in_channels * height * width, hidden_size, max(layers, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x.flatten(1))


class RunningNorm(nn.Module):
    """``(x - mean) / std`` per feature (clipped to +-``clip``), with the running mean and
    variance of every batch it was trained on.

    The statistics move only in a training forward with gradients on (PPO's minibatches),
    never while acting or evaluating, which read them. They are buffers, so checkpoints
    carry them; under torch.distributed each batch's moments are summed over the ranks
    first, so every rank holds the same statistics. Until the first update it is the
    identity (mean 0, variance 1) up to the clip.
    """

    def __init__(self, size: int, clip: float = 5.0, eps: float = 1e-5):
        super().__init__()
        self.clip, self.eps = clip, eps
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("var", torch.ones(size))
        self.register_buffer("count", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            self.update(x.detach())
        scale = torch.rsqrt(self.var + self.eps)
        # x * scale - mean * scale: one pass over x and one in place, not three
        return torch.addcmul(-self.mean * scale, x, scale).clamp_(-self.clip, self.clip)

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Fold a batch ``[..., size]`` into the statistics (Chan et al.'s parallel update)."""
        flat = x.reshape(-1, x.shape[-1]).float()
        n = torch.full((1,), flat.shape[0], dtype=flat.dtype, device=flat.device)
        self._fold(torch.cat([flat.sum(0), flat.square().sum(0), n]))

    @torch.no_grad()
    def update_multi_hot(self, index: torch.Tensor) -> None:
        """``update(one_hot(index, size))`` from the indices ``[N, K]`` (distinct in each
        row) alone: a 0/1 input's sum and sum of squares are both its counts."""
        counts = torch.bincount(index.flatten(), minlength=self.mean.shape[0]).float()
        n = torch.full((1,), index.shape[0], dtype=counts.dtype, device=counts.device)
        self._fold(torch.cat([counts, counts, n]))

    def levels(self) -> tuple[torch.Tensor, torch.Tensor]:
        """What ``forward`` makes of a 0 and of a 1 in each feature: ``[size]`` each."""
        scale = torch.rsqrt(self.var + self.eps)
        zero = -self.mean * scale
        return zero.clamp(-self.clip, self.clip), (zero + scale).clamp_(-self.clip, self.clip)

    def _fold(self, moments: torch.Tensor) -> None:
        """Fold ``[sum, sum of squares, count]`` of a batch into the statistics."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(moments)
        size = self.mean.shape[0]
        n = moments[-1]
        batch_mean = moments[:size] / n
        batch_var = (moments[size:2 * size] / n - batch_mean.square()).clamp(min=0.0)
        total = self.count + n
        delta = batch_mean - self.mean
        self.var.copy_((self.var * self.count + batch_var * n + delta.square() * self.count * n / total)
                       / total)
        self.mean.add_(delta * n / total)
        self.count.copy_(total)


SYMBOL_INPUTS = ("embed", "onehot")


def check_symbols(symbols: str) -> str:
    if symbols not in SYMBOL_INPUTS:
        raise ValueError(f"symbols={symbols!r} is not one of {', '.join(SYMBOL_INPUTS)}")
    return symbols


GRID_TRUNKS = ("cnn", "mlp")
MAX_JOINT_ROWS = 4096  # GridEncoder's joint table of all channels, at most this many rows


class GridEncoder(nn.Module):
    """MultiDiscrete grids ``[H, W]`` or ``[H, W, C]`` / ``[C, H, W]``: cell embeddings (or,
    ``symbols="onehot"``, each cell's symbols one-hot, normalised by ``RunningNorm``), then
    a CNN (``trunk="cnn"``) or an MLP over the flattened cells (``trunk="mlp"``)."""

    def __init__(self, nvec: np.ndarray, start, embed_dim: int, channels: int, hidden_size: int,
                 trunk: str = "cnn", mlp_layers: int = 1, symbols: str = "embed"):
        super().__init__()
        check_symbols(symbols)
        if trunk not in GRID_TRUNKS:
            raise ValueError(f"grid_trunk={trunk!r} is not one of {', '.join(GRID_TRUNKS)}")
        nvec = np.asarray(nvec, dtype=np.int64)
        start = np.broadcast_to(np.asarray(start, dtype=np.int64), nvec.shape)
        if nvec.ndim == 2:
            nvec, start, self.layout = nvec[..., None], start[..., None], "hw"
        else:
            self.layout = "hwc" if _channel_axis(nvec.shape) == 2 else "chw"
            if self.layout == "chw":
                nvec, start = np.moveaxis(nvec, 0, -1), np.moveaxis(start, 0, -1)
        h, w, c = nvec.shape
        # One table per channel, sized by the largest count that channel has anywhere.
        sizes = torch.as_tensor(nvec.reshape(-1, c).max(0))
        offsets = (torch.cumsum(sizes, 0) - sizes)[None, None, :] - torch.as_tensor(start.copy())
        self.register_buffer("offsets", offsets, persistent=False)  # [H, W, C]
        self.num_ids = int(sizes.sum())
        if symbols == "onehot":  # no embedding: each (cell, symbol) is one normalised input
            self.norm = RunningNorm(h * w * self.num_ids)
            # feature (cell, id) of the flattened view: cell * ids + id
            cells = torch.arange(h * w).view(h, w, 1) * self.num_ids
            self.register_buffer("feature_base", cells + offsets, persistent=False)  # [H, W, C]
            self.trunk = (ConvTrunk(self.num_ids, h, w, channels, hidden_size) if trunk == "cnn"
                          else FlatTrunk(self.num_ids, h, w, hidden_size, mlp_layers))
            self.output_size = self.trunk.output_size
            return
        self.norm = None
        self.embed = nn.Embedding(self.num_ids, embed_dim)
        # Several channels with a small product of counts (MiniGrid: 11 objects x 6 colours
        # x 3 states = 198): each cell looks up one row of a joint table, the sum of its
        # channels' rows built each call, instead of C rows summed. The same sum (same
        # order), 1/C of the lookups and of the backward's scatter (docs/benchmarks.md).
        self.joint_sizes: list[int] | None = None
        if c > 1 and int(torch.prod(sizes)) <= MAX_JOINT_ROWS:
            self.joint_sizes = sizes.tolist()
            strides = torch.ones(c, dtype=torch.long)
            for i in range(c - 2, -1, -1):
                strides[i] = strides[i + 1] * sizes[i + 1]
            start_t = torch.as_tensor(start.copy())
            self.register_buffer("strides", strides, persistent=False)  # [C]
            self.register_buffer("joint_base", -(start_t * strides).sum(-1), persistent=False)
        self.trunk = (ConvTrunk(embed_dim, h, w, channels, hidden_size) if trunk == "cnn"
                      else FlatTrunk(embed_dim, h, w, hidden_size, mlp_layers))
        self.output_size = self.trunk.output_size

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.long()
        if self.layout == "hw":
            x = x.unsqueeze(-1)
        elif self.layout == "chw":
            x = x.permute(0, 2, 3, 1)
        if self.norm is not None:  # the channels' id ranges are disjoint: a multi-hot per cell
            if isinstance(self.trunk, FlatTrunk):
                index = (x + self.feature_base).flatten(1)  # [N, H * W * C]
                return multi_hot_mlp(index, self.norm, self.trunk.mlp)
            z = self.norm(one_hot(x + self.offsets, self.num_ids).flatten(1))  # [N, H * W * ids]
            return self.trunk(z.view(*x.shape[:3], self.num_ids).permute(0, 3, 1, 2))
        if self.joint_sizes is None:
            e = self.embed(x + self.offsets).sum(-2)  # [N, H, W, E]: channels summed per cell
        else:
            tables = self.embed.weight.split(self.joint_sizes)
            joint = tables[0]
            for table in tables[1:]:  # row-major over the channels, as the strides
                joint = (joint[:, None, :] + table[None, :, :]).flatten(0, 1)
            e = F.embedding((x * self.strides).sum(-1) + self.joint_base, joint)
        return self.trunk(e.permute(0, 3, 1, 2))


class FlatGridEncoder(nn.Module):
    """A flat MultiDiscrete whose first ``H * W`` symbols are a row-major grid.

    The grid goes through the cell embeddings and the CNN (``GridEncoder``: the same
    filters at every cell, so "a dancer one cell to the north-east" is one feature
    wherever it is), the symbols after it through ``SymbolEncoder``; the two feature
    vectors are concatenated.
    """

    def __init__(self, nvec, start, grid: tuple[int, int], embed_dim: int, channels: int,
                 hidden_size: int, mlp_layers: int, share_embeddings: bool, trunk: str = "cnn",
                 symbols: str = "embed"):
        super().__init__()
        nvec = np.asarray(nvec, dtype=np.int64).reshape(-1)
        start = np.broadcast_to(np.asarray(start, dtype=np.int64), nvec.shape)
        h, w = (int(v) for v in grid)
        self.cells = h * w
        if not 0 < self.cells <= len(nvec):
            raise ValueError(f"symbol_grid {[h, w]} needs {h * w} symbols; the observation has "
                             f"{len(nvec)}")
        self.shape = (h, w)
        self.grid = GridEncoder(nvec[: self.cells].reshape(h, w), start[: self.cells].reshape(h, w),
                                embed_dim, channels, hidden_size, trunk, mlp_layers, symbols)
        self.rest = None
        if self.cells < len(nvec):
            self.rest = SymbolEncoder(nvec[self.cells:], start[self.cells:], embed_dim,
                                      hidden_size, mlp_layers, share_embeddings, symbols)
        self.output_size = self.grid.output_size + (self.rest.output_size if self.rest else 0)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        features = self.grid(obs[:, : self.cells].reshape(-1, *self.shape))
        if self.rest is None:
            return features
        return torch.cat([features, self.rest(obs[:, self.cells:])], dim=-1)


class DictEncoder(nn.Module):
    """Dict/Tuple spaces: every sub-space encoded on its own, features concatenated."""

    def __init__(self, encoders: dict[str, nn.Module]):
        super().__init__()
        self.keys = list(encoders)
        self.encoders = nn.ModuleDict({_safe(k): e for k, e in encoders.items()})
        self.output_size = sum(e.output_size for e in encoders.values())

    def forward(self, obs) -> torch.Tensor:
        if isinstance(obs, (tuple, list)):
            obs = dict(zip(self.keys, obs, strict=True))
        return torch.cat([self.encoders[_safe(k)](obs[k]) for k in self.keys], dim=-1)


def _safe(key) -> str:
    return str(key).replace(".", "_")


def _is_image(space: gym.spaces.Box) -> bool:
    shape = space.shape
    if space.dtype == np.uint8 and len(shape) in (2, 3):
        return True
    return len(shape) == 3 and (shape[-1] <= 4 or shape[0] <= 4) and min(shape[:2]) >= 3


def make_encoder(
    space: gym.Space,
    embed_dim: int = 16,
    hidden_size: int = 128,
    mlp_layers: int = 1,
    cnn_channels: int = 32,
    share_embeddings: bool = True,
    symbol_counts: list[int] | None = None,
    symbol_grid: list[int] | None = None,
    grid_trunk: str = "cnn",
    symbols: str = "embed",
) -> nn.Module:
    """The encoder for ``space``; ``encoder.output_size`` is its feature width.

    ``grid_trunk`` ("cnn" or "mlp") is what reads the cells of a symbol grid; ``symbols``
    ("embed" or "onehot") is how discrete symbols enter (the module docstring)."""
    check_symbols(symbols)
    if isinstance(space, (gym.spaces.Dict, gym.spaces.Tuple)) and (symbol_counts or symbol_grid):
        raise ValueError(f"symbol_counts={symbol_counts} / symbol_grid={symbol_grid} describe one array "
                         f"observation; {type(space).__name__} spaces do not take them (nothing would read "
                         "them): give the env a single array observation, or leave them out")
    if isinstance(space, gym.spaces.Dict):
        return DictEncoder(
            {k: make_encoder(s, embed_dim, hidden_size, mlp_layers, cnn_channels, share_embeddings,
                             grid_trunk=grid_trunk, symbols=symbols)
             for k, s in space.spaces.items()}
        )
    if isinstance(space, gym.spaces.Tuple):
        return DictEncoder(
            {i: make_encoder(s, embed_dim, hidden_size, mlp_layers, cnn_channels, share_embeddings,
                             grid_trunk=grid_trunk, symbols=symbols)
             for i, s in enumerate(space.spaces)}
        )
    if isinstance(space, gym.spaces.MultiDiscrete):
        start = getattr(space, "start", None)
        start = np.zeros_like(space.nvec) if start is None else start
        if space.nvec.ndim == 1 and symbol_grid is not None:
            return FlatGridEncoder(space.nvec, start, tuple(symbol_grid), embed_dim, cnn_channels,
                                   hidden_size, mlp_layers, share_embeddings, grid_trunk, symbols)
        if space.nvec.ndim == 1:
            return SymbolEncoder(space.nvec, start, embed_dim, hidden_size, mlp_layers,
                                 share_embeddings, symbols)
        if space.nvec.ndim in (2, 3):
            return GridEncoder(space.nvec, start, embed_dim, cnn_channels, hidden_size,
                               grid_trunk, mlp_layers, symbols)
    if isinstance(space, gym.spaces.Discrete):
        return DiscreteEncoder(int(space.n), embed_dim, int(space.start), symbols)
    if isinstance(space, gym.spaces.MultiBinary):
        return VectorEncoder(tuple(np.atleast_1d(space.n)), hidden_size, mlp_layers)
    if isinstance(space, gym.spaces.Box):
        if symbol_counts is not None and len(space.shape) == 3:
            counts = np.asarray(symbol_counts, dtype=np.int64)
            axis = _channel_axis(space.shape)
            if space.shape[axis] != len(counts):
                raise ValueError(f"symbol_counts {list(counts)} do not match the channels of "
                                 f"{space.shape}")
            shape = (1, 1, len(counts)) if axis == 2 else (len(counts), 1, 1)
            nvec = np.broadcast_to(counts.reshape(shape), space.shape)
            return GridEncoder(nvec, 0, embed_dim, cnn_channels, hidden_size, grid_trunk,
                               mlp_layers, symbols)
        if _is_image(space):
            return ImageEncoder(space, cnn_channels, hidden_size)
        return VectorEncoder(space.shape, hidden_size, mlp_layers)
    raise TypeError(f"no encoder for observation space {space!r}")
