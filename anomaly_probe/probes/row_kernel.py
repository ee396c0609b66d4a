"""One pass over a chunk's scores and weights: every per-row sum the attention statistics need (CPU).

The fused attention kernel (:mod:`anomaly_probe.attention.fused`) hands the probe a chunk's float32
scores ``x`` and weights ``p = softmax(x)``. In torch each statistic is its own pass over the chunk
(max, min, ``sum(p * x)``, the distance product, two comparisons and two clamps for the underflow
counts...): at 12000 keys those passes cost twice the attention itself. :func:`row_sums` reads ``x``
and ``p`` row by row while the row is in the core's cache, with numba, and returns the sums from which
:mod:`~anomaly_probe.probes.chunk_stats` forms the metrics. Rows are split over ``torch.get_num_threads()``
Python threads (the compiled kernel releases the GIL): numba's own thread pool fought torch's OpenMP
threads on a 2-core machine (the attention around it ran 2-3x slower), a plain thread split does not.

Hidden keys hold exactly :data:`~anomaly_probe.attention.fused.HIDDEN` in ``x`` (and weight 0). A
non-finite visible score is not interpreted here: it makes ``hi``/``lo``/``spx`` non-finite, and the
caller recomputes such rows by the definitions.

numba is imported on the first call (nothing at import time); compiled code is cached on disk.
"""

from __future__ import annotations

import threading

import numpy as np
import torch

from anomaly_probe.threads import worker_pool

SUMS = ("hi", "lo", "p_max", "spx", "n_vis", "dist", "sink", "recent",
        "fp16_count", "fp16_mass", "bf16_count", "bf16_mass")
"""Columns of :func:`row_sums`' result."""

_KERNEL = None
_COMPILING = threading.Lock()


def _compile(boundscheck: bool = False):
    """The numba kernel (compiled once per process; numba's on-disk cache makes later processes fast).

    Each row is read a few times while it sits in the core's cache (a row of 12000 keys is 48 KB):
    max/min, then the weighted sums, then the underflow counts only for rows whose smallest weight is
    near a bound. Every pass keeps 16 lanes of partial results (a plain scalar max or sum, or a
    conditional count, does not vectorise: the lane form is 4x faster). ``boundscheck`` (tests)
    raises IndexError on any out-of-range access."""
    import numba

    lanes = 16

    @numba.njit(nogil=True, cache=not boundscheck, boundscheck=boundscheck,
                fastmath={"reassoc", "contract", "nsz", "arcp"})
    def kernel(x, p, dist, sink, row_off, recent, hidden, b16, bbf, out):  # pragma: no cover - compiled
        R, m = x.shape
        zero, one, inf = np.float32(0.0), np.float32(1.0), np.float32(np.inf)
        n = m - m % lanes
        for r in range(R):
            xr, pr = x[r], p[r]
            hi_l = np.full(lanes, -inf, dtype=np.float32)
            lo_l = np.full(lanes, inf, dtype=np.float32)
            pm_l = np.zeros(lanes, dtype=np.float32)
            for j in range(0, n, lanes):
                for k in range(lanes):
                    v, w = xr[j + k], pr[j + k]
                    hi_l[k] = v if v > hi_l[k] else hi_l[k]
                    u = inf if v == hidden else v
                    lo_l[k] = u if u < lo_l[k] else lo_l[k]
                    pm_l[k] = w if w > pm_l[k] else pm_l[k]
            hi, lo, p_max = hi_l.max(), lo_l.min(), pm_l.max()
            for j in range(n, m):
                v, w = xr[j], pr[j]
                hi = v if v > hi else hi
                u = inf if v == hidden else v
                lo = u if u < lo else lo
                p_max = w if w > p_max else p_max
            near = np.float32(row_off[r] + recent)  # keys with dist < near are recent for this row
            acc = np.zeros((5, lanes), dtype=np.float32)  # lane sums: a scalar sum would not vectorise
            for j in range(0, n, lanes):
                for k in range(lanes):
                    w, v, d = pr[j + k], xr[j + k], dist[j + k]
                    acc[0, k] += w * v  # a hidden key adds 0 * HIDDEN = 0
                    acc[1, k] += w * d
                    acc[2, k] += w * sink[j + k]
                    acc[3, k] += one if v == hidden else zero
                    acc[4, k] += w if d < near else zero
            spx, dst, snk, n_hid, rec = acc[0].sum(), acc[1].sum(), acc[2].sum(), acc[3].sum(), acc[4].sum()
            for j in range(n, m):
                w, v, d = pr[j], xr[j], dist[j]
                spx += w * v
                dst += w * d
                snk += w * sink[j]
                n_hid += one if v == hidden else zero
                rec += w if d < near else zero
            out[r, 0], out[r, 1], out[r, 2], out[r, 3] = hi, lo, p_max, spx
            out[r, 4], out[r, 5], out[r, 6], out[r, 7] = m - n_hid, dst, snk, rec
            out[r, 8] = out[r, 9] = out[r, 10] = out[r, 11] = zero
            p_min = np.exp(lo - hi) * p_max  # the smallest visible weight, up to rounding
            if p_min <= 2 * b16:  # weights in (0, b]: those at most b, less the zeros (hidden keys)
                acc[:] = zero
                for j in range(0, n, lanes):
                    for k in range(lanes):
                        w = pr[j + k]
                        acc[0, k] += one if w <= b16 else zero
                        acc[1, k] += w if w <= b16 else zero
                        acc[2, k] += one if w <= bbf else zero
                        acc[3, k] += w if w <= bbf else zero
                        acc[4, k] += one if w == zero else zero
                c16, m16, cbf, mbf, nz = acc[0].sum(), acc[1].sum(), acc[2].sum(), acc[3].sum(), acc[4].sum()
                for j in range(n, m):
                    w = pr[j]
                    c16 += one if w <= b16 else zero
                    m16 += w if w <= b16 else zero
                    cbf += one if w <= bbf else zero
                    mbf += w if w <= bbf else zero
                    nz += one if w == zero else zero
                out[r, 8], out[r, 9] = c16 - nz, m16
                if p_min <= 2 * bbf:
                    out[r, 10], out[r, 11] = cbf - nz, mbf

    return kernel


def available(t: torch.Tensor) -> bool:
    """Whether :func:`row_sums` can serve ``t`` (a CPU float32 tensor, numba importable)."""
    if t.device.type != "cpu" or t.dtype != torch.float32:
        return False
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def row_sums(x: torch.Tensor, p: torch.Tensor, dist: torch.Tensor, sink: torch.Tensor, row_off: torch.Tensor,
             recent: float, hidden: float, bounds: tuple[float, float]) -> torch.Tensor:
    """Per-row sums of one chunk, in one pass.

    Parameters
    ----------
    x, p : torch.Tensor
        Scores and weights, float32, CPU, shape (R, m), last dim contiguous.
    dist : torch.Tensor
        ``ref - k`` of each key, float32, shape (m,).
    sink : torch.Tensor
        1.0 on sink keys, else 0.0, float32, shape (m,).
    row_off : torch.Tensor
        ``ref - q`` of each row's query, float32, shape (R,).
    recent : float
        Window of the recent mass (keys with ``dist < row_off + recent``); ``-inf`` for none.
    hidden : float
        The score hidden keys hold.
    bounds : tuple of float
        Largest weights float16 and bfloat16 round to 0.

    Returns
    -------
    torch.Tensor
        Shape (R, len(SUMS)), float32: see :data:`SUMS` (``*_count``/``*_mass``: weights in
        ``(0, bound]``; ``dist``/``sink``/``recent``: ``p``-weighted sums).
    """
    global _KERNEL
    if _KERNEL is None:
        with _COMPILING:  # the fused kernel's chunk workers may arrive together: compile (and cache) once
            if _KERNEL is None:
                _KERNEL = _compile()
    R = x.shape[0]
    out = np.empty((R, len(SUMS)), dtype=np.float32)
    args = [x.numpy(), p.numpy(), dist.numpy(), sink.numpy(), row_off.numpy(), np.float32(recent),
            np.float32(hidden), np.float32(bounds[0]), np.float32(bounds[1]), out]
    parts = min(torch.get_num_threads(), R)  # 1 on the fused kernel's chunk workers
    if parts <= 1:
        _KERNEL(*args)
    else:  # rows split over threads (the kernel releases the GIL); numba's own pool would fight torch's
        cuts = np.linspace(0, R, parts + 1).astype(int)
        jobs = [worker_pool("row-kernel", parts).submit(_KERNEL, *(a[lo:hi] if i in (0, 1, 4, 9) else a for i, a in enumerate(args)))
                for lo, hi in zip(cuts[:-1], cuts[1:])]
        for job in jobs:
            job.result()
    return torch.from_numpy(out)
