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

import time
from typing import Sequence

import numpy as np
import torch

from anomaly_probe.config import DEFAULT_CHUNK
from anomaly_probe.engines.common import Progress, RssMeter, no_progress, score_logits
from anomaly_probe.engines.scores import TokenScores
from anomaly_probe.errors import UserError
from anomaly_probe.methods.base import CacheMethod
from anomaly_probe.step_context import CURRENT_STEP, StepInfo, StepObserver


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
    from transformers import DynamicCache

    if not method.is_full:
        raise UserError(f"the spot engine scores the full cache only, not {method.label()}")
    device = next(model.parameters()).device
    ids = ids.to(device)
    T = ids.numel()
    cache = DynamicCache(config=model.config)
    rss = RssMeter()
    nll_parts, correct_parts = [], []
    start = time.perf_counter()
    for lo, hi in segments(T - 1, windows, chunk_size):  # queries lo..hi-1 predict lo+1..hi
        step_start = time.perf_counter()
        q = torch.arange(lo, hi)
        info = StepInfo(q_abs=q, k_abs=torch.arange(hi), q_pos=q, k_pos=torch.arange(hi), sink_size=0)
        token = CURRENT_STEP.set(info)
        try:
            out = model(input_ids=ids[lo:hi][None], cache=cache, position_ids=q.to(device)[None], use_cache=True)
        finally:
            CURRENT_STEP.reset(token)
        if observer is not None:
            observer.after_forward(info, cache, time.perf_counter() - step_start)
        nll, correct = score_logits(out.logits[0], ids[lo + 1:hi + 1])
        nll_parts.append(nll)
        correct_parts.append(correct)
        progress(hi - lo)
        if hi - lo > 1 or hi % 64 == 0:
            rss.sample()
    seconds = time.perf_counter() - start
    pos = np.arange(T - 1, dtype=np.int64)
    return TokenScores(
        nll=torch.cat(nll_parts).numpy(), correct=torch.cat(correct_parts).numpy(), query_pos=pos,
        n_keys=pos + 1, seconds=seconds, peak_rss_bytes=rss.peak, engine="spot",
    )
