"""Attention statistics from the fused kernel's own tensors: no second pass over the keys.

The fused attention (:mod:`anomaly_probe.attention.fused`) hands the probe, per query chunk, the scaled
scores ``s`` and the weights ``p = softmax(s)``. Every metric of
:data:`~anomaly_probe.probes.attention_stats.ATTN_METRICS` follows from them in a few passes:

* ``logit_max`` = ``max s``; ``logit_min`` a masked minimum over the few partially visible columns and a
  plain one over the rest;
* entropy = logsumexp(s) - sum(p * s), with logsumexp(s) = ``max s - log(max p)`` (the largest weight
  is ``exp(0) / Z``): one multiply-add pass, no per-element log;
* fp16 underflow: a weight rounds to 0 in float16 when it is at most 2^-25 (ties to even). The count
  of weights at or above the bound (a comparison summed as bytes) and ``sum(min(p, 2^-25))`` give the
  lost count (hidden keys, weight 0, subtracted) and the lost mass ``sum(min(p, b)) - b * n_above``.
  Only chunks with a row whose smallest weight is that small pay for it; bf16 (2^-134) the same way,
  where a weight is that small;
* sink mass: the few sink columns summed; mean distance: one matrix-vector product of ``p`` with the
  keys' distances (as in :func:`~anomaly_probe.probes.attention_stats.fused_stats`);
* recent mass: ``p`` summed over each row's last ``recent`` tokens (a band of columns).

Rows that need the exact definitions (non-finite or beyond-float16 logits, rows without a visible key)
are recomputed by :func:`~anomaly_probe.probes.attention_stats.row_stats`; they are few.
"""

from __future__ import annotations

import math

import torch

from anomaly_probe.attention.fused import HIDDEN, ScoredChunk
from anomaly_probe.probes import row_kernel
from anomaly_probe.probes.attention_stats import ATTN_METRICS, FP16_MAX, _RowGather, row_stats

BOUNDS = {"fp16": 2.0 ** -25, "bf16": 2.0 ** -134}
"""Largest float32 weight each format rounds to 0 (round to nearest, ties to even)."""
TINY = 2.0 ** -126  # smallest normal float32: below it a visible weight may be exactly 0


def _rows(t: torch.Tensor | None, select: torch.Tensor | None) -> torch.Tensor | None:
    """Rows ``select`` of axis 2 of ``t`` (a broadcast axis of size 1 is kept)."""
    if t is None or select is None or t.shape[2] == 1:
        return t
    return t.index_select(2, select.to(t.device))


def _lost(p: torch.Tensor, bound: float, n_zero: torch.Tensor,
          scratch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Count and mass of weights in (0, bound] per row of ``p`` (1, H, c, m); ``n_zero`` weights are 0.
    ``scratch`` (shaped like ``p``) is overwritten."""
    above = torch.ge(p, bound)  # (1, H, c, m) bool
    n_above = above.view(torch.uint8).sum(-1, dtype=torch.int32).float()  # weights at or above the bound
    below = torch.clamp(p, max=bound, out=scratch).sum(-1)  # lost mass + bound * n_above
    count = p.shape[-1] - n_above - n_zero
    return count, (below - bound * n_above).clamp_(min=0.0)


def chunk_stats(chunk: ScoredChunk, key_w: torch.Tensor, q_off: torch.Tensor, recent: int | None = None,
                select: torch.Tensor | None = None) -> torch.Tensor:
    """Every metric of :data:`ATTN_METRICS` for (some of) a chunk's query rows.

    Parameters
    ----------
    chunk : ScoredChunk
        Batch size 1.
    key_w : torch.Tensor
        Weights of the chunk's keys (``chunk.cols`` already applied), float32, shape (m, 3), as in
        :func:`~anomaly_probe.probes.attention_stats.fused_stats`.
    q_off : torch.Tensor
        ``ref - q_abs`` of the selected rows, float32, shape (c',).
    recent : int, optional
        Window of ``recent_mass`` in tokens (``None``: NaN).
    select : torch.Tensor, optional
        Chunk rows to describe (int64, (c',)); ``None``: all.

    Returns
    -------
    torch.Tensor
        Shape (1, H, c', M), float32.
    """
    x, p = _rows(chunk.logits, select), _rows(chunk.weights, select)  # (1, H, c', m)
    visible = _rows(chunk.visible, select)
    if row_kernel.available(x):
        return _one_pass(x, p, visible, key_w, q_off, recent)
    scratch = chunk.scratch if select is None and chunk.scratch is not None else torch.empty_like(p)
    _, H, c, m = x.shape
    q_off = q_off.to(x.device)
    full = m if visible is None else chunk.full_cols
    part = None if full == m else visible[..., full:]  # (1|.., 1|H, c', m - full)
    hi = x.amax(-1)  # (1, H, c'); hidden keys hold a huge negative score
    lo = x[..., :full].amin(-1) if full else torch.full_like(hi, math.inf)
    if part is not None:
        lo = torch.minimum(lo, x[..., full:].masked_fill(~part, math.inf).amin(-1))
    n_vis = torch.full_like(hi, float(full))
    if part is not None:
        n_vis = n_vis + part.sum(-1, dtype=torch.float32)
    n_hidden = m - n_vis
    log_z = hi - torch.log(p.amax(-1))  # logsumexp(s): the largest weight is exp(0) / Z
    entropy = log_z - torch.mul(p, x, out=scratch).sum(-1)  # hidden keys add 0 * HIDDEN = 0
    p2 = p.reshape(H * c, m)
    dist = torch.mv(p2, key_w[:, 1].contiguous()).view(1, H, c)  # sum_j p_j (ref - k_j)
    sink_cols = key_w[:, 0].nonzero().squeeze(1)
    sink = (p.index_select(-1, sink_cols).sum(-1) if 0 < sink_cols.numel() < m else
            torch.mv(p2, key_w[:, 0].contiguous()).view(1, H, c))
    zeros = torch.zeros_like(entropy)
    stats = {"entropy": entropy, "entropy_norm": entropy / torch.log(n_vis), "logit_max": hi, "logit_min": lo,
             "fp16_overflow_count": zeros, "nonfinite_count": zeros, "sink_mass": sink,
             "mean_distance": dist - q_off,  # sum_j p_j (ref - k_j) - (ref - q), sum_j p_j = 1
             "recent_mass": _recent(p, key_w, q_off, recent)}
    p_min = torch.exp(lo - log_z)  # smallest visible weight (up to rounding)
    n_zero = n_hidden
    if bool((p_min < 2 * TINY).any()):  # a visible weight may be exactly 0 in float32: not "lost" by a cast
        n_zero = (p == 0).sum(-1, dtype=torch.float32)
    for kind, bound in BOUNDS.items():
        count, mass = zeros, zeros
        if bool((p_min <= 2 * bound).any()):
            count, mass = _lost(p, bound, n_zero, scratch)
        stats[f"{kind}_underflow_count"], stats[f"{kind}_underflow_mass"] = count, mass
    out = torch.stack(torch.broadcast_tensors(*(stats[k] for k in ATTN_METRICS)), dim=-1)  # (1, H, c', M)
    odd = ~(torch.isfinite(hi) & torch.isfinite(lo)) | (hi > FP16_MAX) | (lo < -FP16_MAX) | (n_vis == 0)
    rows = _RowGather(1, H, c, m)
    idx = rows.where(odd)
    if idx is not None:  # rare: recompute these rows by the definitions
        vis = torch.ones_like(x, dtype=torch.bool) if visible is None else visible.expand(x.shape)
        exact = row_stats(rows.take(x, idx), rows.take(vis, idx), key_w.expand(idx.numel(), m, 3),
                          q_off[idx % c], recent)
        out.view(-1, len(ATTN_METRICS))[idx] = exact
    return out


def _one_pass(x: torch.Tensor, p: torch.Tensor, visible: torch.Tensor | None, key_w: torch.Tensor,
              q_off: torch.Tensor, recent: int | None) -> torch.Tensor:
    """:func:`chunk_stats` on the CPU: one numba pass over ``x`` and ``p`` (1, H, c, m)
    (:func:`~anomaly_probe.probes.row_kernel.row_sums`), the metrics from its per-row sums."""
    _, H, c, m = x.shape
    x2, p2 = x.reshape(H * c, m), p.reshape(H * c, m)  # rows h-major: row h * c + i is query i
    window = -math.inf if recent is None else float(recent)
    sums = row_kernel.row_sums(x2, p2, key_w[:, 1].contiguous(), key_w[:, 0].contiguous(),
                               q_off.to(torch.float32).repeat(H), window, HIDDEN,
                               (BOUNDS["fp16"], BOUNDS["bf16"]))  # (H * c, S)
    col = {name: sums[:, i].view(1, H, c) for i, name in enumerate(row_kernel.SUMS)}
    hi, lo, n_vis = col["hi"], col["lo"], col["n_vis"]
    log_z = hi - torch.log(col["p_max"])  # logsumexp(s): the largest weight is exp(0) / Z
    entropy = log_z - col["spx"]
    zeros = torch.zeros_like(entropy)
    stats = {"entropy": entropy, "entropy_norm": entropy / torch.log(n_vis), "logit_max": hi, "logit_min": lo,
             "fp16_overflow_count": zeros, "nonfinite_count": zeros, "sink_mass": col["sink"],
             "mean_distance": col["dist"] - q_off.view(1, 1, c),  # sum_j p_j (ref - k_j) - (ref - q)
             "recent_mass": col["recent"] if recent is not None else torch.full_like(hi, math.nan),
             "fp16_underflow_count": col["fp16_count"], "fp16_underflow_mass": col["fp16_mass"],
             "bf16_underflow_count": col["bf16_count"], "bf16_underflow_mass": col["bf16_mass"]}
    out = torch.stack([stats[k] for k in ATTN_METRICS], dim=-1)  # (1, H, c, M)
    odd = (~(torch.isfinite(hi) & torch.isfinite(lo) & torch.isfinite(col["spx"])) | (hi > FP16_MAX)
           | (lo < -FP16_MAX) | (n_vis == 0))
    rows = _RowGather(1, H, c, m)
    idx = rows.where(odd)
    if idx is not None:  # rare: recompute these rows by the definitions
        vis = x != HIDDEN if visible is None else visible.expand(x.shape)
        exact = row_stats(rows.take(x, idx), rows.take(vis, idx), key_w.expand(idx.numel(), m, 3),
                          q_off[idx % c], recent)
        out.view(-1, len(ATTN_METRICS))[idx] = exact
    return out


def _recent(p: torch.Tensor, key_w: torch.Tensor, q_off: torch.Tensor, recent: int | None) -> torch.Tensor:
    """Weight on each row's last ``recent`` tokens: ``p`` (1, H, c, m) over the columns near any row."""
    if recent is None:
        return torch.full(p.shape[:-1], math.nan, device=p.device)
    dist = key_w[:, 1]  # (m,) ref - k
    cols = (dist < q_off.max() + recent).nonzero().squeeze(1)  # columns recent for some row
    if cols.numel() == 0:
        return torch.zeros(p.shape[:-1], device=p.device)
    if cols.numel() < dist.numel():
        lo_c, hi_c = int(cols[0]), int(cols[-1]) + 1
        if hi_c - lo_c == cols.numel():  # contiguous (keys in order): a view, no copy
            p, dist = p[..., lo_c:hi_c], dist[lo_c:hi_c]
        else:
            p, dist = p.index_select(-1, cols), dist[cols]
    near = dist[None, :] < q_off[:, None] + recent  # (c, m'): q - k < recent
    return (p * near).sum(-1)
