"""Where eval-bias looks past its stepwise prefix: spot windows, and their per-window statistics.

Stepwise and batched scoring tend to agree on short contexts; known divergences start later (MPS
switches its decode attention kernel at a cache length of 1024; half-precision softmax in MPS
attention has been reported to lose precision beyond ~3k tokens). So besides the prefix the
experiment scores a few short windows one token at a time on a batched-prefilled cache (the ``spot``
engine) at positions chosen from the sample length and the trained context only: the same for every
model, deterministic, documented in docs/HYPOTHESES.md.
"""

from __future__ import annotations

import numpy as np

ANCHORS = (1024, 4096)
"""Entry indices (cache lengths) where a window starts whatever the model: the MPS decode-kernel
switch and the region of the reported half-precision softmax loss."""


def spot_windows(n_tokens: int, trained_context: int, size: int, prefix: int | None = None) -> list[tuple[int, int]]:
    """Spot windows of one sample, as per-token entry ranges ``[start, stop)``.

    Windows start at entry 1024, 4096, the trained context ``C`` (the first query past it) and
    ``T - 1 - size`` (the last ``size`` entries: the analysis region always reaches the end of the
    sample, so this one lies inside it). A window that starts past the last entry is dropped, one that
    runs past it is cut; windows the stepwise prefix already covers are dropped; overlapping or
    touching windows are merged.

    Parameters
    ----------
    n_tokens : int
        Sample length T (tokens); entries are ``0 .. T-2`` (entry i scores token i + 1).
    trained_context : int
        The model's trained context C (tokens).
    size : int
        Entries per window (0: no windows).
    prefix : int or None
        The stepwise prefix in tokens (``None``: the whole sample, so no window is needed).

    Returns
    -------
    list of (int, int)
        Sorted, disjoint ``(start, stop)`` entry ranges.
    """
    last = n_tokens - 1  # number of entries
    covered = last if prefix is None else max(0, min(prefix, n_tokens) - 1)
    if size <= 0 or covered >= last:
        return []
    starts = sorted({*ANCHORS, trained_context, max(0, last - size)})
    windows = [(p, min(p + size, last)) for p in starts if 0 <= p < last and p + size > covered]
    merged: list[tuple[int, int]] = []
    for a, b in windows:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def positions_text(a: int, b: int) -> str:
    """Entries ``[a, b)`` as the token positions they score (``a+1-b``)."""
    return f"{a + 1}-{b}"


def window_stats(windows: list[tuple[int, int]], step: list[np.ndarray], batched: list[np.ndarray],
                 analysis_start: int) -> list[dict]:
    """Per window, stepwise minus batched NLL over every sample.

    Parameters
    ----------
    windows : list of (start, stop)
        Entry ranges (the same for every sample of one length).
    step, batched : list of np.ndarray
        Per sample, per-token NLL (nats) of the spot run and of the batched run, shape (T-1,) (shorter
        where a non-finite value cut them; a window past the cut counts only its remaining entries).
    analysis_start : int
        First entry of the analysis region.

    Returns
    -------
    list of dict
        ``start``, ``stop`` (entries), ``positions`` (``"a-b"``), ``tokens`` (over samples),
        ``max_abs_dnll``, ``mean_abs_dnll``, ``mean_dnll`` (nats/token; None without tokens) and
        ``region``: ``inside``, ``outside`` or ``partly`` inside the analysis region.
    """
    out = []
    for a, b in windows:
        d = np.concatenate([s[a:min(b, len(s), len(t))] - t[a:min(b, len(s), len(t))] for s, t in zip(step, batched)])
        region = "inside" if a >= analysis_start else ("outside" if b <= analysis_start else "partly")
        out.append({"start": int(a), "stop": int(b), "positions": positions_text(a, b), "tokens": int(d.size),
                    "max_abs_dnll": float(np.abs(d).max()) if d.size else None,
                    "mean_abs_dnll": float(np.abs(d).mean()) if d.size else None,
                    "mean_dnll": float(d.mean()) if d.size else None, "region": region})
    return out


def compared_entries(prefix_diff: list[np.ndarray], spot: list[np.ndarray], batched: list[np.ndarray],
                     windows: list[tuple[int, int]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per sample, the entries scored both ways and NLL(stepwise) - NLL(batched) there, in entry order.

    Parameters
    ----------
    prefix_diff : list of np.ndarray
        Per sample, stepwise minus batched NLL over the prefix entries ``0 .. P-1`` (nats).
    spot, batched : list of np.ndarray
        Per sample, the spot run's and the batched run's per-token NLL (empty lists without windows).
    windows : list of (start, stop)
        The spot windows; their entries the prefix already holds are not counted twice.

    Returns
    -------
    list of (np.ndarray, np.ndarray)
        ``(entries, dnll)`` per sample, both of shape (n_compared,).
    """
    out = []
    for s, d in enumerate(prefix_diff):
        entries, values = [np.arange(len(d))], [d]
        if windows:
            n = min(len(spot[s]), len(batched[s]))
            for a, b in windows:
                e = np.arange(max(a, len(d)), min(b, n))
                entries.append(e)
                values.append(spot[s][e] - batched[s][e])
        out.append((np.concatenate(entries), np.concatenate(values)))
    return out


def spot_evidence(stats: list[dict], windows: list[tuple[int, int]], spot: list[np.ndarray],
                  batched: list[np.ndarray]) -> dict:
    """Verdict evidence of the windows (from :func:`window_stats`), and the check that the spot run's
    batched parts equal the batched run (``spot_batched_parts_max_abs_dnll``, nats)."""
    parts = []
    for x, y in zip(spot, batched):
        n = min(len(x), len(y))
        keep = np.ones(n, dtype=bool)
        for a, b in windows:
            keep[a:b] = False
        parts.append(np.abs(x[:n] - y[:n])[keep])
    both = np.concatenate(parts) if parts else np.zeros(0)
    return {"spot_windows": [f"{w['positions']}: max {_e(w['max_abs_dnll'])}, {w['region']}" for w in stats],
            "spot_window_entries": [[w["start"], w["stop"]] for w in stats],
            "spot_window_max_abs_dnll": [w["max_abs_dnll"] for w in stats],
            "spot_window_mean_abs_dnll": [w["mean_abs_dnll"] for w in stats],
            "spot_window_region": [w["region"] for w in stats],
            "spot_batched_parts_max_abs_dnll": float(both.max()) if both.size else None}


def _e(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1e}"
