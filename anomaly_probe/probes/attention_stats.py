"""Per-query attention statistics as a pure function of float32 logits (no hooks, no state).

Any caller that has the scaled scores of some queries -- the probe's recording attention, a parallel
engine's own attention, a unit test with hand-made logits -- gets the same numbers from
:func:`attention_stats`. :func:`fused_stats` is the fast path behind it: eight passes over a
whole stack of logits (every layer of one or more forwards at once), with :func:`row_stats`, the
readable definitions, for the rare rows that need them.
"""

from __future__ import annotations

import math

import torch

from anomaly_probe.step_context import StepInfo

ATTN_METRICS = (
    "entropy", "entropy_norm", "logit_max", "logit_min",
    "fp16_underflow_count", "fp16_underflow_mass", "bf16_underflow_count", "bf16_underflow_mass",
    "fp16_overflow_count", "nonfinite_count", "sink_mass", "mean_distance", "recent_mass",
)
"""Names of the last axis of :func:`fused_stats` (trace columns ``layers.{L}.attn.{name}``)."""

COUNT_METRICS = frozenset(m for m in ATTN_METRICS if m.endswith("_count"))
"""Metrics that are integer counts (stored as int32 in the trace)."""

FP16_MAX = 65504.0  # largest finite float16
_HIDDEN = 1e30  # stand-in for -inf on hidden keys in the fast path (exp underflows to exactly 0)


def fused_stats(x: torch.Tensor, visible: torch.Tensor | None, key_w: torch.Tensor,
                q_off: torch.Tensor, recent: int | None = None) -> torch.Tensor:
    """Every metric of :data:`ATTN_METRICS` for every query row, in one pass.

    Parameters
    ----------
    x : torch.Tensor
        Scaled scores before masking, float32, shape (R, N, Tq, Tk): R groups that share key weights
        (e.g. forwards), N rows of scores per group (e.g. layers x heads), Tq queries, Tk keys.
    visible : torch.Tensor or None
        Boolean mask broadcastable to ``x``, True where the query attends to the key; ``None``: all keys.
    key_w : torch.Tensor
        Per-key weights, float32, shape (R, Tk, 3): columns ``is_sink`` (1.0/0.0), ``ref - k_abs``
        (tokens) and 1.0, where ``ref`` is any reference index (see :func:`key_weights`).
    q_off : torch.Tensor
        ``ref - q_abs`` of each query, float32, shape (R, Tq).
    recent : int, optional
        Window of ``recent_mass``: the weight on keys fewer than ``recent`` tokens before the query
        (``q - k < recent``, the query itself included); ``None``: NaN.

    Returns
    -------
    torch.Tensor
        Shape (R, N, Tq, M) with M = ``len(ATTN_METRICS)``, float32, on ``x``'s device.

    Notes
    -----
    Weights are ``softmax`` over the visible keys in float32 (what eager attention computes). A NaN
    or +inf visible logit makes the row's weight statistics NaN (as it makes the model's output NaN);
    ``logit_max``/``logit_min`` ignore non-finite logits (-inf/+inf when no visible logit is finite).
    ``entropy_norm`` is NaN for a query with a single visible key (0 / log 1). Underflow compares each
    weight with its own cast to float16 / bfloat16, i.e. exactly how ``softmax(...).to(dtype)`` rounds
    it. ``mean_distance = sum_j p_j (ref - k_j) - (ref - q) sum_j p_j`` keeps distances small numbers
    in float32 whatever the absolute indices.

    Cost: eight passes over ``x`` (ten with a mask): max, min, shift, exp, sum, entropy (two), one
    matmul for sink mass and distance. Rows whose max/min logit is non-finite or beyond the float16
    range, and rows whose smallest weight is near the float16/bfloat16 underflow bound, are then
    recomputed exactly by :func:`row_stats` (one host sync per kind; such rows are few).
    """
    R, N, Tq, Tk = x.shape
    hidden = None if visible is None else ~visible
    xm = x if hidden is None else x.masked_fill(hidden, -_HIDDEN)  # finite: exp gives 0 and e*z stays 0
    hi = xm.amax(-1, keepdim=True)  # (R, N, Tq, 1); NaN/+inf when such a logit is visible
    lo = (x if hidden is None else x.masked_fill(hidden, math.inf)).amin(-1, keepdim=True)
    z = xm - hi  # (R, N, Tq, Tk) <= 0
    e = torch.exp(z)
    total = e.sum(-1, keepdim=True)  # >= 1
    ez = z.mul_(e).sum(-1)  # sum_j e_j z_j
    pw = torch.matmul(e.view(R, N * Tq, Tk), key_w).view(R, N, Tq, 3) / total  # sink mass, distance, sum p
    hi, lo, total = hi.squeeze(-1), lo.squeeze(-1), total.squeeze(-1)  # (R, N, Tq)
    entropy = torch.log(total) - ez / total  # nats: -sum p log p with p = e / total
    n_vis = float(Tk) if visible is None else visible.sum(-1, dtype=torch.float32)
    log_n = (math.log(Tk) if Tk > 1 else 0.0) if visible is None else torch.log(n_vis)
    zeros = torch.zeros_like(entropy)
    stats = {"entropy": entropy, "entropy_norm": entropy / log_n, "logit_max": hi, "logit_min": lo,
             "fp16_overflow_count": zeros, "nonfinite_count": zeros,
             "sink_mass": pw[..., 0], "mean_distance": pw[..., 1] - q_off[:, None, :] * pw[..., 2],
             "recent_mass": _recent_mass(e, total, key_w, q_off, recent)}

    rows = _RowGather(R, N, Tq, Tk)
    odd = ~(torch.isfinite(hi) & torch.isfinite(lo)) | (hi > FP16_MAX) | (lo < -FP16_MAX)
    p_min = torch.exp(lo - hi) / total  # smallest visible weight (up to rounding)
    for kind, dtype, bound in (("fp16", torch.float16, 2.0 ** -24), ("bf16", torch.bfloat16, 2.0 ** -133)):
        count, mass = zeros.clone(), zeros.clone()
        idx = rows.where((p_min <= bound) & ~odd)  # bound: twice the largest weight that rounds to 0
        if idx is not None:
            p = rows.take(e, idx) / total.view(-1)[idx, None]  # (k, Tk) the weights, as above
            lost = (p > 0) & (p.to(dtype) == 0)
            rows.put(count, idx, lost.sum(-1, dtype=torch.float32))
            rows.put(mass, idx, torch.where(lost, p, 0.0).sum(-1))
        stats[f"{kind}_underflow_count"], stats[f"{kind}_underflow_mass"] = count, mass
    out = torch.stack(torch.broadcast_tensors(*(stats[m] for m in ATTN_METRICS)), dim=-1)  # (R, N, Tq, M)
    idx = rows.where(odd)
    if idx is not None:  # rare: non-finite or huge logits, rows without visible keys
        r, t = idx // (N * Tq), idx % Tq
        exact = row_stats(rows.take(x, idx), rows.take(visible, idx), key_w[r], q_off[r, t], recent)
        out.view(-1, len(ATTN_METRICS))[idx] = exact
    return out


def _recent_mass(e: torch.Tensor, total: torch.Tensor, key_w: torch.Tensor, q_off: torch.Tensor,
                 recent: int | None) -> torch.Tensor:
    """Weight on each query's last ``recent`` tokens, from ``e`` (R, N, Tq, Tk) and ``total`` (R, N, Tq)."""
    if recent is None:
        return torch.full_like(total, math.nan)
    near = (key_w[:, None, :, 1] < q_off[:, :, None] + recent)[:, None]  # (R, 1, Tq, Tk): q - k < recent
    return (e * near).sum(-1) / total


def row_stats(x: torch.Tensor, visible: torch.Tensor | None, key_w: torch.Tensor,
              q_off: torch.Tensor, recent: int | None = None) -> torch.Tensor:
    """The readable path: every metric of some query rows, by the definitions, whatever their logits.

    Parameters
    ----------
    x : torch.Tensor
        Scaled scores, float32, shape (k, Tk).
    visible : torch.Tensor or None
        Boolean (k, Tk); ``None`` for all keys.
    key_w : torch.Tensor
        (k, Tk, 3), as in :func:`fused_stats`.
    q_off : torch.Tensor
        (k,), as in :func:`fused_stats`.
    recent : int, optional
        As in :func:`fused_stats`.

    Returns
    -------
    torch.Tensor
        Shape (k, M), float32.
    """
    vis = torch.ones_like(x, dtype=torch.bool) if visible is None else visible
    finite = torch.isfinite(x) & vis
    lmax = x.masked_fill(~finite, -math.inf).amax(-1)  # (k,)
    lmin = x.masked_fill(~finite, math.inf).amin(-1)
    e = torch.exp(x.masked_fill(~vis, -math.inf) - lmax[:, None])  # NaN/+inf visible: NaN weights
    p = e / e.sum(-1, keepdim=True)
    entropy = 0.0 - torch.xlogy(p, p).sum(-1)  # xlogy(0, 0) = 0; 0.0 - 0.0 is +0
    n_vis = vis.sum(-1, dtype=torch.float32)
    pw = torch.matmul(p[:, None, :], key_w)[:, 0]  # (k, 3)
    stats = {"entropy": entropy, "entropy_norm": entropy / torch.log(n_vis), "logit_max": lmax, "logit_min": lmin,
             "fp16_overflow_count": ((x.abs() > FP16_MAX) & vis).sum(-1, dtype=torch.float32),
             "nonfinite_count": n_vis - finite.sum(-1, dtype=torch.float32),
             "sink_mass": pw[:, 0], "mean_distance": pw[:, 1] - q_off * pw[:, 2],
             "recent_mass": (torch.full_like(entropy, math.nan) if recent is None else
                             torch.where(key_w[:, :, 1] < q_off[:, None] + recent, p, 0.0).sum(-1)
                             + 0.0 * p.sum(-1))}  # NaN weights anywhere: NaN, like the other weight statistics
    for kind, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        lost = (p > 0) & (p.to(dtype) == 0)
        stats[f"{kind}_underflow_count"] = lost.sum(-1, dtype=torch.float32)
        stats[f"{kind}_underflow_mass"] = torch.where(lost, p, 0.0).sum(-1)
    return torch.stack([stats[m] for m in ATTN_METRICS], dim=-1)


class _RowGather:
    """Select query rows of (R, N, Tq, Tk) tensors (or broadcastable masks) by flat row index."""

    def __init__(self, R: int, N: int, Tq: int, Tk: int) -> None:
        self.shape = (R, N, Tq, Tk)

    def where(self, flags: torch.Tensor) -> torch.Tensor | None:
        """Flat indices of flagged rows (R*N*Tq,), or None when none is flagged (one host sync)."""
        flags = flags.expand(self.shape[:3]).reshape(-1)
        if not bool(flags.any()):
            return None
        return flags.nonzero().squeeze(1)

    def take(self, t: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor | None:
        """Rows ``idx`` of ``t`` broadcast to (R, N, Tq, Tk), shape (k, Tk)."""
        if t is None:
            return None
        Tk = self.shape[-1]
        if t.shape[:3] != self.shape[:3]:  # a broadcast mask: materialise (rare path only)
            t = t.expand(self.shape)
        return t.reshape(-1, Tk).index_select(0, idx)

    def put(self, out: torch.Tensor, idx: torch.Tensor, values: torch.Tensor) -> None:
        out.view(-1)[idx] = values


def key_weights(info: StepInfo, rows: slice | torch.Tensor, n_keys: int,
                sink_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Key weights and query offsets of some query rows of a step, for :func:`fused_stats`.

    Parameters
    ----------
    info : StepInfo
        The forward's step description.
    rows : slice or torch.Tensor
        Which rows of ``info.q_abs`` the logits hold (a slice, or int64 row indices in increasing order).
    n_keys : int
        Key axis length of the logits; must equal ``len(info.k_abs)``.
    sink_size : int, optional
        Keys ``k_abs < sink_size`` are sinks (default ``info.sink_size``): the probe measures the
        method's sink tokens in the full-cache baseline too, whose engine names no sinks.

    Returns
    -------
    tuple of torch.Tensor
        ``key_w`` (Tk, 3) and ``q_off`` (Tq,), float32, on the CPU; the reference index is the last
        query of ``rows``.
    """
    k = info.k_abs.cpu()
    if k.numel() != n_keys:
        raise ValueError(f"attention probe: the logits have {n_keys} keys but the step describes "
                         f"{k.numel()} (StepInfo.k_abs); the engine's StepInfo is out of sync with its cache")
    q = info.q_abs.cpu()[rows]
    ref = q.max()
    sinks = info.sink_size if sink_size is None else sink_size
    key_w = torch.stack([(k < sinks).float(), (ref - k).float(), torch.ones(n_keys)], dim=-1)
    return key_w, (ref - q).float()


def attention_stats(logits: torch.Tensor, visible: torch.Tensor | None, info: StepInfo,
                    rows: slice = slice(None), recent: int | None = None) -> dict[str, torch.Tensor]:
    """Readable entry point: named statistics of some query rows of one forward.

    Parameters
    ----------
    logits : torch.Tensor
        Scaled scores before masking, shape (B, H, Tq, Tk), any float dtype (computed in float32).
    visible : torch.Tensor or None
        Boolean mask broadcastable to (B, H, Tq, Tk); ``None`` for all keys.
    info : StepInfo
        The forward's step description (absolute indices, sink size).
    rows : slice
        Rows of ``info.q_abs`` that the logits hold (default: all).
    recent : int, optional
        Window of ``recent_mass`` in tokens (``None``: NaN).

    Returns
    -------
    dict of str to torch.Tensor
        One (B, H, Tq) float32 tensor per name in :data:`ATTN_METRICS`.
    """
    B, H, Tq, Tk = logits.shape
    key_w, q_off = key_weights(info, rows, Tk)
    x = logits.float().reshape(1, B * H, Tq, Tk)
    vis = None if visible is None else torch.broadcast_to(visible, logits.shape).reshape(1, B * H, Tq, Tk)
    stats = fused_stats(x, vis, key_w.to(x.device)[None], q_off.to(x.device)[None], recent)  # (1, B*H, Tq, M)
    stats = stats.view(B, H, Tq, len(ATTN_METRICS))
    return {name: stats[..., i] for i, name in enumerate(ATTN_METRICS)}
