"""The reference engine: one token per forward, evicting after each step (the seed's loop).

The sinks + recent-window rule runs the loop below; every other policy (head-wise kept sets,
``--compress-every``, quantised K/V) runs :func:`~anomaly_probe.engines.chunked.score_policy` with
one query per forward.

Every other engine is proven equal to this one on per-token NLL. Its single-token forwards run on the
intra-op thread count that measured fastest for them (:mod:`~anomaly_probe.engines.step_threads`);
the count is restored afterwards and recorded in ``TokenScores.extra["threads"]``.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from anomaly_probe.engines.cache_ops import InCacheRotator, check_cache, evict
from anomaly_probe.engines.common import Progress, RssMeter, no_progress, score_logits
from anomaly_probe.engines.layers import model_layout
from anomaly_probe.engines.scores import TokenScores
from anomaly_probe.engines.stepwise_layers import score_stepwise_layered
from anomaly_probe.engines.step_threads import stepwise_threads
from anomaly_probe.methods.base import CacheMethod
from anomaly_probe.step_context import CURRENT_STEP, StepInfo, StepObserver
from anomaly_probe.threads import intra_op_threads

FLUSH_EVERY = 64  # steps between moving scores off the device


def score_stepwise(model: torch.nn.Module, ids: torch.Tensor, method: CacheMethod,
                   progress: Progress = no_progress, observer: StepObserver | None = None,
                   threads: int | None = None) -> TokenScores:
    """Score ``ids`` token by token under ``method``.

    Parameters
    ----------
    model : torch.nn.Module
        HF causal LM (eval mode).
    ids : torch.Tensor
        Token ids of one sample, shape (T,), T >= 2.
    method : CacheMethod
        Cache policy; its position mode decides the RoPE positions (see :mod:`anomaly_probe.methods.base`).
    progress : callable
        Called with the number of tokens scored since the last call.
    observer : StepObserver, optional
        Called after every forward with the step's :class:`StepInfo`, the cache and the step time.
    threads : int, optional
        Intra-op threads for the loop (default: measured, :func:`stepwise_threads`).

    Returns
    -------
    TokenScores
        T - 1 entries.
    """
    device = next(model.parameters()).device
    n = stepwise_threads(model, device) if threads is None else threads
    with intra_op_threads(n):
        scores = _score_stepwise(model, ids, method, progress, observer)
    scores.extra["threads"] = n
    return scores


@torch.no_grad()
def _score_stepwise(model: torch.nn.Module, ids: torch.Tensor, method: CacheMethod, progress: Progress,
                    observer: StepObserver | None) -> TokenScores:
    """The loop of :func:`score_stepwise`."""
    if not method.uses_base_rule and not method.is_full or type(method).quantize is not CacheMethod.quantize:
        from anomaly_probe.engines.chunked import score_policy

        # every other policy (head-wise eviction, --compress-every, quantised K/V): one query per forward
        return score_policy(model, ids, method, 1, progress, observer, engine="stepwise")
    from transformers import DynamicCache

    device = next(model.parameters()).device
    ids = ids.to(device)
    T = ids.numel()
    cache = DynamicCache(config=model.config)
    mode = "absolute" if method.is_full else method.position_mode
    layout = model_layout(model, method)
    if layout.layered_steps(mode):  # sliding/hybrid layers, ALiBi in absolute mode
        return score_stepwise_layered(model, ids, method, layout, progress, observer)
    rotator = None
    if mode == "in-cache" and not layout.alibi:  # ALiBi: the model's slot-based bias is the in-cache one
        rotator = InCacheRotator(layout.schemes[0].rope, model.config.num_hidden_layers)

    rss = RssMeter()
    logits_buf: list[torch.Tensor] = []
    nll_parts, correct_parts = [], []
    qpos = np.zeros(T - 1, dtype=np.int64)
    nkeys = np.zeros(T - 1, dtype=np.int64)
    slots_abs = torch.zeros(0, dtype=torch.long)  # (n_cached,) absolute index of each cache slot
    sink = 0 if method.is_full else method.sink_size
    start = time.perf_counter()
    for t in range(T - 1):
        step_start = time.perf_counter()
        n_cached = cache.get_seq_length()
        pos = t if mode == "absolute" else n_cached  # in-cache and naive: the next slot
        position_ids = None if mode == "naive" else torch.tensor([[pos]], device=device)
        k_abs = torch.cat([slots_abs, torch.tensor([t])])
        info = StepInfo(q_abs=torch.tensor([t]), k_abs=k_abs, q_pos=torch.tensor([pos]),
                        k_pos=method.key_position(torch.tensor(t), k_abs), sink_size=sink)
        token = CURRENT_STEP.set(info)
        try:
            out = model(input_ids=ids[t:t + 1][None], cache=cache, position_ids=position_ids, use_cache=True)
        finally:
            CURRENT_STEP.reset(token)
        if t == 0:
            check_cache(cache)
        logits_buf.append(out.logits[0, -1])  # (V,)
        qpos[t], nkeys[t] = pos, n_cached + 1
        keep = method.keep(n_cached + 1)
        slots_abs = k_abs if keep is None else k_abs[keep]
        if rotator is not None:
            rotator.after_step(cache, pos, keep)
        elif keep is not None:
            evict(cache, keep)
        if observer is not None:
            observer.after_forward(info, cache, time.perf_counter() - step_start)
        if len(logits_buf) == FLUSH_EVERY or t == T - 2:
            lo = t + 1 - len(logits_buf)
            nll, correct = score_logits(torch.stack(logits_buf), ids[lo + 1:t + 2])
            nll_parts.append(nll)
            correct_parts.append(correct)
            progress(len(logits_buf))
            logits_buf.clear()
            rss.sample()
    seconds = time.perf_counter() - start
    return TokenScores(
        nll=torch.cat(nll_parts).numpy(), correct=torch.cat(correct_parts).numpy(), query_pos=qpos,
        n_keys=nkeys, seconds=seconds, peak_rss_bytes=rss.peak, engine="stepwise",
    )
