"""Memory pressure on demand: a bounded ballast allocation whose pages are really touched."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import psutil
import torch

PAGE = 4096


def ballast_bytes(fraction: float, cap_bytes: int) -> int:
    """``fraction`` of the currently available memory, at most ``cap_bytes``."""
    return int(min(psutil.virtual_memory().available * fraction, cap_bytes))


@contextmanager
def ballast(nbytes: int, device: torch.device | None = None) -> Iterator[dict]:
    """Hold ``nbytes`` of touched host memory (and as much on ``device`` if it is a GPU).

    Yields
    ------
    dict
        ``host_bytes``, ``device_bytes`` actually held, and swap counters before the run
        (``swap_in_before``, ``swap_out_before``) so the caller can report swap activity.
    """
    swap = psutil.swap_memory()
    info = {"host_bytes": 0, "device_bytes": 0, "swap_in_before": swap.sin, "swap_out_before": swap.sout}
    host = np.ones(max(nbytes, 0) // 8, dtype=np.float64)  # ones: every page written, so resident
    info["host_bytes"] = host.nbytes
    dev = None
    if device is not None and device.type in ("cuda", "mps"):
        try:
            dev = torch.ones(max(nbytes, 0) // 4, dtype=torch.float32, device=device)
            info["device_bytes"] = dev.numel() * 4
        except RuntimeError:  # not enough device memory for the ballast: host pressure only
            dev = None
    try:
        yield info
    finally:
        del host, dev
