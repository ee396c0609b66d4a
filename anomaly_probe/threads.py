"""Intra-op thread counts: whether torch can change them safely, and a scoped setter.

Shared by the probes (small reductions on one thread) and the stepwise engine (single-token forwards
on the thread count that measured fastest). Nothing runs at import time.
"""

from __future__ import annotations

import re
from functools import lru_cache

import torch


@lru_cache(maxsize=None)
def can_toggle(n_threads: int) -> bool:
    """True when ``torch.set_num_threads(n_threads)`` restores every pool exactly as it was.

    Not with ATen's native thread pool (it cannot be resized once used), nor where MKL was given its
    own thread count (``MKL_NUM_THREADS`` differs from the intra-op count; restoring would change it).
    """
    info = torch.__config__.parallel_info()
    if "parallel backend: OpenMP" not in info:
        return False
    mkl = re.search(r"mkl_get_max_threads\(\) : (\d+)", info)
    return mkl is None or int(mkl.group(1)) == n_threads


class intra_op_threads:
    """``with intra_op_threads(n):`` runs the block with ``n`` intra-op threads, then restores the count.

    Does nothing when ``n`` is the current count or the count cannot be restored exactly
    (:func:`can_toggle`). A plain class: cheap enough to enter per step.
    """

    __slots__ = ("n", "previous")

    def __init__(self, n: int) -> None:
        self.n = n
        self.previous = torch.get_num_threads()

    def __enter__(self) -> None:
        if self.n == self.previous or not can_toggle(self.previous):
            self.previous = self.n = 0
            return
        torch.set_num_threads(self.n)

    def __exit__(self, *exc) -> None:
        if self.previous:
            torch.set_num_threads(self.previous)


_POOLS: dict[str, tuple] = {}  # prefix -> (workers, ThreadPoolExecutor), kept for the process


def worker_pool(prefix: str, n: int):
    """A ``ThreadPoolExecutor`` of ``n`` workers named ``prefix``, kept for the process (replaced when ``n``
    changes). For compiled or torch work that releases the GIL (the fused kernel's chunks, the row kernel)."""
    from concurrent.futures import ThreadPoolExecutor

    held = _POOLS.get(prefix)
    if held is None or held[0] != n:
        if held is not None:
            held[1].shutdown(wait=False)
        held = _POOLS[prefix] = (n, ThreadPoolExecutor(n, thread_name_prefix=prefix))
    return held[1]
