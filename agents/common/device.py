"""A ``device=`` argument checked before anything is built on it, and the CPU settings
a trainer's process takes (``set_up_cpu``)."""

from __future__ import annotations

import torch

from agents.common.malloc import keep_freed_memory

CUDA_HINT = ("install a CUDA build of torch (https://pytorch.org/get-started/locally/, e.g. "
             "pip install torch --index-url https://download.pytorch.org/whl/cu126) or use device=cpu")


def check_device(name) -> torch.device:
    """``torch.device(name)``, or one ValueError line saying why it cannot be used here."""
    try:
        device = torch.device(str(name))
    except RuntimeError:
        raise ValueError(f"device={name!r} is not a device; accepted: cpu, cuda, cuda:<index>, "
                         "mps") from None
    if device.type == "cuda":
        if not torch.backends.cuda.is_built():
            raise ValueError(f"device={name}: this torch ({torch.__version__}) is built without "
                             f"CUDA; {CUDA_HINT}")
        if not torch.cuda.is_available():
            raise ValueError(f"device={name}: torch has CUDA but sees no GPU (no driver, or "
                             "CUDA_VISIBLE_DEVICES hides them); use device=cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device={name}: only {torch.cuda.device_count()} GPU(s) visible")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={name}: MPS is not available here; use device=cpu")
    return device


def set_up_cpu(cfg) -> None:
    """A trainer's process settings: torch's thread count (``threads``; null keeps torch's
    default) and glibc's reuse of freed memory (``keep_freed_memory``, on unless set
    false; agents/common/malloc.py)."""
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    if cfg.get("keep_freed_memory", True):
        keep_freed_memory()
