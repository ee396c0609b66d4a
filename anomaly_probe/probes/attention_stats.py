"""Per-query attention statistics as a pure function of float32 logits (no hooks, no state).

Any caller that has the scaled scores of some queries -- the probe's recording attention, a parallel
engine's own attention, a unit test with hand-made logits -- gets the same numbers from
:func:`attention_stats`. :func:`fused_stats` is the fast path behind it: one pass over a stack of
logits (for example every layer of one forward at once), about forty tensor ops in all.
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


def fused_stats(logits: torch.Tensor, visible: torch.Tensor | None, sink: torch.Tensor,
                distance: torch.Tensor) -> torch.Tensor:
    """Every metric of :data:`ATTN_METRICS` for every query row, in one pass.

    Parameters
    ----------
    logits : torch.Tensor
        Scaled scores before masking, float32, shape (..., Tq, Tk) (any leading dims, e.g. (n, B, H)).
    visible : torch.Tensor or None
        Boolean mask broadcastable to ``logits``, True where the query attends to the key;
        ``None`` means every key is visible.
    sink : torch.Tensor
        1.0 for keys that are attention sinks, else 0.0, float32, shape (Tk,).
    distance : torch.Tensor
        ``q_abs - k_abs`` of each query-key pair (tokens), float32, shape (Tq, Tk).

    Returns
    -------
    torch.Tensor
        Shape (..., Tq, M) with M = ``len(ATTN_METRICS)``, float32, on the logits' device.

    Notes
    -----
    Weights are ``softmax`` over the visible keys in float32, as eager attention computes them. A
    non-finite visible logit makes that row's weight statistics NaN (as it makes the model's output NaN);
    ``logit_max``/``logit_min`` ignore non-finite logits. ``entropy_norm`` is NaN for a query with a
    single visible key (0 / log 1). Underflow compares each weight with its own cast to float16 /
    bfloat16, exactly as ``softmax(...).to(dtype)`` rounds it.
    """
    x = logits  # (..., Tq, Tk)
    finite = torch.isfinite(x)
    if visible is None:
        valid, xm = finite, x
        n_vis = x.new_full((), float(x.shape[-1]))  # scalar: every key
        overflow = x.abs() > FP16_MAX
    else:
        valid = finite & visible
        xm = x.masked_fill(~visible, -math.inf)
        n_vis = visible.sum(-1, dtype=torch.float32)  # (..., Tq) broadcastable
        overflow = (x.abs() > FP16_MAX) & visible
    invalid = ~valid
    nonfinite = n_vis - valid.sum(-1, dtype=torch.float32)  # (..., Tq)
    logit_max = x.masked_fill(invalid, -math.inf).amax(-1)
    logit_min = x.masked_fill(invalid, math.inf).amin(-1)

    e = torch.exp(xm - xm.amax(-1, keepdim=True))  # (..., Tq, Tk)
    p = e / e.sum(-1, keepdim=True)  # fp32 attention weights
    entropy = -torch.xlogy(p, p).sum(-1)  # nats; xlogy(0, 0) = 0 for masked keys
    entropy_norm = entropy / torch.log(n_vis)

    positive = p > 0
    under16 = positive & (p.half() == 0)
    underbf = positive & (p.bfloat16() == 0)
    stats = [
        entropy, entropy_norm, logit_max, logit_min,
        under16.sum(-1, dtype=torch.float32), (p * under16).sum(-1),
        underbf.sum(-1, dtype=torch.float32), (p * underbf).sum(-1),
        overflow.sum(-1, dtype=torch.float32), nonfinite,
        p @ sink, (p * distance).sum(-1),
    ]
    return torch.stack(torch.broadcast_tensors(*stats), dim=-1)  # (..., Tq, M)


def key_weights(info: StepInfo, rows: slice, n_keys: int,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Sink indicator and query-key distances of some query rows of a step.

    Parameters
    ----------
    info : StepInfo
        The forward's step description.
    rows : slice
        Which rows of ``info.q_abs`` the logits hold.
    n_keys : int
        Key axis length of the logits; must equal ``len(info.k_abs)``.
    device : torch.device
        Where the logits live.

    Returns
    -------
    tuple of torch.Tensor
        ``sink`` (Tk,) float32 and ``distance`` (Tq, Tk) float32 (tokens), on ``device``.
    """
    k = info.k_abs
    if k.numel() != n_keys:
        raise ValueError(f"attention probe: the logits have {n_keys} keys but the step describes "
                         f"{k.numel()} (StepInfo.k_abs); the engine's StepInfo is out of sync with its cache")
    q = info.q_abs[rows]
    distance = (q[:, None] - k[None, :]).to(device=device, dtype=torch.float32)  # (Tq, Tk)
    sink = (k < info.sink_size).to(device=device, dtype=torch.float32)  # (Tk,)
    return sink, distance


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
    sink, distance = key_weights(info, rows, logits.shape[-1], logits.device)
    stats = fused_stats(logits.float(), visible, sink, distance)  # (B, H, Tq, M)
    return {name: stats[..., i] for i, name in enumerate(ATTN_METRICS)}
