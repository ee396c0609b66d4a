"""The parallel engine's attention: banded, blockwise, with sink scores at the query's in-cache position.

One forward scores many queries whose caches differ (each sees the sinks plus its own recent window),
so attention takes an explicit (Tq, Tk) ``visible`` mask, passed to the model as a prepared 4D
``attention_mask`` (transformers hands a 4D mask to the attention function as is). Queries are processed
in blocks of ``block`` rows; a block only multiplies the sink columns and the contiguous span of other
columns it can see, so work is ~Tq x (sinks + recent + block), never Tq x Tk, and no T x T map exists.
Two paths compute the same numbers: :func:`blockwise_attention`, a readable loop over blocks (also the
path that feeds the attention recorder), and :mod:`~anomaly_probe.engines.band_attention`, all blocks
at once through a strided view of the keys (the default where the mask is a narrow band).

In-cache positions: a recent key sits at the same distance ``t - j`` below the query as in absolute
mode, but a sink sits at its slot ``j`` while the query sits at ``min(t, capacity)``. The model rotates
every query once (its position in the engine's frame); for the sink columns this function rotates the
query again by ``sink_shift`` (``RopeSpec.rotate``), so ``score(t, sink j) = R(q_pos(t)) q . R(j) k``.

Registration is explicit and scoped: :func:`parallel_attention_enabled` runs the model with this
function under :data:`ATTN_NAME` (and a mask function that refuses to build a mask, so a missing 4D
mask can never silently become ``None``) through
:func:`~anomaly_probe.attention.switch.attention_implementation`, which verifies the switch and restores
and unregisters on exit. Scores go through the shared GQA path (:mod:`~anomaly_probe.attention.gqa`).
It runs through :func:`~anomaly_probe.attention.finite_guard.guard_nonfinite`: a non-finite value in a
column a query cannot see would otherwise make that query NaN (``0 * NaN``).
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator

import torch

from anomaly_probe.attention import attention_implementation, check_switchable, gqa_scores, gqa_weighted
from anomaly_probe.attention.finite_guard import guard_nonfinite
from anomaly_probe.attention.fused import first_partial_column, softmax_chunk
from anomaly_probe.attention.hf import current_implementation
from anomaly_probe.engines.band_attention import Band, banded_attention
from anomaly_probe.errors import UserError
from anomaly_probe.models.rope import RopeSpec
from anomaly_probe.step_context import ATTENTION_RECORDER, RECORDING_IMPLEMENTATION

ATTN_NAME = "anomaly_probe_parallel"
REPLACEABLE = ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flash_attention_4", "flex_attention")
"""Standard implementations: same results as ours up to rounding, so switching away from them is safe."""
PROBE_PREFIX = RECORDING_IMPLEMENTATION  # the attention probe's wrapper (it only records)


@dataclass
class AttentionPlan:
    """What the attention needs besides q, k, v and the mask, for one forward.

    Attributes
    ----------
    blocks : list of tuple of int
        ``(row_lo, row_hi, col_lo, col_hi)``: query rows of one block and the span of non-sink key
        columns any of them sees (``col_lo >= n_sink_cols``).
    n_sink_cols : int
        Leading key columns that hold attention sinks (scored with the shifted query).
    sink_shift : torch.Tensor or None
        Positions to rotate each query by for the sink columns, shape (Tq,), int64; ``None``: no shift.
    rope : RopeSpec or None
        The model's rotary embedding; needed only with ``sink_shift``.
    band : Band or None
        Geometry for the banded fast path; ``None``: the block loop.
    """

    blocks: list[tuple[int, int, int, int]]
    n_sink_cols: int = 0
    sink_shift: torch.Tensor | None = None
    rope: RopeSpec | None = None
    band: Band | None = None
    windowed: bool = False  # the mask already holds the layer's sliding window

    @classmethod
    def build(cls, visible: torch.Tensor, block: int, n_sink_cols: int = 0,
              sink_shift: torch.Tensor | None = None, rope: RopeSpec | None = None,
              banded: bool = True) -> "AttentionPlan":
        """Split the queries of ``visible`` (shape (Tq, Tk), bool; queries are the last Tq key columns)
        into blocks with their column spans; ``banded=False`` forces the block loop."""
        if sink_shift is not None and not bool(sink_shift.any()):
            sink_shift = None
        if sink_shift is not None and rope is None:
            raise ValueError("a sink shift needs the model's RopeSpec")
        Tq, Tk = visible.shape
        rest = visible[:, n_sink_cols:]  # (Tq, Tk - n_sink_cols)
        blocks = []
        for lo in range(0, Tq, block):
            hi = min(lo + block, Tq)
            cols = rest[lo:hi].any(dim=0).nonzero().flatten()
            if cols.numel() == 0:
                blocks.append((lo, hi, n_sink_cols, n_sink_cols))
            else:
                blocks.append((lo, hi, n_sink_cols + int(cols[0]), n_sink_cols + int(cols[-1]) + 1))
        band = Band.build(visible, block, n_sink_cols, blocks) if banded else None
        return cls(blocks=blocks, n_sink_cols=n_sink_cols, sink_shift=sink_shift, rope=rope, band=band)


CURRENT_PLAN: ContextVar[AttentionPlan | dict[int, AttentionPlan] | None] = ContextVar("anomaly_probe_attention_plan", default=None)


def parallel_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       attention_mask: torch.Tensor | None, scaling: float, dropout: float = 0.0,
                       **_kwargs) -> tuple[torch.Tensor, None]:
    """An ``AttentionInterface`` function for the parallel engine (fp32 scores, eval only).

    Parameters
    ----------
    module : torch.nn.Module
        The attention module (its ``layer_idx`` names the layer for the recorder).
    query : torch.Tensor
        Post-RoPE queries, shape (B, H, Tq, D).
    key, value : torch.Tensor
        Post-RoPE keys and values of the cache plus the new tokens, shape (B, Hkv, Tk, D).
    attention_mask : torch.Tensor
        Boolean ``visible`` mask, shape (1 or B, 1, Tq, Tk).
    scaling : float
        Logit scale (``head_dim ** -0.5`` for both supported architectures).

    Returns
    -------
    tuple
        Output of shape (B, Tq, H, Dv) in ``query.dtype``, and ``None`` (no weights are returned).
    """
    plan = CURRENT_PLAN.get()
    if isinstance(plan, dict):  # layered models: one plan per decoder layer
        plan = plan.get(getattr(module, "layer_idx", None))
    if plan is None or attention_mask is None or attention_mask.dtype != torch.bool or attention_mask.dim() != 4:
        raise RuntimeError("the parallel attention runs only inside the parallel engine, with its boolean 4D mask")
    unsupported = [name for name in ("softcap", "sliding_window", "s_aux") if _kwargs.get(name) is not None
                   and not (name == "sliding_window" and plan.windowed)]
    if unsupported:
        raise UserError(f"the parallel engine does not support attention with {', '.join(unsupported)}; "
                        "use --engine stepwise")
    B, H, Tq, _D = query.shape
    out = query.new_empty(B, Tq, H, value.shape[-1])
    q, k, v = query.float(), key.float(), value.float()  # no copy in float32
    ns = plan.n_sink_cols
    recorder = ATTENTION_RECORDER.get()
    observe = getattr(recorder, "observe_chunk", None)  # the attention probe reads the blocks' own scores
    if observe is not None:
        blockwise_attention(module, q, k, v, attention_mask, plan, scaling, out, observe=observe)
    elif recorder is None and plan.band is not None:
        sink_q = None
        if ns and plan.sink_shift is not None:
            sink_q = plan.rope.rotate(q, plan.sink_shift.to(q.device))  # (B, H, Tq, D)
        banded_attention(q, k, v, plan.band, ns, sink_q, scaling, out)
    else:
        blockwise_attention(module, q, k, v, attention_mask, plan, scaling, out, recorder)
    return out, None


def blockwise_attention(module: torch.nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        attention_mask: torch.Tensor, plan: AttentionPlan, scaling: float, out: torch.Tensor,
                        recorder=None, observe=None) -> None:
    """The readable path: one block of query rows at a time; fills ``out`` (B, Tq, H, Dv).

    ``q`` (B, H, Tq, D), ``k`` and ``v`` (B, Hkv, Tk, D) are float32. With a ``recorder`` every block
    scores all Tk columns and hands them over before the softmax. With an ``observe`` (the fused
    kernel's observer, :mod:`anomaly_probe.attention.fused`) each block scores only the sinks and the
    span it can see, once, and the observer reads those scores and their exponentials.
    """
    Tk = k.shape[2]
    ns = plan.n_sink_cols
    k_sink, v_sink = k[:, :, :ns], v[:, :, :ns]
    for lo, hi, c0, c1 in plan.blocks:
        if observe is not None:
            _observed_block(module, q, k, v, attention_mask, plan, scaling, out, observe, (lo, hi, c0, c1))
            continue
        if recorder is not None:
            c0, c1 = ns, Tk  # the recorder gets every column
        qb = q[:, :, lo:hi]  # (B, H, n, D)
        parts = []
        if ns:
            qs = qb if plan.sink_shift is None else plan.rope.rotate(qb, plan.sink_shift[lo:hi].to(qb.device))
            parts.append(gqa_scores(qs, k_sink))  # (B, H, n, ns)
        parts.append(gqa_scores(qb, k[:, :, c0:c1]))  # (B, H, n, c1 - c0)
        logits = (torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]) * scaling  # (B, H, n, m)
        mask = attention_mask[:, :, lo:hi]
        vis = torch.cat([mask[..., :ns], mask[..., c0:c1]], dim=-1) if ns else mask[..., c0:c1]  # (1|B, 1, n, m)
        if recorder is not None:
            recorder(module, logits, vis)
        probs = torch.softmax(logits.masked_fill(~vis, float("-inf")), dim=-1)  # (B, H, n, m)
        o = gqa_weighted(probs[..., ns:], v[:, :, c0:c1])  # (B, H, n, Dv)
        if ns:
            o = o + gqa_weighted(probs[..., :ns], v_sink)
        out[:, lo:hi] = o.transpose(1, 2).to(out.dtype)  # (B, n, H, Dv)


def _observed_block(module, q, k, v, attention_mask, plan: AttentionPlan, scaling: float, out: torch.Tensor,
                    observe, block: tuple[int, int, int, int]) -> None:
    """One block of :func:`blockwise_attention` through the fused kernel's softmax (scores seen once)."""
    lo, hi, c0, c1 = block
    ns, Tk = plan.n_sink_cols, k.shape[2]
    qb = q[:, :, lo:hi]  # (B, H, n, D)
    parts = []
    if ns:
        qs = qb if plan.sink_shift is None else plan.rope.rotate(qb, plan.sink_shift[lo:hi].to(qb.device))
        parts.append(gqa_scores(qs, k[:, :, :ns]))  # (B, H, n, ns)
    parts.append(gqa_scores(qb, k[:, :, c0:c1]))  # (B, H, n, c1 - c0)
    logits = (torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]) * scaling  # (B, H, n, m)
    mask = attention_mask[:, :, lo:hi]
    vis = torch.cat([mask[..., :ns], mask[..., c0:c1]], dim=-1) if ns else mask[..., c0:c1]  # (1|B, 1, n, m)
    cols = torch.cat([torch.arange(ns), torch.arange(c0, c1)]) if ns else slice(c0, c1)
    probs = softmax_chunk(logits, vis, first_partial_column(vis), observe=observe, module=module, rows=(lo, hi),
                          cols=cols, n_keys=Tk)  # (B, H, n, m)
    o = gqa_weighted(probs[..., ns:], v[:, :, c0:c1])  # (B, H, n, Dv)
    if ns:
        o = o + gqa_weighted(probs[..., :ns], v[:, :, :ns])
    out[:, lo:hi] = o.transpose(1, 2).to(out.dtype)  # (B, n, H, Dv)


def _refuse_mask(*_args, **_kwargs):
    raise RuntimeError("the parallel attention needs the engine's prepared 4D mask; it builds no mask itself")


@contextmanager
def parallel_attention_enabled(model: torch.nn.Module) -> Iterator[None]:
    """Register :func:`parallel_attention` and switch ``model`` to it; restore the previous one on exit.

    Raises
    ------
    UserError
        When the model runs a custom attention (an intervention): replacing it would drop it silently.
        The attention probe's recording wrapper is fine: this attention calls the recorder itself.
    """
    purpose, fallback = "run the parallel engine on", "use --engine stepwise"
    check_switchable(model, purpose, fallback)
    previous = current_implementation(model)
    if previous not in REPLACEABLE and not str(previous).startswith(PROBE_PREFIX):
        raise UserError(f"the parallel engine replaces the attention function, so the model's current one "
                        f"({previous!r}, e.g. an intervention) would be dropped; use --engine batched or stepwise")
    guarded = guard_nonfinite(parallel_attention)  # a masked NaN value never leaks: 0 * NaN is NaN
    with attention_implementation(model, ATTN_NAME, guarded, _refuse_mask, purpose=purpose,
                                  fallback=fallback):
        yield
