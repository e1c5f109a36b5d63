"""Counter-based random numbers: a pure function of (seed, copy, episode, step, stream).

Copy i of a batch draws its episodes from keys derived from (seed, i) alone, so
its episodes do not depend on the number of copies, the device or the thread
count, and a single env seeded s plays exactly copy 0 of a batch seeded s.
Integer operators only (kept below 2**32 so products fit int64 on every device),
no generator state, no host sync: every function here takes int64 tensors or
Python ints alike (``envs.backends``), with the same results.
"""

from __future__ import annotations

import functools
import itertools
import math

import torch

_MASK32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9
# Keys are 32 bits and a seed or copy index enters them through its low 32 bits: beyond
# these limits two seeds (or copies) would play the same episodes, so they are refused.
SEED_LIMIT = 2**32
COPY_LIMIT = 2**32


def check_seed(seed, name: str = "seed") -> int:
    """``seed`` as an int, or a ValueError naming the accepted range."""
    import numpy as np

    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or not (
            0 <= seed < SEED_LIMIT):
        raise ValueError(f"{name}={seed!r} is out of range; accepted: an int in 0..{SEED_LIMIT - 1}")
    return int(seed)


_OFFSET = 0x632BE5AB


def combine(key, value):
    """A new key from a key and a counter (episode, step, stream...): hash32 of their mix."""
    # hash32 written out here: the single env calls this every step, in Python
    x = (key ^ ((value * _GOLDEN + _OFFSET) & _MASK32)) & _MASK32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _MASK32
    return x ^ (x >> 16)


def hash32(x):
    """A 32-bit integer hash (Wellons' lowbias32) of an int64 tensor or int; values in [0, 2**32)."""
    return combine(x ^ _OFFSET, 0)  # combine(k, 0) hashes k ^ _OFFSET


def copy_keys(seed: int, copies):
    """One key per copy (a tensor of copy indices, or one index), a function of (seed, copy) only."""
    seed_key = hash32((seed & _MASK32) ^ ((seed >> 32) & _MASK32))
    return combine(seed_key, copies)


def randint(key, high):
    """Integers in [0, high) from hashed keys, ``high`` <= 2**31.

    Multiply-shift (Lemire) instead of a modulo: int64 division is the slowest
    elementwise op on CPU, and the bias is below high / 2**32 either way.
    """
    return (key * high) >> 32


def uniform(key: torch.Tensor) -> torch.Tensor:
    """Floats in [0, 1) from hashed keys."""
    return key.to(torch.float32) * (1.0 / 4294967296.0)


@functools.lru_cache(maxsize=32)
def _permutations(n: int, rows: int) -> torch.Tensor:
    if math.factorial(n) <= rows:
        return torch.tensor(list(itertools.permutations(range(n))), dtype=torch.int64)
    gen = torch.Generator().manual_seed(0x5EED + n)
    return torch.rand(rows, n, generator=gen).argsort(dim=1)


def permutation_table(n: int, rows: int = 4096, device: torch.device | str = "cpu") -> torch.Tensor:
    """``rows`` fixed random permutations of range(n) (all n! of them when that is fewer).

    Tasks pick a row by hashing, which turns "a random ordering of n items" into
    one gather instead of a sort per step. The table is the same on every device.
    """
    return _permutations(n, rows).to(device)
