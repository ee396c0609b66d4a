"""Attention statistics from the fused kernel's own tensors: no second pass over the keys.

The fused attention (:mod:`anomaly_probe.attention.fused`) hands the probe, per query chunk, the scaled
scores ``s``, ``e = exp(s - max)``, the row maximum and ``Z = sum(e)``. Every metric of
:data:`~anomaly_probe.probes.attention_stats.ATTN_METRICS` follows from them:

* entropy ``= log Z - sum(e * (s - max)) / Z`` (logsumexp minus the expected score: one multiply-add
  pass, no per-element log);
* ``logit_max`` is the row maximum; ``logit_min`` a masked minimum over the few partially visible
  columns and a plain one over the rest;
* fp16 underflow: a weight ``e / Z`` rounds to 0 in float16 when it is at most 2^-25, i.e. when
  ``e <= 2^-25 Z`` (a comparison with the row's own bound; hidden keys, ``e = 0``, are subtracted);
  the lost mass is the sum of those weights. Only chunks with a row whose smallest weight is that
  small pay for it;
* sink mass, mean distance: one thin matmul of ``e`` with the key weights (as in
  :func:`~anomaly_probe.probes.attention_stats.fused_stats`);
* recent mass: ``e`` summed over each row's last ``recent`` tokens (a band of columns).

Rows that need the exact definitions (non-finite or huge logits, a smallest weight at the bfloat16 or
float32 underflow bound, rows without a visible key) are recomputed by
:func:`~anomaly_probe.probes.attention_stats.row_stats`; they are few.
"""

from __future__ import annotations

import math

import torch

from anomaly_probe.attention.fused import ScoredChunk
from anomaly_probe.probes.attention_stats import ATTN_METRICS, FP16_MAX, _RowGather, row_stats

FP16_BOUND = 2.0 ** -25  # largest weight that float16 rounds to 0 (ties to even)
BF16_BOUND = 2.0 ** -133  # twice the largest weight that bfloat16 rounds to 0: rows to check exactly
EXP_FLOOR = -87.0  # exp(z) of a visible key may be subnormal or 0 in float32 below this: exact path


def _rows(t: torch.Tensor | None, select: torch.Tensor | None) -> torch.Tensor | None:
    """Rows ``select`` of axis 2 of ``t`` (a broadcast axis of size 1 is kept)."""
    if t is None or select is None or t.shape[2] == 1:
        return t
    return t.index_select(2, select.to(t.device))


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
    x, e = _rows(chunk.logits, select), _rows(chunk.exp, select)  # (1, H, c', m)
    hi, total = _rows(chunk.row_max, select)[..., 0], _rows(chunk.total, select)[..., 0]  # (1, H, c')
    visible = _rows(chunk.visible, select)
    _, H, c, m = x.shape
    full = m if visible is None else chunk.full_cols
    part = None if full == m else visible[..., full:]  # (1|.., 1|H, c', m - full)
    lo = x[..., :full].amin(-1) if full else torch.full_like(hi, math.inf)
    if part is not None:
        lo = torch.minimum(lo, x[..., full:].masked_fill(~part, math.inf).amin(-1))
    n_vis = torch.full_like(hi, float(full))
    if part is not None:
        n_vis = n_vis + part.sum(-1, dtype=torch.float32)
    n_hidden = m - n_vis
    ex = torch.linalg.vecdot(e, x)  # (1, H, c') sum_j e_j s_j; hidden keys add 0 * HIDDEN = 0
    entropy = torch.log(total) - (ex - hi * total) / total
    pw = torch.matmul(e.reshape(H * c, m), key_w[:, :2]).view(1, H, c, 2) / total[..., None]
    zeros = torch.zeros_like(entropy)
    stats = {"entropy": entropy, "entropy_norm": entropy / torch.log(n_vis), "logit_max": hi, "logit_min": lo,
             "fp16_overflow_count": zeros, "nonfinite_count": zeros, "sink_mass": pw[..., 0],
             "mean_distance": pw[..., 1] - q_off.to(x.device),  # sum_j p_j (ref - k_j) - (ref - q), sum_j p_j = 1
             "recent_mass": _recent(e, total, key_w, q_off.to(x.device), recent)}
    p_min = torch.exp(lo - hi) / total  # smallest visible weight
    count, mass = zeros.clone(), zeros.clone()
    if bool((p_min <= 2 * FP16_BOUND).any()):
        bound = total[..., None] * FP16_BOUND  # (1, H, c', 1)
        lost = e <= bound  # hidden keys (e = 0) too: subtracted below
        count = lost.sum(-1, dtype=torch.float32) - n_hidden
        mass = (e * lost).sum(-1) / total
    stats["fp16_underflow_count"], stats["fp16_underflow_mass"] = count, mass
    stats["bf16_underflow_count"], stats["bf16_underflow_mass"] = zeros, zeros.clone()
    out = torch.stack(torch.broadcast_tensors(*(stats[k] for k in ATTN_METRICS)), dim=-1)  # (1, H, c', M)
    odd = (~(torch.isfinite(hi) & torch.isfinite(lo)) | (hi > FP16_MAX) | (lo < -FP16_MAX)
           | (lo - hi < EXP_FLOOR) | (p_min <= BF16_BOUND) | (n_vis == 0))
    rows = _RowGather(1, H, c, m)
    idx = rows.where(odd)
    if idx is not None:  # rare: recompute these rows by the definitions
        vis = torch.ones_like(x, dtype=torch.bool) if visible is None else visible.expand(x.shape)
        t = idx % c
        exact = row_stats(rows.take(x, idx), rows.take(vis, idx), key_w.expand(idx.numel(), m, 3),
                          q_off.to(x.device)[t], recent)
        out.view(-1, len(ATTN_METRICS))[idx] = exact
    return out


def _recent(e: torch.Tensor, total: torch.Tensor, key_w: torch.Tensor, q_off: torch.Tensor,
            recent: int | None) -> torch.Tensor:
    """Weight on each row's last ``recent`` tokens: ``e`` (1, H, c, m) over the columns near any row."""
    if recent is None:
        return torch.full_like(total, math.nan)
    dist = key_w[:, 1]  # (m,) ref - k
    cols = (dist < q_off.max() + recent).nonzero().squeeze(1)  # columns recent for some row
    if cols.numel() == 0:
        return torch.zeros_like(total)
    if cols.numel() < dist.numel():
        lo_c, hi_c = int(cols[0]), int(cols[-1]) + 1
        if hi_c - lo_c == cols.numel():  # contiguous (keys in order): a view, no copy
            e, dist = e[..., lo_c:hi_c], dist[lo_c:hi_c]
        else:
            e, dist = e.index_select(-1, cols), dist[cols]
    near = dist[None, :] < q_off[:, None] + recent  # (c, m'): q - k < recent
    return (e * near).sum(-1) / total
