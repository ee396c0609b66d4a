"""The policy engines' attention: plain float32 attention (float64 for a float64 model) that also hands each
layer's weights over.

Score-based eviction (H2O, TOVA) needs the attention weights the model computed, which sdpa never
materialises. While :func:`policy_attention_enabled` is active the model runs :func:`capture_attention`
(registered with sdpa's mask function, so causal masking is kept) and, for every layer and forward, it
hands a :class:`Captured` to the :data:`CAPTURE` sink: the last query's weights per query head and
the weights summed over the forward's queries, averaged over the query heads of each KV head. The
same function runs in the stepwise and the chunked engine, so both compute the same numbers.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from anomaly_probe.attention import attention_implementation, causal_visible, gqa_scores, gqa_weighted, visible_from_mask
from anomaly_probe.attention.finite_guard import guard_nonfinite
from anomaly_probe.attention.hf import current_implementation
from anomaly_probe.errors import UserError
from anomaly_probe.step_context import ATTENTION_RECORDER, RECORDING_IMPLEMENTATION

ATTN_NAME = "anomaly_probe_policy"
REPLACEABLE = ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flash_attention_4", "flex_attention")


@dataclass
class Captured:
    """One layer's weights from one forward.

    Attributes
    ----------
    module : torch.nn.Module
        The attention module.
    last : torch.Tensor
        Weights of the forward's last query, per query head, shape (H, Tk), float32 (float64 for a float64 model).
    summed : torch.Tensor
        Weights summed over the forward's queries, averaged over each KV head's query heads, shape
        (Hkv, Tk), float32 (float64 for a float64 model).
    """

    module: torch.nn.Module
    last: torch.Tensor
    summed: torch.Tensor


CAPTURE: ContextVar[Callable[[int, Captured], None] | None] = ContextVar("anomaly_probe_policy_capture", default=None)
"""``sink(layer_idx, captured)``; set by the policy engines around each forward."""


def capture_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                      **kwargs) -> tuple[torch.Tensor, None]:
    """``AttentionInterface`` function: query (B, H, Tq, D), key/value (B, Hkv, Tk, D); returns (B, Tq, H, Dv)."""
    unsupported = [n for n in ("softcap", "sliding_window", "s_aux") if kwargs.get(n) is not None]
    if unsupported:
        raise UserError(f"the policy engines do not support attention with {', '.join(unsupported)}")
    B, H, Tq, D = query.shape
    Hkv, Tk = key.shape[1], key.shape[2]
    scale = scaling if scaling is not None else D ** -0.5
    visible, bias = visible_from_mask(attention_mask, 0, Tq, Tq, Tk, query.device)  # (1|B, 1|H, Tq, Tk)
    if visible is None:
        visible = causal_visible(Tq, Tk, query.device)
    work = torch.promote_types(query.dtype, torch.float32)  # float64 models stay float64 (the equality proof)
    logits = gqa_scores(query.to(work) * scale, key, dtype=work)  # (B, H, Tq, Tk)
    if bias is not None:
        logits = logits + bias.to(work)
    recorder = ATTENTION_RECORDER.get()
    if recorder is not None:
        recorder(module, logits, visible)
    probs = torch.softmax(logits.masked_fill(~visible, float("-inf")), dim=-1)  # (B, H, Tq, Tk)
    out = gqa_weighted(probs, value.to(work))  # (B, H, Tq, Dv)
    sink = CAPTURE.get()
    if sink is not None:
        p = probs[0]  # (H, Tq, Tk)
        summed = p.reshape(Hkv, H // Hkv, Tq, Tk).mean(dim=1).sum(dim=1)  # (Hkv, Tk)
        sink(int(module.layer_idx), Captured(module, p[:, -1].clone(), summed))
    return out.to(query.dtype).transpose(1, 2).contiguous(), None  # (B, Tq, H, Dv)


@contextmanager
def policy_attention_enabled(model: torch.nn.Module) -> Iterator[None]:
    """Run ``model`` with :func:`capture_attention` while the block runs; restore on exit.

    Raises
    ------
    UserError
        When the model runs a custom attention (an intervention), which would be dropped silently.
    """
    purpose, fallback = "run a score-based eviction policy on", "load the model with attn_implementation='sdpa'"
    previous = current_implementation(model)
    if previous not in REPLACEABLE and not str(previous).startswith(RECORDING_IMPLEMENTATION):
        raise UserError(f"the policy engines replace the attention function, so the model's current one "
                        f"({previous!r}, e.g. an intervention) would be dropped; use a full-cache or sinks + window "
                        "method with this intervention")
    # guarded: a chunked forward holds keys its earlier queries must not see (anomaly_probe.attention.finite_guard)
    with attention_implementation(model, ATTN_NAME, guard_nonfinite(capture_attention), "sdpa", purpose=purpose,
                                  fallback=fallback):
        yield
