"""The engine-probe step contract: what the engine is doing right now, published for probes.

Before every forward an engine sets :data:`CURRENT_STEP` to a :class:`StepInfo` describing which
absolute tokens are queries and keys and at which RoPE positions. Attention probes read it (a context
variable, not a global), and after the forward the engine calls ``observer.after_forward`` so cache and
process probes can measure. This module is neutral ground: engines and probes both import it and
neither imports the other (it imports nothing of ours).
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Callable, Protocol

import torch


@dataclass
class StepInfo:
    """One forward pass as the engine sees it.

    Attributes
    ----------
    q_abs : torch.Tensor
        Absolute token index of each query, shape (Tq,), int64, CPU.
    k_abs : torch.Tensor
        Absolute token index of each key the attention receives (cache slots then new tokens),
        shape (Tk,), int64, CPU.
    q_pos : torch.Tensor
        RoPE position of each query, shape (Tq,).
    k_pos : torch.Tensor or None
        RoPE position of each key, shape (Tk,); ``None`` where it depends on the query
        (in-cache parallel evaluation).
    sink_size : int
        Leading tokens that count as attention sinks for the sink-mass statistic.
    visible : torch.Tensor or None
        Boolean (Tq, Tk) mask of which keys each query attends to; ``None`` means causal over ``k_abs``.
    """

    q_abs: torch.Tensor
    k_abs: torch.Tensor
    q_pos: torch.Tensor
    k_pos: torch.Tensor | None
    sink_size: int
    visible: torch.Tensor | None = None


CURRENT_STEP: ContextVar[StepInfo | None] = ContextVar("anomaly_probe_current_step", default=None)


class StepObserver(Protocol):
    """Receives a callback after every forward (cache and process probes)."""

    def after_forward(self, info: StepInfo, cache, seconds: float) -> None:  # pragma: no cover - protocol
        ...


AttentionRecorder = Callable[[torch.nn.Module, torch.Tensor, "torch.Tensor | None"], None]
"""``recorder(module, logits, visible)`` -- see :data:`ATTENTION_RECORDER`."""

ATTENTION_RECORDER: ContextVar[AttentionRecorder | None] = ContextVar("anomaly_probe_attention_recorder",
                                                                      default=None)
"""Set by the attention probe while it is attached.

Any attention function that computes its own scores (the probe's recording wrapper, the parallel
engine's attention) calls it once per layer and forward with ``module`` (the attention module; its
``layer_idx`` names the layer), ``logits``: float32 scaled scores before masking, shape
(B, H, Tq, Tk) with GQA keys already repeated, and ``visible``: boolean keys-attended mask
broadcastable to (B, H, Tq, Tk), or ``None`` for all keys. Callers may call it several times per
forward on disjoint query chunks (rows of ``CURRENT_STEP.get().q_abs`` in order) to bound memory.
"""

RECORDING_IMPLEMENTATION = "anomaly_probe_record"
"""Attention-implementation name (prefix) of the attention probe's recording wrapper.

The probe registers its wrapper under this name (``_2``, ``_3``... if taken). An engine that replaces
the attention function may replace the wrapper: its own attention calls :data:`ATTENTION_RECORDER`.
"""
