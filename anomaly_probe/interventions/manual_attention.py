"""A plain, chunked attention with explicit precision and top-k control (for interventions).

Used through :func:`use_attention`, which registers it with transformers' ``AttentionInterface``
(together with the sdpa mask function, so causal masking is kept), switches the model to it and
restores the previous implementation in ``finally``.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch

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


def _visible(attention_mask, B, Tq, Tk, device) -> torch.Tensor:
    """Boolean (B or 1, 1, Tq, Tk) mask of attended keys from whatever the mask function produced."""
    if attention_mask is None:
        # sdpa's mask function skips the plain causal case; queries are the last Tq of the keys.
        q = torch.arange(Tk - Tq, Tk, device=device)[:, None]
        return (torch.arange(Tk, device=device)[None, :] <= q)[None, None]
    if attention_mask.dtype == torch.bool:
        return attention_mask
    return attention_mask > torch.finfo(attention_mask.dtype).min / 2  # additive float mask


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


def make_attention(recipe: AttentionRecipe):
    """Return an ``AttentionInterface``-compatible function implementing ``recipe``."""

    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        # query (B, H, Tq, D); key, value (B, Hkv, Tk, D)
        B, H, Tq, D = query.shape
        Tk = key.shape[-2]
        groups = H // key.shape[1]
        cd = recipe.compute_dtype
        k = _round(key.to(cd), recipe.round_to).repeat_interleave(groups, dim=1)  # (B, H, Tk, D)
        v = _round(value.to(cd), recipe.round_to).repeat_interleave(groups, dim=1)
        scale = scaling if scaling is not None else D ** -0.5
        visible = _visible(attention_mask, B, Tq, Tk, query.device)
        out = torch.empty(B, H, Tq, v.shape[-1], dtype=cd, device=query.device)
        for lo in range(0, Tq, QUERY_CHUNK):
            hi = min(lo + QUERY_CHUNK, Tq)
            vis = visible[..., lo:hi, :]
            a, b = _key_span(vis)  # keys outside [a, b) are invisible to every query here
            q = _round(query[:, :, lo:hi].to(cd), recipe.round_to)
            logits = _round((q * scale) @ k[:, :, a:b].transpose(-1, -2), recipe.round_to)  # (B, H, c, b - a)
            m = a + _first_partial_column(vis[..., a:b])  # keys [a, m) are visible to every query of the chunk
            if m < b:
                logits[..., m - a:].masked_fill_(~vis[..., m:b], float("-inf"))
            if recipe.topk is not None and recipe.topk < b - a:
                kth = logits.topk(recipe.topk, dim=-1, sorted=False).values.amin(-1, keepdim=True)  # (B, H, c, 1)
                logits = logits.masked_fill(logits < kth, float("-inf"))
            weights = torch.softmax(logits, dim=-1)
            weights = _round(weights, recipe.round_to)
            out[:, :, lo:hi] = weights @ v[:, :, a:b]
        return out.to(query.dtype).transpose(1, 2).contiguous(), None  # (B, Tq, H, D)

    return attention


@contextmanager
def use_attention(model: torch.nn.Module, name: str, fn) -> Iterator[None]:
    """Register ``fn`` (and sdpa's mask function) as ``name`` and switch ``model`` to it."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(name, fn)
    AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    previous = model.config._attn_implementation
    model.set_attn_implementation(name)
    try:
        yield
    finally:
        model.set_attn_implementation(previous)
