"""The parallel engine for layered models: per-group caches, masks and attention plans in one forward.

Used by :func:`~anomaly_probe.engines.parallel.score_parallel` when the model's layers differ (sliding
windows, hybrid sliding/full layers, ALiBi; see :mod:`anomaly_probe.engines.layers`). Each layer group
keeps its own cached tokens (evicted to what the stepwise engine holds after the chunk's last query),
its own (Tq, Tk_g) ``visible`` mask (a sliding group: its window; a full group: the method) and, in
``in-cache`` mode, its own :class:`~anomaly_probe.engines.chunk_frames.ChunkFrames` with the group's
rotary embedding. RoPE models run :func:`~anomaly_probe.engines.parallel_attention.parallel_attention`
with one :class:`~anomaly_probe.engines.parallel_attention.AttentionPlan` per layer and a mask per layer
type; ALiBi models (BLOOM) run their own attention with the engine's mask and distances handed to each
block (:mod:`anomaly_probe.attention.alibi`).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from anomaly_probe.attention.alibi import CURRENT_ALIBI, AlibiStep, alibi_override
from anomaly_probe.attention.hf import plain_cache
from anomaly_probe.engines.cache_ops import evict
from anomaly_probe.engines.chunk_frames import ChunkFrames
from anomaly_probe.engines.common import Progress, RssMeter, no_progress, score_logits
from anomaly_probe.engines.layer_cache import GroupCaches
from anomaly_probe.engines.layers import CacheView, Layout, group_masks, keep_for_next
from anomaly_probe.engines.parallel_attention import CURRENT_PLAN, AttentionPlan, parallel_attention_enabled
from anomaly_probe.engines.scores import TokenScores
from anomaly_probe.methods.base import CacheMethod
from anomaly_probe.step_context import CURRENT_STEP, StepInfo, StepObserver


@torch.no_grad()
def score_parallel_layered(model: torch.nn.Module, ids: torch.Tensor, method: CacheMethod, layout: Layout,
                           progress: Progress = no_progress, observer: StepObserver | None = None,
                           chunk_size: int = 128, block_size: int = 128, banded: bool = True) -> TokenScores:
    """Score ``ids`` in chunked forwards, each layer group under its own rule; equals the stepwise engine.

    Parameters and return value as :func:`~anomaly_probe.engines.parallel.score_parallel`; ``layout`` is
    the model's :class:`~anomaly_probe.engines.layers.Layout` under ``method``.
    """
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    ids = ids.to(device)
    T = ids.numel()
    mode = "absolute" if method.is_full else method.position_mode
    cap = method.capacity
    pr = layout.position_rule
    rope_frames = mode == "in-cache" and not layout.alibi
    groups = GroupCaches(layout, mode)
    frames = [ChunkFrames(g.scheme.rope, len(g.layers), g.rule.sink_size) if rope_frames else None
              for g in layout.groups]
    main = next(k for k, g in enumerate(layout.groups) if g.policy)
    cache = plain_cache()
    rss = RssMeter()
    nll_parts, correct_parts, qpos_parts, nkeys_parts = [], [], [], []
    start = time.perf_counter()
    scope = alibi_override(model) if layout.alibi else parallel_attention_enabled(model)
    with scope:
        for lo in range(0, T - 1, chunk_size):
            hi = min(lo + chunk_size, T - 1)
            step_start = time.perf_counter()
            q_abs = torch.arange(lo, hi)
            q_pos = q_abs if mode == "absolute" else pr.query_position(q_abs)  # (Tq,) shared query position
            shift = max(0, lo - cap) if rope_frames else 0
            model_pos = q_abs - shift if rope_frames else q_pos
            keys = groups.keys_before(q_abs)
            visible = [g.rule.visible(q_abs, k) for g, k in zip(layout.groups, keys)]  # (Tq, Tk_g) each
            info = StepInfo(q_abs=q_abs, k_abs=keys[main], q_pos=q_pos,
                            k_pos=None if rope_frames else pr.key_position(keys[main][-1], keys[main]),
                            sink_size=0 if method.is_full else method.sink_size, visible=visible[main])
            kwargs, tokens = {}, []
            if layout.alibi:
                additive = group_masks(layout, visible, dtype, device)
                tokens.append((CURRENT_ALIBI, CURRENT_ALIBI.set(
                    AlibiStep(groups.distances(main, q_abs, keys[main]), additive))))
            else:
                plans = {}
                for k, g in enumerate(layout.groups):
                    sink = g.rule.sink_size
                    n_sink_cols = int((keys[k] < sink).sum())
                    sink_shift = None
                    if rope_frames and n_sink_cols:
                        sink_shift = g.rule.query_position(q_abs) - model_pos  # (Tq,)
                    plan = AttentionPlan.build(visible[k], block_size, n_sink_cols, sink_shift,
                                               g.scheme.rope, banded)
                    plan.windowed = g.window is not None
                    plans.update({i: plan for i in g.layers})
                tokens.append((CURRENT_PLAN, CURRENT_PLAN.set(plans)))
                kwargs["attention_mask"] = group_masks(layout, visible, dtype, device, boolean=True)
                for k, f in enumerate(frames):
                    if f is not None:
                        f.enter(CacheView(cache, layout.groups[k].layers), shift)
            tokens.append((CURRENT_STEP, CURRENT_STEP.set(info)))
            try:
                out = model(input_ids=ids[lo:hi][None], cache=cache, position_ids=model_pos.to(device)[None],
                            use_cache=True, **kwargs)
            finally:
                for var, token in reversed(tokens):
                    var.reset(token)
            for k, g in enumerate(layout.groups):
                keep = keep_for_next(g.rule, keys[k], hi)
                groups.slots[k] = keys[k] if keep is None else keys[k][keep]
                view = CacheView(cache, g.layers)
                if frames[k] is not None:
                    frames[k].after_forward(view, shift, q_abs, keep)
                elif keep is not None:
                    evict(view, keep)
            if observer is not None:
                observer.after_forward(info, cache, time.perf_counter() - step_start)
            nll, correct = score_logits(out.logits[0], ids[lo + 1:hi + 1])
            del out
            nll_parts.append(nll)
            correct_parts.append(correct)
            qpos_parts.append(q_pos)
            nkeys_parts.append(visible[main].sum(dim=1))
            progress(hi - lo)
            rss.sample()
    seconds = time.perf_counter() - start
    return TokenScores(
        nll=torch.cat(nll_parts).numpy(), correct=torch.cat(correct_parts).numpy(),
        query_pos=torch.cat(qpos_parts).numpy().astype(np.int64), n_keys=torch.cat(nkeys_parts).numpy().astype(np.int64),
        seconds=seconds, peak_rss_bytes=rss.peak, engine="parallel",
    )
