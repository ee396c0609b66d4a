"""Per-query attention statistics as a pure function of float32 logits (no hooks, no state).

Any caller that has the scaled scores of some queries -- the probe's recording attention, a parallel
engine's own attention, a unit test with hand-made logits -- gets the same numbers from
:func:`attention_stats`. :func:`fused_stats` is the fast path behind it: about ten passes over a
whole stack of logits (every layer of many forwards at once).
"""

from __future__ import annotations

import math

import torch

from anomaly_probe.engines.step_context import StepInfo

ATTN_METRICS = (
    "entropy", "entropy_norm", "logit_max", "logit_min",
    "fp16_underflow_count", "fp16_underflow_mass", "bf16_underflow_count", "bf16_underflow_mass",
    "fp16_overflow_count", "nonfinite_count", "sink_mass", "mean_distance",
)
"""Names of the last axis of :func:`fused_stats` (trace columns ``layers.{L}.attn.{name}``)."""

COUNT_METRICS = frozenset(m for m in ATTN_METRICS if m.endswith("_count"))
"""Metrics that are integer counts (stored as int32 in the trace)."""

FP16_MAX = 65504.0  # largest finite float16


def fused_stats(x: torch.Tensor, visible: torch.Tensor | None, key_w: torch.Tensor,
                q_off: torch.Tensor) -> torch.Tensor:
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

    Cost: about ten passes over ``x``. Counts that are almost always zero (non-finite, overflow,
    underflow) are computed exactly, but only on the rows whose max/min logit and smallest weight say
    they can be non-zero (one host sync per call).
    """
    R, N, Tq, Tk = x.shape
    inf = math.inf
    hidden = None if visible is None else ~visible
    xm = x if hidden is None else x.masked_fill(hidden, -inf)
    hi = xm.amax(-1, keepdim=True)  # (R, N, Tq, 1); NaN/+inf when such a logit is visible
    lo = (x if hidden is None else x.masked_fill(hidden, inf)).amin(-1, keepdim=True)
    e = torch.exp(xm - hi)  # (R, N, Tq, Tk); hidden keys -> 0
    total = e.sum(-1, keepdim=True)
    p = e / total  # float32 attention weights
    entropy = 0.0 - torch.xlogy(p, p).sum(-1)  # nats; xlogy(0, 0) = 0; 0.0 - 0.0 is +0
    pw = torch.matmul(p.view(R, N * Tq, Tk), key_w).view(R, N, Tq, 3)  # sink mass, distance, total
    n_vis = float(Tk) if visible is None else visible.sum(-1, dtype=torch.float32)
    log_n = (math.log(Tk) if Tk > 1 else 0.0) if visible is None else torch.log(n_vis)

    hi, lo, total = hi.squeeze(-1), lo.squeeze(-1), total.squeeze(-1)  # (R, N, Tq)
    odd = ~(torch.isfinite(hi) & torch.isfinite(lo)) | (hi > FP16_MAX) | (lo < -FP16_MAX)
    p_min = torch.exp(lo - hi) / total  # smallest visible weight (up to rounding)
    zeros = torch.zeros_like(entropy)
    stats = {"logit_max": hi.clone(), "logit_min": lo.clone(), "nonfinite_count": zeros,
             "fp16_overflow_count": zeros.clone()}
    for name in ("fp16_underflow_count", "fp16_underflow_mass", "bf16_underflow_count", "bf16_underflow_mass"):
        stats[name] = zeros.clone()
    rows = _RowGather(R, N, Tq, Tk)
    idx = rows.where(odd)
    if idx is not None:  # rare: non-finite or huge logits
        xs, vs = rows.take(x, idx), rows.take(visible, idx)
        finite = torch.isfinite(xs) if vs is None else torch.isfinite(xs) & vs
        over = xs.abs() > FP16_MAX
        rows.put(stats["nonfinite_count"], idx, (~finite).sum(-1, dtype=torch.float32) if vs is None
                 else (vs & ~finite).sum(-1, dtype=torch.float32))
        rows.put(stats["fp16_overflow_count"], idx, (over if vs is None else over & vs).sum(-1, dtype=torch.float32))
        rows.put(stats["logit_max"], idx, xs.masked_fill(~finite, -inf).amax(-1))
        rows.put(stats["logit_min"], idx, xs.masked_fill(~finite, inf).amin(-1))
    for kind, dtype, bound in (("fp16", torch.float16, 2.0 ** -24), ("bf16", torch.bfloat16, 2.0 ** -133)):
        idx = rows.where(odd | (p_min <= bound))  # bound: twice the largest weight that rounds to 0
        if idx is not None:
            ps = rows.take(p, idx)  # (k, Tk)
            lost = (ps > 0) & (ps.to(dtype) == 0)
            rows.put(stats[f"{kind}_underflow_count"], idx, lost.sum(-1, dtype=torch.float32))
            rows.put(stats[f"{kind}_underflow_mass"], idx, torch.where(lost, ps, 0.0).sum(-1))
    stats.update(entropy=entropy, entropy_norm=entropy / log_n, sink_mass=pw[..., 0],
                 mean_distance=pw[..., 1] - q_off[:, None, :] * pw[..., 2])
    out = [stats[name] for name in ATTN_METRICS]
    return torch.stack(torch.broadcast_tensors(*out), dim=-1)  # (R, N, Tq, M)


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
        """Rows ``idx`` of ``t`` broadcast to (R, N, Tq, Tk), shape (k, Tk), without expanding it."""
        if t is None:
            return None
        R, N, Tq, Tk = self.shape
        t = t.expand(R, N, Tq, Tk)
        return t[idx // (N * Tq), (idx // Tq) % N, idx % Tq]

    def put(self, out: torch.Tensor, idx: torch.Tensor, values: torch.Tensor) -> None:
        out.view(-1)[idx] = values


def key_weights(info: StepInfo, rows: slice, n_keys: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Key weights and query offsets of some query rows of a step, for :func:`fused_stats`.

    Parameters
    ----------
    info : StepInfo
        The forward's step description.
    rows : slice
        Which rows of ``info.q_abs`` the logits hold.
    n_keys : int
        Key axis length of the logits; must equal ``len(info.k_abs)``.

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
    key_w = torch.stack([(k < info.sink_size).float(), (ref - k).float(), torch.ones(n_keys)], dim=-1)
    return key_w, (ref - q).float()


def attention_stats(logits: torch.Tensor, visible: torch.Tensor | None, info: StepInfo,
                    rows: slice = slice(None)) -> dict[str, torch.Tensor]:
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

    Returns
    -------
    dict of str to torch.Tensor
        One (B, H, Tq) float32 tensor per name in :data:`ATTN_METRICS`.
    """
    B, H, Tq, Tk = logits.shape
    key_w, q_off = key_weights(info, rows, Tk)
    x = logits.float().reshape(1, B * H, Tq, Tk)
    vis = None if visible is None else torch.broadcast_to(visible, logits.shape).reshape(1, B * H, Tq, Tk)
    stats = fused_stats(x, vis, key_w.to(x.device)[None], q_off.to(x.device)[None])  # (1, B*H, Tq, M)
    stats = stats.view(B, H, Tq, len(ATTN_METRICS))
    return {name: stats[..., i] for i, name in enumerate(ATTN_METRICS)}
