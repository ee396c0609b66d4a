"""Batched scoring of the full cache: the standard perplexity computation.

The sample goes through the model in chunks of ``chunk_size`` queries that attend to everything before
them (a growing ``DynamicCache``); mathematically this is one forward over the whole sample, but the
logits (T x vocab) and the attention scores never exist for all T at once. The model's attention runs
through :func:`~anomaly_probe.attention.finite_guard.finite_guard`, so a non-finite key shows up at
its own token, as in the stepwise engine, never at the earlier queries of its chunk.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from anomaly_probe.config import DEFAULT_CHUNK
from anomaly_probe.engines.common import Progress, RssMeter, no_progress, score_logits
from anomaly_probe.engines.scores import TokenScores
from anomaly_probe.errors import UserError
from anomaly_probe.methods.base import CacheMethod
from anomaly_probe.step_context import CURRENT_STEP, StepInfo, StepObserver


@torch.no_grad()
def score_batched(model: torch.nn.Module, ids: torch.Tensor, method: CacheMethod,
                  progress: Progress = no_progress, chunk_size: int = DEFAULT_CHUNK,
                  observer: StepObserver | None = None) -> TokenScores:
    """Score ``ids`` with the full cache in chunked forwards.

    Parameters
    ----------
    model : torch.nn.Module
        HF causal LM (eval mode).
    ids : torch.Tensor
        Token ids, shape (T,).
    method : CacheMethod
        Must be the full cache.
    chunk_size : int
        Queries per forward.
    observer : StepObserver, optional
        Called after every forward (one per chunk).
    """
    if not method.is_full:
        raise UserError(f"the batched engine scores the full cache only, not {method.label()}; "
                        "use --engine stepwise or auto")
    device = next(model.parameters()).device
    ids = ids.to(device)
    T = ids.numel()
    ranges = [(lo, min(lo + chunk_size, T - 1)) for lo in range(0, T - 1, chunk_size)]
    return score_full_ranges(model, ids, ranges, progress, observer, "batched")


def score_full_ranges(model: torch.nn.Module, ids: torch.Tensor, ranges, progress: Progress,
                      observer: StepObserver | None, engine: str, sample_rss=lambda lo, hi: True) -> TokenScores:
    """The full cache, one forward per query range ``(lo, hi)`` (queries lo..hi-1 predict lo+1..hi), in
    order and covering ``0..T-2``: the loop of the batched engine and of the spot engine (whose ranges
    hold one query each inside its windows). ``sample_rss(lo, hi)`` says when to read the RSS."""
    from anomaly_probe.attention.finite_guard import finite_guard

    with finite_guard(model):
        return _score_full_ranges(model, ids, ranges, progress, observer, engine, sample_rss)


def _score_full_ranges(model, ids, ranges, progress, observer, engine, sample_rss) -> TokenScores:
    """The loop of :func:`score_full_ranges` (same arguments)."""
    from transformers import DynamicCache

    device = ids.device
    T = ids.numel()
    cache = DynamicCache(config=model.config)
    rss = RssMeter()
    nll_parts, correct_parts = [], []
    start = time.perf_counter()
    for lo, hi in ranges:
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
        if sample_rss(lo, hi):
            rss.sample()
    seconds = time.perf_counter() - start
    pos = np.arange(T - 1, dtype=np.int64)
    return TokenScores(
        nll=torch.cat(nll_parts).numpy(), correct=torch.cat(correct_parts).numpy(), query_pos=pos,
        n_keys=pos + 1, seconds=seconds, peak_rss_bytes=rss.peak, engine=engine,
    )
