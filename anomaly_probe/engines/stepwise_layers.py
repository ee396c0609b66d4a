"""The stepwise reference for layered models: one token per forward, each layer group evicted by its rule.

Used by :func:`~anomaly_probe.engines.stepwise.score_stepwise` when the model's layers differ (sliding
windows, hybrid sliding/full layers, ALiBi in ``absolute`` mode; see :mod:`anomaly_probe.engines.layers`).
The cache has plain layers only; after every step each group keeps what its rule keeps (a sliding
group: the last ``window - 1`` tokens, as transformers' own sliding cache does). Since a group's cache
then holds exactly the keys the next query sees, every forward passes an all-visible mask per group
(so transformers builds no slot-based mask of its own) and the shared query position explicitly.
"""

from __future__ import annotations

import time
from contextlib import nullcontext

import numpy as np
import torch

from anomaly_probe.attention.alibi import CURRENT_ALIBI, AlibiStep, alibi_override
from anomaly_probe.attention.hf import plain_cache
from anomaly_probe.engines.common import Progress, RssMeter, no_progress, score_logits
from anomaly_probe.engines.layer_cache import GroupCaches
from anomaly_probe.engines.layers import Layout, group_masks
from anomaly_probe.engines.scores import TokenScores
from anomaly_probe.methods.base import CacheMethod
from anomaly_probe.step_context import CURRENT_STEP, StepInfo, StepObserver


@torch.no_grad()
def score_stepwise_layered(model: torch.nn.Module, ids: torch.Tensor, method: CacheMethod, layout: Layout,
                           progress: Progress = no_progress, observer: StepObserver | None = None) -> TokenScores:
    """Score ``ids`` token by token, each layer group under its own rule (see the module docstring).

    Parameters and return value as :func:`~anomaly_probe.engines.stepwise.score_stepwise`; ``layout`` is
    the model's :class:`~anomaly_probe.engines.layers.Layout` under ``method``.
    """
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    ids = ids.to(device)
    T = ids.numel()
    mode = "absolute" if method.is_full else method.position_mode
    groups = GroupCaches(layout, mode)
    main = next(k for k, g in enumerate(layout.groups) if g.policy)  # the group whose slots probes see
    cache = plain_cache()
    rss = RssMeter()
    nll = np.zeros(T - 1)
    correct = np.zeros(T - 1, dtype=bool)
    qpos = np.zeros(T - 1, dtype=np.int64)
    nkeys = np.zeros(T - 1, dtype=np.int64)
    sink = 0 if method.is_full else method.sink_size
    start = time.perf_counter()
    with alibi_override(model) if layout.alibi else nullcontext():
        for t in range(T - 1):
            step_start = time.perf_counter()
            q_abs = torch.tensor([t])
            pos = q_abs if mode == "absolute" else layout.position_rule.query_position(q_abs)  # (1,)
            keys = groups.keys_before(q_abs)
            visible = [torch.ones(1, k.numel(), dtype=torch.bool) for k in keys]
            info = StepInfo(q_abs=q_abs, k_abs=keys[main], q_pos=pos,
                            k_pos=layout.position_rule.key_position(q_abs, keys[main]), sink_size=sink)
            kwargs = {}
            if layout.alibi:
                alibi = AlibiStep(groups.distances(main, q_abs, keys[main]))
                alibi_token = CURRENT_ALIBI.set(alibi)
            else:
                kwargs["attention_mask"] = group_masks(layout, visible, dtype, device)
                alibi_token = None
            token = CURRENT_STEP.set(info)
            try:
                out = model(input_ids=ids[t:t + 1][None], cache=cache, position_ids=pos.to(device)[None],
                            use_cache=True, **kwargs)
            finally:
                CURRENT_STEP.reset(token)
                if alibi_token is not None:
                    CURRENT_ALIBI.reset(alibi_token)
            qpos[t], nkeys[t] = int(pos), keys[main].numel()
            groups.after_forward(cache, q_abs, pos, t + 1)
            if observer is not None:
                observer.after_forward(info, cache, time.perf_counter() - step_start)
            n, c = score_logits(out.logits[0, -1:], ids[t + 1:t + 2])
            nll[t], correct[t] = float(n), bool(c)
            progress(1)
            if t % 64 == 0:
                rss.sample()
    seconds = time.perf_counter() - start
    return TokenScores(nll=nll, correct=correct, query_pos=qpos, n_keys=nkeys, seconds=seconds,
                       peak_rss_bytes=rss.peak, engine="stepwise")
