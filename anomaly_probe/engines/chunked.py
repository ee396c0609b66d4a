"""The policy engine: any KV-cache policy, ``q`` queries per forward, evicting every ``compress_every`` tokens.

With ``q = 1`` this is the stepwise reference for every policy that is not the plain sinks + recent
rule (:func:`~anomaly_probe.engines.stepwise.score_stepwise` delegates here). The ``chunked`` engine
runs the same loop with ``q = gcd(compress_every, group_size)`` (``group_size`` only for a quantised
cache): no eviction and no quantisation falls inside a forward, and query ``t`` of a chunk sees the
cache as it stood after the last eviction plus the chunk's tokens up to ``t``, which is exactly what
the stepwise loop with the same ``compress_every`` shows it. So both give the same NLL per token, up to
float rounding noise (different matmul shapes).

The contract, for policies whose decisions are discontinuous (a top-k cut, rounding to int4/int8
levels): a number within that noise of a boundary flips the decision, and from there the caches differ
(SmolLM2, kv_quant int4, float32: one key level apart after token 31, NLLs 0.33 nats apart later). So
the engines are equal within 1e-4 nats (float32) on every token before the first decision difference,
and on all tokens in float64 (the same model cast to float64, where no decision flips);
:func:`~anomaly_probe.engines.chunked_equality.chunked_equality` checks exactly that, with a
:class:`~anomaly_probe.engines.decision_trace.DecisionTrace` (``trace``) naming the first differing
decision.

Positions per mode: ``absolute``: query ``t`` at ``t``; ``in-cache``: at its slot ``n_cached + i``
(keys re-rotated to their slot in their head after every eviction); ``naive``: no position ids, so
transformers derives them from the cache length. Attention runs through
:func:`~anomaly_probe.engines.policy_attention.capture_attention` whenever the cache evicts (the
policy may read the weights, and the attention-loss probe does).
"""

from __future__ import annotations

import contextlib
import math
import time

import numpy as np
import torch

from anomaly_probe.errors import UserError

from anomaly_probe.engines.cache_ops import check_cache
from anomaly_probe.engines.common import Progress, RssMeter, no_progress, score_logits
from anomaly_probe.engines.decision_trace import DecisionTrace
from anomaly_probe.engines.policy_attention import CAPTURE, policy_attention_enabled
from anomaly_probe.engines.policy_cache import PolicyCache
from anomaly_probe.engines.scores import TokenScores
from anomaly_probe.methods.base import CacheMethod
from anomaly_probe.step_context import CURRENT_STEP, StepInfo, StepObserver


def chunk_queries(method: CacheMethod) -> int:
    """Queries per forward the chunked engine may use for ``method``: gcd of its eviction interval and,
    for a quantised cache, its group size (1 for a full cache without either would be pointless)."""
    group = getattr(method, "group_size", None) if type(method).quantize is not CacheMethod.quantize else None
    every = method.compress_every if method.capacity is not None else None
    parts = [p for p in (every, group) if p is not None]
    return math.gcd(*parts) if parts else 1


@torch.no_grad()
def score_policy(model: torch.nn.Module, ids: torch.Tensor, method: CacheMethod, queries: int,
                 progress: Progress = no_progress, observer: StepObserver | None = None,
                 engine: str = "chunked", trace: DecisionTrace | None = None) -> TokenScores:
    """Score ``ids`` under ``method`` with ``queries`` tokens per forward.

    Parameters
    ----------
    model : torch.nn.Module
        HF causal LM (eval mode).
    ids : torch.Tensor
        Token ids of one sample, shape (T,), T >= 2.
    method : CacheMethod
        Any policy.
    queries : int
        Tokens per forward; must divide ``compress_every`` (and the quantisation group) to be exact.
    engine : str
        Name recorded in the scores.
    trace : DecisionTrace, optional
        Filled with every decision the policy takes (for :mod:`anomaly_probe.engines.chunked_equality`).

    Returns
    -------
    TokenScores
        T - 1 entries; ``extra["arrays"]`` holds the per-eviction probe arrays
        (:meth:`~anomaly_probe.engines.policy_cache.PolicyCache.probe_arrays`).
    """
    from transformers import DynamicCache

    from anomaly_probe.engines.layers import model_layout

    if not model_layout(model, method).uniform:
        raise UserError(f"{method.label()}: the policy engines need a model whose layers all attend fully with RoPE "
                        "(Llama, Qwen, GPT-NeoX families); this model has sliding-window or ALiBi layers, which only "
                        "the streaming_llm, window and full methods support so far")
    device = next(model.parameters()).device
    ids = ids.to(device)
    T = ids.numel()
    cache = DynamicCache(config=model.config)
    mode = "absolute" if method.capacity is None else method.position_mode
    rope = None
    if mode == "in-cache":
        from anomaly_probe.models.rope import find_rope

        rope = find_rope(model)
    state = PolicyCache(method, mode, rope, model.config.num_hidden_layers, trace)
    evicts = method.capacity is not None
    rss = RssMeter()
    nll_parts, correct_parts, qpos_parts, nkeys_parts = [], [], [], []
    sink = method.sink_size
    start = time.perf_counter()
    with policy_attention_enabled(model) if evicts else contextlib.nullcontext():
        for lo in range(0, T - 1, queries):
            hi = min(lo + queries, T - 1)  # queries lo..hi-1 predict lo+1..hi
            step_start = time.perf_counter()
            n_cached = cache.get_seq_length()
            q_abs = torch.arange(lo, hi)  # (Tq,)
            q_pos = q_abs if mode == "absolute" else n_cached + torch.arange(hi - lo)  # (Tq,)
            position_ids = None if mode == "naive" else q_pos.to(device)[None]
            info = StepInfo(q_abs=q_abs, k_abs=torch.cat([state.head_positions(), q_abs]), q_pos=q_pos,
                            k_pos=None, sink_size=sink)
            step_token = CURRENT_STEP.set(info)
            capture_token = CAPTURE.set(state.capture if evicts else None)
            try:
                out = model(input_ids=ids[lo:hi][None], cache=cache, position_ids=position_ids, use_cache=True)
            finally:
                CAPTURE.reset(capture_token)
                CURRENT_STEP.reset(step_token)
            if lo == 0:
                check_cache(cache)
            state.after_forward(cache, q_abs, q_pos)
            if observer is not None:
                observer.after_forward(info, cache, time.perf_counter() - step_start)
            nll, correct = score_logits(out.logits[0], ids[lo + 1:hi + 1])
            del out
            nll_parts.append(nll)
            correct_parts.append(correct)
            qpos_parts.append(q_pos)
            nkeys_parts.append(n_cached + torch.arange(1, hi - lo + 1))
            progress(hi - lo)
            if len(nll_parts) % 64 == 0:
                rss.sample()
    rss.sample()
    seconds = time.perf_counter() - start
    return TokenScores(
        nll=torch.cat(nll_parts).numpy(), correct=torch.cat(correct_parts).numpy(),
        query_pos=torch.cat(qpos_parts).numpy().astype(np.int64),
        n_keys=torch.cat(nkeys_parts).numpy().astype(np.int64), seconds=seconds, peak_rss_bytes=rss.peak,
        engine=engine, extra={"arrays": state.probe_arrays()},
    )


def score_chunked(model: torch.nn.Module, ids: torch.Tensor, method: CacheMethod, progress: Progress = no_progress,
                  observer: StepObserver | None = None) -> TokenScores:
    """The ``chunked`` engine: :func:`score_policy` with :func:`chunk_queries` tokens per forward."""
    return score_policy(model, ids, method, chunk_queries(method), progress, observer, engine="chunked")
