"""Keep the C library from handing freed memory back to the OS between training steps.

glibc serves every allocation of 128 KB or more with a fresh ``mmap`` and unmaps it
when it is freed (the threshold moves up after such a free, but the top of the heap is
still trimmed once twice that much lies free there). A PPO update allocates and frees
the same few-MB temporaries thousands of times, so each of them faults its pages in
again, zero-filled by the kernel, every time. On the project's 2-core CPU machine a
``RunningNorm`` of a [512, 980] batch written as three plain tensor ops took 1.7-3.4 ms
that way and 0.16 ms with the memory kept (docs/benchmarks.md, MiniGrid-MemoryS7 with
sample-factory's own update).

:func:`keep_freed_memory` sets what the ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` variables would set at start-up: allocations below 32 MB
(the most glibc accepts on 64-bit) come from the heap, and the heap keeps up to 1 GB of
freed memory for reuse. The price is a resident size that stays near its peak. It is
on by default in the trainers (``keep_freed_memory: true`` in ``configs/config.yaml``
and ``configs/train_dt.yaml``) and does nothing where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's upper limit for M_MMAP_THRESHOLD on 64-bit
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds for this process (see the module doc); True
    where both were set, False where the C library is not glibc or refused them."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
        libc.gnu_get_libc_version  # noqa: B018  (present in glibc only)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
