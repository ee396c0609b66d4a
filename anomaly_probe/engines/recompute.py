"""The recompute engine: one cache-free forward per window (see :mod:`anomaly_probe.methods.recompute`).

Window ``k`` covers tokens ``[k * stride, k * stride + window)`` (cut at the sample's end) at positions
``0..window-1`` and scores the queries no earlier window scored: all of the first window, then the
last ``stride``. Logits are computed only for the scored queries (``logits_to_keep``). The model's own
attention implementation runs with its plain causal mask.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from anomaly_probe.engines.common import Progress, RssMeter, no_progress, score_logits
from anomaly_probe.engines.scores import TokenScores
from anomaly_probe.engines.step_context import CURRENT_STEP, StepInfo, StepObserver
from anomaly_probe.errors import UserError
from anomaly_probe.methods.base import CacheMethod
from anomaly_probe.methods.recompute import RecomputeOracle


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
                    progress: Progress = no_progress, observer: StepObserver | None = None) -> TokenScores:
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
        Called after every forward (one per window). The published :class:`StepInfo` lists every query
        of the window (the attention sees them all); only the last ``end - first_scored`` are scored.

    Returns
    -------
    TokenScores
        T - 1 entries; ``query_pos`` is the query's slot in its window.
    """
    if not isinstance(method, RecomputeOracle):
        raise UserError(f"the recompute engine scores the recompute oracle only, not {method.label()}")
    device = next(model.parameters()).device
    ids = ids.to(device)
    n_q = ids.numel() - 1
    rss = RssMeter()
    nll_parts, correct_parts = [], []
    start = time.perf_counter()
    for begin, end, first in windows(n_q, method.window, method.stride):
        step_start = time.perf_counter()
        k_abs = torch.arange(begin, end)
        pos = k_abs - begin  # (W',) slots 0..W'-1
        info = StepInfo(q_abs=k_abs, k_abs=k_abs, q_pos=pos, k_pos=pos, sink_size=0)
        token = CURRENT_STEP.set(info)
        try:
            out = model(input_ids=ids[begin:end][None], position_ids=pos.to(device)[None], use_cache=False,
                        logits_to_keep=end - first)
        finally:
            CURRENT_STEP.reset(token)
        if observer is not None:
            observer.after_forward(info, None, time.perf_counter() - step_start)
        nll, correct = score_logits(out.logits[0, -(end - first):], ids[first + 1:end + 1])
        del out
        nll_parts.append(nll)
        correct_parts.append(correct)
        progress(end - first)
        rss.sample()
    seconds = time.perf_counter() - start
    qpos = method.query_position(torch.arange(n_q)).numpy().astype(np.int64)
    return TokenScores(
        nll=torch.cat(nll_parts).numpy(), correct=torch.cat(correct_parts).numpy(), query_pos=qpos,
        n_keys=qpos + 1, seconds=seconds, peak_rss_bytes=rss.peak, engine="recompute",
    )
