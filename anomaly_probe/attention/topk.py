"""The k-th largest score of every row: the threshold of the top-k (dilution) attention.

The top-k recipe keeps each query's ``k`` largest logits. It needs only the threshold (the k-th
largest value of the row; ties at it are kept), not the sorted top ``k``. ``torch.topk`` finds the
top ``k`` with a partial sort per row, about 40 us for a row of 12000 keys on one core: in the
12000-token demo that was the largest unit. On the CPU, :func:`kth_largest` instead:

1. takes a strided sample of the row (:data:`SAMPLE` values, spread over the whole row: attention
   scores have structure along it, e.g. they rise toward recent keys) and picks from it a value
   ``t`` that about ``2k`` elements of the row exceed;
2. copies the elements ``>= t`` to a buffer in one pass (blocks of 16 values with none ``>= t``, most
   of them, are skipped after one vectorised comparison; the rest are copied without branches);
3. when the buffer holds at least ``k`` elements, the answer is the buffer's k-th largest, found by
   bisection over order-preserving integer keys of the floats (32 vectorised counts over a few
   hundred values: a quickselect's mispredicted branches cost 10x more); otherwise (an unlucky
   sample) it tries a lower ``t``, and finally bisects over the whole row.

The result is exact (the same value ``torch.topk(...).values.amin()`` gives). Rows holding a NaN
(which ``torch.topk`` orders above everything) are handed back to ``torch.topk``. Elsewhere (no numba,
another device or dtype) the torch path runs.

numba is imported on the first call (nothing at import time); compiled code is cached on disk.
"""

from __future__ import annotations

import threading

import numpy as np
import torch

SAMPLE = 256  # sampled values per row
_KERNEL = None
_COMPILING = threading.Lock()


def _compile(boundscheck: bool = False):
    """The numba kernel: ``kernel(x (R, m), k, out (R,), nan (R,) bool)`` (see the module docstring).
    ``boundscheck`` (tests) raises IndexError on any out-of-range access."""
    import numba

    jit = numba.njit(nogil=True, cache=not boundscheck, boundscheck=boundscheck)

    @jit
    def select(a, n, rank):  # pragma: no cover - compiled
        """The ``rank``-th smallest (0-based) of ``a[:n]``; reorders ``a`` (quickselect)."""
        lo, hi = 0, n - 1
        while lo < hi:
            x0, x1, x2 = a[lo], a[(lo + hi) >> 1], a[hi]
            pivot = max(min(x0, x1), min(max(x0, x1), x2))  # median of three
            i, j = lo, hi
            while i <= j:
                while a[i] < pivot:
                    i += 1
                while a[j] > pivot:
                    j -= 1
                if i <= j:
                    a[i], a[j] = a[j], a[i]
                    i += 1
                    j -= 1
            if rank <= j:
                hi = j
            elif rank >= i:
                lo = i
            else:
                return a[rank]
        return a[rank]

    @jit
    def kth_of(buf, n, k, keys):  # pragma: no cover - compiled
        """The k-th largest of ``buf[:n]`` (n >= k, no NaN): bisection over order-preserving integer keys
        of the floats, each step one vectorised count (no data-dependent branches)."""
        bits = buf[:n].view(np.int32)
        lo, hi = np.int64(2 ** 31), np.int64(-(2 ** 31))
        for j in range(n):
            b = bits[j]
            key = np.int64(b if b >= 0 else b ^ 0x7FFFFFFF)  # ordered like the floats (-0.0 just below 0.0)
            keys[j] = key
            lo = min(lo, key)
            hi = max(hi, key)
        while lo < hi:  # invariant: at least k keys >= lo, fewer than k keys > hi
            mid = (lo + hi + 1) >> 1
            c = 0
            for j in range(n):
                c += 1 if keys[j] >= mid else 0
            if c >= k:
                lo = mid
            else:
                hi = mid - 1
        for j in range(n):
            if keys[j] == lo:
                return buf[j]
        return buf[0]  # unreachable: lo is a key

    @jit
    def kernel(x, k, out, nan):  # pragma: no cover - compiled
        R, m = x.shape
        s = min(SAMPLE, m)
        n = m - m % 16
        buf = np.empty(m, dtype=np.float32)
        keys = np.empty(m, dtype=np.int64)
        flags = np.empty(m, dtype=np.uint8)
        sample = np.empty(s, dtype=np.float32)
        for r in range(R):
            xr = x[r]
            bad = False
            for j in range(m):
                bad |= xr[j] != xr[j]
            nan[r] = bad
            if bad:
                continue
            found = False
            if 4 * k < m:
                stride = m / s
                for i in range(s):
                    sample[i] = xr[int(i * stride)]
                want = (2 * k * s) // m + 1  # sample values above t: about 2k row values above it
                while want < s and not found:
                    t = select(sample, s, s - 1 - want)
                    for j in range(m):
                        flags[j] = 1 if xr[j] >= t else 0  # vectorised
                    c = 0
                    for j in range(0, n, 16):  # blocks with no value >= t (most) are skipped
                        hit = 0
                        for i in range(16):
                            hit |= flags[j + i]
                        if hit:
                            for i in range(16):  # branch-free copy of the values >= t
                                buf[c] = xr[j + i]
                                c += flags[j + i]
                    for j in range(n, m):
                        buf[c] = xr[j]
                        c += flags[j]
                    if c >= k:
                        out[r] = kth_of(buf, c, k, keys)
                        found = True
                    want *= 4
            if not found:
                buf[:m] = xr
                out[r] = kth_of(buf, m, k, keys)

    return kernel


def kth_largest(x: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k``-th largest value along the last axis of ``x``, keeping its dims.

    Parameters
    ----------
    x : torch.Tensor
        Scores, shape (..., m), ``k <= m``.
    k : int
        Rank (1: the maximum).

    Returns
    -------
    torch.Tensor
        Shape (..., 1), ``x.dtype``: equal to ``x.topk(k, dim=-1).values.amin(-1, keepdim=True)``.
    """
    if not _numba_serves(x):
        return x.topk(k, dim=-1, sorted=False).values.amin(-1, keepdim=True)
    global _KERNEL
    if _KERNEL is None:
        with _COMPILING:  # the fused kernel's chunk workers may arrive together: compile (and cache) once
            if _KERNEL is None:
                _KERNEL = _compile()
    rows = x.reshape(-1, x.shape[-1])  # (R, m): a view when x is contiguous
    out = np.empty(rows.shape[0], dtype=np.float32)
    nan = np.empty(rows.shape[0], dtype=np.bool_)
    _KERNEL(rows.numpy(), k, out, nan)
    kth = torch.from_numpy(out)
    if nan.any():  # NaN rows: torch's order (NaN above everything)
        idx = torch.from_numpy(np.nonzero(nan)[0])
        kth[idx] = rows[idx].topk(k, dim=-1, sorted=False).values.amin(-1)
    return kth.view(*x.shape[:-1], 1)


def _numba_serves(x: torch.Tensor) -> bool:
    if x.device.type != "cpu" or x.dtype != torch.float32 or not x.is_contiguous() or x.numel() == 0:
        return False
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True
