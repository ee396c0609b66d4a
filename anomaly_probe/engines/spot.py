"""Batched scoring with stepwise spot windows: the eval-bias check at long positions.

The sample goes through the full cache in batched chunks, exactly as :mod:`~anomaly_probe.engines.batched`
does, except inside a few spot windows: there the cache holds everything before the window (a
batched prefill) and each query is scored in its own forward, one token at a time, as the stepwise
engine scores the full cache; after the window the batched chunks resume on the same cache. So one
run gives stepwise scores at long positions (past 1024, past 4096, past the trained context ...) for
little more than the cost of a batched run, and its batched parts are a free check against the
batched engine. Used by the eval-bias experiment only; not a ``--engine`` choice.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from anomaly_probe.config import DEFAULT_CHUNK
from anomaly_probe.engines.batched import score_full_ranges
from anomaly_probe.engines.common import Progress, no_progress
from anomaly_probe.engines.scores import TokenScores
from anomaly_probe.errors import UserError
from anomaly_probe.methods.base import CacheMethod
from anomaly_probe.step_context import StepObserver


def segments(n_entries: int, windows: Sequence[tuple[int, int]], chunk_size: int) -> list[tuple[int, int]]:
    """The query ranges of the forwards: batched chunks, and one-query forwards inside the windows.

    Parameters
    ----------
    n_entries : int
        Queries to score (T - 1 for a sample of T tokens).
    windows : sequence of (start, stop)
        Entry ranges scored one query per forward; clipped to ``[0, n_entries)``.
    chunk_size : int
        Queries per batched forward; batched chunks keep the batched engine's grid (multiples of
        ``chunk_size``), cut where a window begins or ends.

    Returns
    -------
    list of (lo, hi)
        Consecutive, covering ``[0, n_entries)``; a forward per range.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    inside = np.zeros(n_entries, dtype=bool)
    for a, b in windows:
        inside[max(0, a):max(0, min(b, n_entries))] = True
    cuts = set(range(0, n_entries, chunk_size)) | {n_entries}
    cuts |= {i for i in range(1, n_entries) if inside[i] != inside[i - 1]}
    out = []
    bounds = sorted(cuts)
    for lo, hi in zip(bounds, bounds[1:]):
        if inside[lo]:
            out.extend((t, t + 1) for t in range(lo, hi))
        else:
            out.append((lo, hi))
    return out


@torch.no_grad()
def score_spot(model: torch.nn.Module, ids: torch.Tensor, method: CacheMethod,
               progress: Progress = no_progress, chunk_size: int = DEFAULT_CHUNK,
               observer: StepObserver | None = None, windows: Sequence[tuple[int, int]] = ()) -> TokenScores:
    """Score ``ids`` with the full cache: batched, except one query per forward inside ``windows``.

    Parameters
    ----------
    model : torch.nn.Module
        HF causal LM (eval mode).
    ids : torch.Tensor
        Token ids, shape (T,).
    method : CacheMethod
        Must be the full cache.
    chunk_size : int
        Queries per batched forward.
    observer : StepObserver, optional
        Called after every forward.
    windows : sequence of (start, stop)
        Per-token entries (query indices) ``start <= i < stop`` scored one at a time; windows past the
        sample are clipped or ignored. Without windows this is the batched engine.

    Returns
    -------
    TokenScores
        T - 1 entries, like every engine; which were scored stepwise is the caller's ``windows``.
    """
    if not method.is_full:
        raise UserError(f"the spot engine scores the full cache only, not {method.label()}")
    device = next(model.parameters()).device
    ids = ids.to(device)
    T = ids.numel()
    return score_full_ranges(model, ids, segments(T - 1, windows, chunk_size), progress, observer, "spot",
                             sample_rss=lambda lo, hi: hi - lo > 1 or hi % 64 == 0)
