"""Exact block-parallel scoring of bounded caches: many queries per forward, same NLL as stepwise.

Chunk ``[lo, hi)`` goes through the model in one forward. The ``DynamicCache`` holds what the stepwise
engine holds before step ``lo`` (the sinks and the last ``recent_size`` tokens), the chunk's keys are
appended, and a (Tq, Tk) mask from :meth:`CacheMethod.visible` lets query ``t`` see exactly its own
stepwise cache. After the forward the cache is evicted to what stepwise holds after step ``hi - 1``.

Positions per mode (all exact; see :mod:`anomaly_probe.methods.base`):

* ``absolute`` (and the full cache): true positions, as the stepwise engine gives them.
* ``naive``: every token, query and key, at ``min(j, capacity)``, which is where transformers puts it
  when it derives positions from the cache length; no key is ever moved.
* ``in-cache``: recent keys keep the distance ``t - j``, so a common per-chunk frame works
  (:class:`~anomaly_probe.engines.chunk_frames.ChunkFrames`); the sink columns use the query rotated
  to ``min(t, capacity)`` (:mod:`anomaly_probe.engines.parallel_attention`).

A method is scored here only if it uses the base class's eviction and position rules
(:func:`parallel_support`); anything else goes to the stepwise engine.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from anomaly_probe.config import DEFAULT_CHUNK
from anomaly_probe.engines.cache_ops import check_cache, evict
from anomaly_probe.engines.chunk_frames import ChunkFrames
from anomaly_probe.engines.common import Progress, RssMeter, no_progress, score_logits
from anomaly_probe.engines.layers import model_layout
from anomaly_probe.engines.parallel_layers import score_parallel_layered
from anomaly_probe.engines.parallel_attention import CURRENT_PLAN, AttentionPlan, parallel_attention_enabled
from anomaly_probe.engines.scores import TokenScores
from anomaly_probe.errors import UserError
from anomaly_probe.methods.base import CacheMethod
from anomaly_probe.step_context import CURRENT_STEP, StepInfo, StepObserver

DEFAULT_BLOCK = 128  # query rows per attention block: the largest score tile is H x 128 x (sinks+recent+128)

_RULES = ("keep", "visible", "query_position", "key_position")


def parallel_support(method: CacheMethod) -> str | None:
    """``None`` when the parallel engine is exact for ``method``, else the reason it is not."""
    overridden = [name for name in _RULES if getattr(type(method), name) is not getattr(CacheMethod, name)]
    if overridden:
        return (f"{method.label()} overrides {', '.join(overridden)}; the parallel engine is exact only for "
                "the sinks + recent-window rule of CacheMethod")
    if not method.uses_base_rule:
        why = [w for w, cond in (
            ("chooses the kept keys per head by its own rule", type(method).keep_heads is not CacheMethod.keep_heads),
            ("reads attention weights", method.needs_attention),
            ("rounds its stored K/V", type(method).quantize is not CacheMethod.quantize),
            (f"evicts every {method.compress_every} tokens", method.compress_every != 1)) if cond]
        return (f"{method.label()} {' and '.join(why) or 'is not the plain sinks + recent rule'}; the parallel engine "
                "is exact only for the sinks + recent-window rule applied after every token")
    return None


@torch.no_grad()
def score_parallel(model: torch.nn.Module, ids: torch.Tensor, method: CacheMethod,
                   progress: Progress = no_progress, observer: StepObserver | None = None,
                   chunk_size: int = DEFAULT_CHUNK, block_size: int = DEFAULT_BLOCK, banded: bool = True) -> TokenScores:
    """Score ``ids`` under ``method`` in chunked forwards; per-token NLL equals the stepwise engine's.

    Parameters
    ----------
    model : torch.nn.Module
        HF causal LM (eval mode) whose attention goes through ``AttentionInterface``.
    ids : torch.Tensor
        Token ids of one sample, shape (T,), T >= 2.
    method : CacheMethod
        Full, window or StreamingLLM cache, any position mode.
    progress : callable
        Called with the number of tokens scored after each forward.
    observer : StepObserver, optional
        Called after every forward (one per chunk), after eviction.
    chunk_size : int
        Queries per forward.
    block_size : int
        Query rows per attention block (bounds the score tile; does not change results).
    banded : bool
        Use the banded fast path where the mask allows it; ``False``: the readable block loop.

    Returns
    -------
    TokenScores
        T - 1 entries.
    """
    from transformers import DynamicCache

    reason = parallel_support(method)
    if reason is not None:
        raise UserError(f"--engine parallel: {reason}; use --engine stepwise or auto")
    if chunk_size < 1 or block_size < 1:
        raise UserError(f"chunk size and block size must be >= 1 (got {chunk_size} and {block_size})")
    device = next(model.parameters()).device
    ids = ids.to(device)
    T = ids.numel()
    cache = DynamicCache(config=model.config)
    mode = "absolute" if method.is_full else method.position_mode
    layout = model_layout(model, method)
    if not layout.uniform:  # sliding/hybrid layers, ALiBi
        return score_parallel_layered(model, ids, method, layout, progress, observer, chunk_size, block_size, banded)
    cap = method.capacity
    sink = 0 if method.is_full else method.sink_size
    frames = rope = None
    if mode == "in-cache":
        rope = layout.schemes[0].rope
        frames = ChunkFrames(rope, model.config.num_hidden_layers, sink)

    rss = RssMeter()
    nll_parts, correct_parts, qpos_parts, nkeys_parts = [], [], [], []
    slots_abs = torch.zeros(0, dtype=torch.long)  # (n_cached,) absolute index of each cache slot
    start = time.perf_counter()
    with parallel_attention_enabled(model):
        for lo in range(0, T - 1, chunk_size):
            hi = min(lo + chunk_size, T - 1)  # queries lo..hi-1 predict lo+1..hi
            step_start = time.perf_counter()
            q_abs = torch.arange(lo, hi)
            k_abs = torch.cat([slots_abs, q_abs])  # (Tk,) sorted: sinks, recent, chunk
            visible = method.visible(q_abs, k_abs)  # (Tq, Tk)
            q_pos = method.query_position(q_abs)  # (Tq,) the method's RoPE position of each query
            n_sink_cols = int((k_abs < sink).sum())
            shift, sink_shift, k_pos = 0, None, None
            if mode == "in-cache":
                shift = max(0, lo - cap)
                frames.enter(cache, shift)
                model_pos = q_abs - shift  # (Tq,) frame positions the model rotates with
                sink_shift = q_pos - model_pos if n_sink_cols else None
            else:
                model_pos = q_pos  # absolute: t; naive: min(t, capacity)
                k_pos = method.key_position(k_abs[-1], k_abs)  # independent of the query in these modes
            plan = AttentionPlan.build(visible, block_size, n_sink_cols, sink_shift, rope, banded)
            info = StepInfo(q_abs=q_abs, k_abs=k_abs, q_pos=q_pos, k_pos=k_pos, sink_size=sink, visible=visible)
            step_token, plan_token = CURRENT_STEP.set(info), CURRENT_PLAN.set(plan)
            try:
                out = model(input_ids=ids[lo:hi][None], cache=cache, position_ids=model_pos.to(device)[None],
                            attention_mask=visible.to(device)[None, None], use_cache=True)
            finally:
                CURRENT_PLAN.reset(plan_token)
                CURRENT_STEP.reset(step_token)
            if lo == 0:
                check_cache(cache)
            keep = method.keep(k_abs.numel())
            slots_abs = k_abs if keep is None else k_abs[keep]
            if frames is not None:
                frames.after_forward(cache, shift, q_abs, keep)
            elif keep is not None:
                evict(cache, keep)
            if observer is not None:
                observer.after_forward(info, cache, time.perf_counter() - step_start)
            nll, correct = score_logits(out.logits[0], ids[lo + 1:hi + 1])
            del out
            nll_parts.append(nll)
            correct_parts.append(correct)
            qpos_parts.append(q_pos)
            nkeys_parts.append(visible.sum(dim=1))
            progress(hi - lo)
            rss.sample()
    seconds = time.perf_counter() - start
    return TokenScores(
        nll=torch.cat(nll_parts).numpy(), correct=torch.cat(correct_parts).numpy(),
        query_pos=torch.cat(qpos_parts).numpy().astype(np.int64), n_keys=torch.cat(nkeys_parts).numpy().astype(np.int64),
        seconds=seconds, peak_rss_bytes=rss.peak, engine="parallel",
    )
