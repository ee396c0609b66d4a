"""A plain, chunked attention with explicit precision and top-k control (for interventions).

Used through :func:`use_attention`, which runs the model with it for the duration of a block
(:func:`~anomaly_probe.attention.switch.attention_implementation`, with sdpa's mask function so causal
masking is kept; restored and unregistered on exit). Masks are read with the shared converter
(:func:`~anomaly_probe.attention.masks.visible_from_mask`) and scores go through the shared GQA path
(:mod:`~anomaly_probe.attention.gqa`), in the recipe's compute dtype.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from anomaly_probe.attention import attention_implementation, gqa_scores, gqa_weighted, visible_from_mask

QUERY_CHUNK = 256  # queries per score block: (B, H, 256, Tk) floats at a time, never T x T


@dataclass(frozen=True)
class AttentionRecipe:
    """How to compute attention.

    Attributes
    ----------
    compute_dtype : torch.dtype
        Dtype of the score matmul, softmax and weighted sum.
    round_to : torch.dtype or None
        Emulate a half-precision backend: q, k, v and the logits are rounded to this dtype, and the
        softmax weights are cast to it (where fp16 underflow happens) before the weighted sum.
    topk : int or None
        Keep only each query's ``topk`` largest logits (others get zero weight).
    """

    compute_dtype: torch.dtype = torch.float32
    round_to: torch.dtype | None = None
    topk: int | None = None


def _key_span(visible: torch.Tensor) -> tuple[int, int]:
    """First and one-past-last key column visible to any query of ``visible`` (..., c, Tk).

    Dropping columns that are masked for every query is exact: their weight is exp(-inf) = 0 and they
    add exactly nothing to the softmax sum. For a causal chunk this skips the keys after its last query
    (about half the work of a full-sequence forward).
    """
    cols = visible.reshape(-1, visible.shape[-1]).any(dim=0).nonzero()
    if cols.numel() == 0:
        return 0, visible.shape[-1]
    return int(cols[0]), int(cols[-1]) + 1


def _first_partial_column(visible: torch.Tensor) -> int:
    """Index of the first key column of ``visible`` (..., c, Tk) hidden from some query (Tk if none).

    Columns before it need no masking: in a chunked forward over a long cache that is almost all of
    them, so the mask is applied to the last few columns only.
    """
    full = visible.reshape(-1, visible.shape[-2], visible.shape[-1]).all(dim=-2).all(dim=0)  # (Tk,)
    bad = (~full).nonzero()
    return int(bad[0]) if bad.numel() else visible.shape[-1]


def _round(x: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    return x if dtype is None else x.to(dtype).to(x.dtype)


def make_attention(recipe: AttentionRecipe) -> Callable:
    """Return an ``AttentionInterface``-compatible function implementing ``recipe``."""

    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        # query (B, H, Tq, D); key, value (B, Hkv, Tk, D)
        B, H, Tq, D = query.shape
        Tk = key.shape[-2]
        cd = recipe.compute_dtype
        k = _round(key.to(cd), recipe.round_to)  # (B, Hkv, Tk, D): GQA heads shared, not repeated
        v = _round(value.to(cd), recipe.round_to)
        scale = scaling if scaling is not None else D ** -0.5
        visible, bias = visible_from_mask(attention_mask, 0, Tq, Tq, Tk, query.device)  # (1|B, 1|H, Tq, Tk)
        if visible is None:  # one query, every key visible
            visible = torch.ones(1, 1, Tq, Tk, dtype=torch.bool, device=query.device)
        out = torch.empty(B, H, Tq, v.shape[-1], dtype=cd, device=query.device)
        for lo in range(0, Tq, QUERY_CHUNK):
            hi = min(lo + QUERY_CHUNK, Tq)
            vis = visible[..., lo:hi, :] if visible.shape[-2] > 1 else visible
            a, b = _key_span(vis)  # keys outside [a, b) are invisible to every query here
            q = _round(query[:, :, lo:hi].to(cd), recipe.round_to)
            logits = _round(gqa_scores(q * scale, k[:, :, a:b], dtype=cd), recipe.round_to)  # (B, H, c, b - a)
            if bias is not None:  # an additive float mask's biases on visible keys (sdpa adds them too)
                logits = logits + (bias[..., lo:hi, a:b] if bias.shape[-2] > 1 else bias[..., a:b]).to(cd)
            m = a + _first_partial_column(vis[..., a:b])  # keys [a, m) are visible to every query of the chunk
            if m < b:
                logits[..., m - a:].masked_fill_(~vis[..., m:b], float("-inf"))
            if recipe.topk is not None and recipe.topk < b - a:
                kth = logits.topk(recipe.topk, dim=-1, sorted=False).values.amin(-1, keepdim=True)  # (B, H, c, 1)
                logits = logits.masked_fill(logits < kth, float("-inf"))
            weights = torch.softmax(logits, dim=-1)
            weights = _round(weights, recipe.round_to)
            out[:, :, lo:hi] = gqa_weighted(weights, v[:, :, a:b])  # (B, H, c, Dv)
        return out.to(query.dtype).transpose(1, 2).contiguous(), None  # (B, Tq, H, D)

    return attention


@contextmanager
def use_attention(model: torch.nn.Module, name: str, fn: Callable) -> Iterator[str]:
    """Run ``model`` with ``fn`` (and sdpa's mask function) registered as ``name`` while the block runs.

    Yields the registered name; on exit the previous implementation is back and ``name`` is unregistered.
    """
    with attention_implementation(model, name, fn, "sdpa", purpose=f"use attention {name!r} with",
                                  fallback="load the model with attn_implementation='sdpa'") as registered:
        yield registered
