"""Each row's k-th largest score: the threshold of the top-k (dilution) intervention.

``torch.topk`` over 12000 keys costs about twelve softmax passes per query chunk, which made the
dilution intervention the most expensive unit of the demo. On the CPU, :func:`kth_largest` finds the
same value with numba: a threshold from a strided sample of about ``8k`` keys (its ``~k/step``-th
largest, lowered by three standard deviations), the keys at or above it (usually a little more than
``k``), and their exact ``k``-th largest by a min-heap. When fewer than ``k`` keys reach the threshold
(an adversarial row) the heap runs over the whole row. A row that holds a NaN is left to
``torch.topk``, as is every other device or dtype (or a machine without numba).

numba is imported on the first call (nothing at import time); compiled code is cached on disk.
"""

from __future__ import annotations

import numpy as np
import torch

_KERNEL = None


def _compile(boundscheck: bool = False):
    """The kernel; ``boundscheck`` (tests) raises IndexError on any out-of-range access instead of writing."""
    import numba

    jit = numba.njit(nogil=True, cache=not boundscheck, boundscheck=boundscheck)

    @jit
    def sift_down(heap, i, k):  # pragma: no cover - compiled
        v = heap[i]
        while True:
            c = 2 * i + 1
            if c >= k:
                break
            if c + 1 < k and heap[c + 1] < heap[c]:
                c += 1
            if heap[c] >= v:
                break
            heap[i] = heap[c]
            i = c
        heap[i] = v

    @jit
    def kth_of(vals, n, k, heap):  # pragma: no cover - compiled
        """k-th largest of vals[:n] (k <= n): a min-heap of the k largest so far."""
        for j in range(k):
            heap[j] = vals[j]
        for i in range(k // 2 - 1, -1, -1):
            sift_down(heap, i, k)
        for j in range(k, n):
            v = vals[j]
            if v > heap[0]:
                heap[0] = v
                sift_down(heap, 0, k)
        return heap[0]

    @jit
    def kernel(x, k, out):  # pragma: no cover - compiled
        R, m = x.shape
        buf = np.empty(m, dtype=np.float32)
        step = max(1, m // (8 * k))  # a strided sample of about 8k keys
        n_s = (m + step - 1) // step
        want = k // step + 3 * int(np.sqrt(k / step)) + 2  # a sample rank that lies below the k-th largest
        sample = step > 1 and want < n_s  # step 1: the sample would be the row itself
        heap = np.empty(max(k, want), dtype=np.float32)  # kth_of writes heap[:rank]
        for r in range(R):
            row = x[r]
            nan = False
            for j in range(m):
                nan |= row[j] != row[j]
            if nan:
                out[r] = np.nan  # the caller asks torch (NaN orders first there)
                continue
            c = 0
            if sample:  # keys at or above the sample's want-th largest: usually a little more than k
                for i in range(n_s):
                    buf[i] = row[i * step]
                thr = kth_of(buf, n_s, want, heap)
                for j in range(m):
                    if row[j] >= thr:
                        buf[c] = row[j]
                        c += 1
            if c >= k:
                out[r] = kth_of(buf, c, k, heap)
            else:  # the sample misled (or the row is short): every key
                out[r] = kth_of(row, m, k, heap)

    return kernel


def kth_largest(x: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k``-th largest value of every row of ``x`` (..., m), ``1 <= k <= m``, as (..., 1).

    Equals ``x.topk(k, dim=-1).values.amin(-1, keepdim=True)`` exactly (the same order statistic).
    """
    global _KERNEL
    m = x.shape[-1]
    if not 1 <= k <= m:
        raise ValueError(f"k must be in 1..{m}, got {k}")
    if x.device.type != "cpu" or x.dtype != torch.float32 or not _numba():
        return x.topk(k, dim=-1, sorted=False).values.amin(-1, keepdim=True)
    if _KERNEL is None:
        _KERNEL = _compile()
    rows = x.reshape(-1, m).contiguous()
    out = np.empty(rows.shape[0], dtype=np.float32)
    _KERNEL(rows.numpy(), k, out)
    kth = torch.from_numpy(out)
    bad = torch.isnan(kth)
    if bool(bad.any()):  # rows with a NaN: torch's order
        kth[bad] = rows[bad].topk(k, dim=-1, sorted=False).values.amin(-1)
    return kth.view(*x.shape[:-1], 1)


def _numba() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True
