"""The recompute engine: every window computed afresh (see :mod:`anomaly_probe.methods.recompute`).

Window ``k`` covers tokens ``[k * stride, k * stride + window)`` (cut at the sample's end) at positions
``0..window-1`` and scores the queries no earlier window scored: all of the first window, then the
last ``stride``. Nothing is carried from one window to the next. Within a window the tokens go through
the model in chunks of at most ``chunk_size`` through a cache that lives for that window only --
mathematically one causal forward, but the logits (queries x vocabulary) never exist for a whole
8k-token window at once; logits are computed only for scored queries (``logits_to_keep``). The model's
own attention implementation runs with its plain causal mask, through
:func:`~anomaly_probe.attention.finite_guard.finite_guard` (a non-finite key never reaches the earlier
queries of its chunk).
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
from anomaly_probe.methods.recompute import RecomputeOracle
from anomaly_probe.step_context import CURRENT_STEP, StepInfo, StepObserver


def windows(n_queries: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """``(begin, end, first_scored)`` per forward: tokens ``[begin, end)``, queries ``[first_scored, end)``.

    Parameters
    ----------
    n_queries : int
        Queries to score (sample length - 1).
    """
    out = [(0, min(window, n_queries), 0)]
    k = 1
    while out[-1][1] < n_queries:
        begin = k * stride
        out.append((begin, min(begin + window, n_queries), out[-1][1]))
        k += 1
    return out


@torch.no_grad()
def score_recompute(model: torch.nn.Module, ids: torch.Tensor, method: CacheMethod,
                    progress: Progress = no_progress, observer: StepObserver | None = None,
                    chunk_size: int = DEFAULT_CHUNK) -> TokenScores:
    """Score ``ids`` with strided sliding-window recomputation.

    Parameters
    ----------
    model : torch.nn.Module
        HF causal LM (eval mode).
    ids : torch.Tensor
        Token ids of one sample, shape (T,), T >= 2.
    method : RecomputeOracle
        Window and stride.
    progress : callable
        Called with the number of tokens scored after each forward.
    observer : StepObserver, optional
        Called after every forward (one per chunk of a window). The published :class:`StepInfo` lists
        every query of the forward (the attention sees them all), scored or not.
    chunk_size : int
        Queries per forward within a window.

    Returns
    -------
    TokenScores
        T - 1 entries; ``query_pos`` is the query's slot in its window.
    """
    from anomaly_probe.attention.finite_guard import finite_guard

    if not isinstance(method, RecomputeOracle):
        raise UserError(f"the recompute engine scores the recompute oracle only, not {method.label()}")
    if chunk_size < 1:
        raise UserError(f"chunk size must be >= 1 (got {chunk_size})")
    with finite_guard(model):
        return _score_windows(model, ids, method, progress, observer, chunk_size)


def _score_windows(model, ids, method, progress, observer, chunk_size) -> TokenScores:
    """The window loop of :func:`score_recompute` (same arguments)."""
    from transformers import DynamicCache

    device = next(model.parameters()).device
    ids = ids.to(device)
    n_q = ids.numel() - 1
    rss = RssMeter()
    nll_parts, correct_parts = [], []
    start = time.perf_counter()
    for begin, end, first in windows(n_q, method.window, method.stride):
        cache = DynamicCache(config=model.config)  # this window's only
        for lo in range(begin, end, chunk_size):
            hi = min(lo + chunk_size, end)
            n_scored = max(0, hi - max(lo, first))  # scored queries are a suffix of the window
            step_start = time.perf_counter()
            q_abs = torch.arange(lo, hi)
            info = StepInfo(q_abs=q_abs, k_abs=torch.arange(begin, hi), q_pos=q_abs - begin,
                            k_pos=torch.arange(hi - begin), sink_size=0)
            token = CURRENT_STEP.set(info)
            try:
                out = model(input_ids=ids[lo:hi][None], cache=cache, position_ids=(q_abs - begin).to(device)[None],
                            use_cache=True, logits_to_keep=max(n_scored, 1))  # 0 would mean "all"
            finally:
                CURRENT_STEP.reset(token)
            if observer is not None:
                observer.after_forward(info, cache, time.perf_counter() - step_start)
            if n_scored > 0:
                nll, correct = score_logits(out.logits[0, -n_scored:], ids[hi - n_scored + 1:hi + 1])
                nll_parts.append(nll)
                correct_parts.append(correct)
                progress(n_scored)
            del out
            rss.sample()
        del cache
    seconds = time.perf_counter() - start
    qpos = method.query_position(torch.arange(n_q)).numpy().astype(np.int64)
    return TokenScores(
        nll=torch.cat(nll_parts).numpy(), correct=torch.cat(correct_parts).numpy(), query_pos=qpos,
        n_keys=qpos + 1, seconds=seconds, peak_rss_bytes=rss.peak, engine="recompute",
    )
