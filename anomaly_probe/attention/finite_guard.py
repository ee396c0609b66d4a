"""Keep a non-finite key or value from leaking into queries that cannot see it.

A forward that scores many queries at once holds keys that some of its queries must not see (the
chunk's later tokens under a causal mask, tokens outside a query's window). Masking gives them a
softmax weight of exactly 0, but ``0 * NaN`` is NaN and ``NaN + (-inf)`` is NaN: one non-finite key or
value at token ``p`` makes every earlier query of its chunk non-finite. The stepwise engine, which
never holds a key its query cannot see, puts the first non-finite NLL at ``p``; a chunked engine
would put it at the chunk's first query. So the numerics finding would name the wrong token.

:func:`guard_nonfinite` wraps an attention function. When every key and value is finite (the normal
case) it calls the wrapped function with the very same arguments, so results are bit-identical.
Otherwise it zeroes the non-finite key/value rows, calls the wrapped function, and sets to NaN the
output of every (query, head) that *sees* one of them: what the query computes by itself, one token
per forward (a visible non-finite key gives a NaN score, hence a NaN softmax row). A visible key
whose score would be exactly ``-inf`` (weight 0, finite output one token at a time) is also marked
NaN here: a float32 key cannot reach that without being non-finite itself in practice.

:func:`finite_guard` runs a model's *current* attention (sdpa, eager, an intervention's, the probe's
recording wrapper) through the guard for the duration of a block, with the same mask function, under
the name ``<current>+finite_guard``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch

from anomaly_probe.attention import hf
from anomaly_probe.attention.masks import visible_from_mask
from anomaly_probe.attention.switch import attention_implementation

GUARD_SUFFIX = "+finite_guard"
"""Appended to the wrapped implementation's name (``sdpa+finite_guard``): the name still says what runs."""


def guard_nonfinite(attention_fn: Callable) -> Callable:
    """An ``AttentionInterface`` function: ``attention_fn``, with masked non-finite keys kept out.

    Parameters
    ----------
    attention_fn : callable
        ``fn(module, query (B, H, Tq, D), key (B, Hkv, Tk, D), value (B, Hkv, Tk, Dv), attention_mask,
        ...)`` returning ``(output (B, Tq, H, Dv), weights or None)``; the mask is ``None`` or a 4D
        tensor (see :func:`~anomaly_probe.attention.masks.visible_from_mask`).
    """

    def finite_guarded_attention(module, query, key, value, attention_mask, *args, **kwargs):
        bad = _bad_keys(key, value)  # (B, Hkv, Tk) or None
        if bad is None:
            return attention_fn(module, query, key, value, attention_mask, *args, **kwargs)
        clean_k = key.masked_fill(bad[..., None], 0.0)
        clean_v = value.masked_fill(bad[..., None], 0.0)
        out, weights = attention_fn(module, query, clean_k, clean_v, attention_mask, *args, **kwargs)
        Tq, Tk = query.shape[2], key.shape[2]
        sees_bad = _rows_seeing(bad, attention_mask, query.shape[1], Tq, Tk, query.device)  # (B, H, Tq)
        out = out.masked_fill(sees_bad.transpose(1, 2)[..., None], float("nan"))  # (B, Tq, H, Dv)
        return out, weights

    return finite_guarded_attention


def _bad_keys(key: torch.Tensor, value: torch.Tensor) -> torch.Tensor | None:
    """Key positions with a non-finite key or value, shape (B, Hkv, Tk), or None when all are finite.

    A float32 sum is finite when every entry is (a NaN or inf propagates); it is one fast reduction,
    ~10x cheaper than ``isfinite(...).all()`` and under 1% of the attention it guards. Only when a sum
    is not finite (or overflowed, which the exact test then clears) are the entries examined.
    """
    if bool(torch.isfinite(key.sum(dtype=torch.float32))) and bool(torch.isfinite(value.sum(dtype=torch.float32))):
        return None
    bad = ~(torch.isfinite(key).all(dim=-1) & torch.isfinite(value).all(dim=-1))  # (B, Hkv, Tk)
    return bad if bool(bad.any()) else None


def _rows_seeing(bad: torch.Tensor, attention_mask, n_heads: int, Tq: int, Tk: int,
                 device: torch.device) -> torch.Tensor:
    """Which (batch, query head, query) sees a bad key: bool, shape (B, H, Tq).

    Query head ``h`` reads key head ``h // G`` (:mod:`~anomaly_probe.attention.gqa`).
    """
    B, Hkv, _ = bad.shape
    bad_h = bad.repeat_interleave(n_heads // Hkv, dim=1)  # (B, H, Tk)
    visible, _bias = visible_from_mask(attention_mask, 0, Tq, Tq, Tk, device)  # (1|B, 1|H, Tq|1, Tk) or None
    if visible is None:  # one query, every key visible
        return bad_h.any(dim=-1, keepdim=True).expand(B, n_heads, Tq)
    cols = bad_h.any(dim=1).any(dim=0).nonzero().flatten()  # (n_bad,) columns bad for some head
    vis = visible[..., cols].to(torch.float32)  # (1|B, 1|H, Tq|1, n_bad)
    hits = vis @ bad_h[..., cols].to(torch.float32)[..., None]  # (B, H, Tq|1, 1)
    return (hits[..., 0] > 0).expand(B, n_heads, Tq)


@contextmanager
def finite_guard(model: torch.nn.Module) -> Iterator[None]:
    """Run ``model``'s current attention through :func:`guard_nonfinite` while the block runs.

    A model whose attention cannot be wrapped (not switchable by name, or masks that are not ``None``
    or a 4D tensor: flash, flex) runs unguarded: its chunked engines may then place a NaN at the first
    query of the chunk that holds it.
    """
    current = hf.current_implementation(model) if hf.is_switchable_model(model) else None
    fn = hf.attention_function(model, current) if current is not None else None
    if (fn is None or not hf.dispatches_by_name(model) or not hf.has_tensor_mask(current)
            or GUARD_SUFFIX in str(current)):
        yield
        return
    with attention_implementation(model, f"{current}{GUARD_SUFFIX}", guard_nonfinite(fn), current,
                                  purpose="guard the attention of"):
        yield
