"""A plain, chunked attention with explicit precision and top-k control (for interventions).

The arithmetic is the shared fused kernel (:func:`~anomaly_probe.attention.fused.fused_attention`): scores
in query chunks over the keys the chunk can see, masks read by the one converter, GQA heads shared. This
module only names the recipes and registers them: :func:`use_attention` runs the model with one for the
duration of a block (:func:`~anomaly_probe.attention.switch.attention_implementation`, with sdpa's mask
function so causal masking is kept; restored and unregistered on exit).

The function :func:`make_attention` returns carries its recipe (``fn.recipe``): the attention probe, when
it wraps an intervention, runs the same kernel with the same recipe and reads its scores on the way, so
probing an intervention costs no second pass over the keys.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch

from anomaly_probe.attention import attention_implementation
from anomaly_probe.attention.fused import Recipe, fused_attention

AttentionRecipe = Recipe
"""How to compute attention (dtype, half-precision emulation, top-k): :class:`~anomaly_probe.attention.fused.Recipe`."""


def make_attention(recipe: AttentionRecipe) -> Callable:
    """Return an ``AttentionInterface``-compatible function implementing ``recipe`` (as ``fn.recipe``)."""

    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        # query (B, H, Tq, D); key, value (B, Hkv, Tk, D) -> (B, Tq, H, Dv)
        return fused_attention(module, query, key, value, attention_mask, scaling, recipe,
                               softcap=kwargs.get("softcap")), None

    attention.recipe = recipe
    return attention


@contextmanager
def use_attention(model: torch.nn.Module, name: str, fn: Callable) -> Iterator[str]:
    """Run ``model`` with ``fn`` (and sdpa's mask function) registered as ``name`` while the block runs.

    Yields the registered name; on exit the previous implementation is back and ``name`` is unregistered.
    """
    with attention_implementation(model, name, fn, "sdpa", purpose=f"use attention {name!r} with",
                                  fallback="load the model with attn_implementation='sdpa'") as registered:
        yield registered
