"""A kvpress ``ScorerPress``-like object as a policy: its ``score`` ranks the keys, we keep the best.

kvpress (NVIDIA) scores keys with ``press.score(module, hidden_states, keys, values, attentions,
kwargs) -> (B, Hkv, n)`` (higher = keep) and keeps the top ones per KV head. Anything with that method
works here (kvpress itself is not a dependency: it pins an older transformers). The adapter calls it
at every eviction step with one layer's stored keys/values (1, Hkv, n, D), the last query's weights
``attentions`` (1, H, 1, n) and ``kwargs = {}``.

Departures from kvpress: ``hidden_states`` is ``None`` (eviction runs after the forward, when the
layer's input is gone; presses that need it, e.g. ``ExpectedAttentionPress``, fail with a clear
error), ``attentions`` holds the last query only, and the kept count is this policy's ``heavy_size``
plus its sinks and recent window rather than the press's ``compression_ratio``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from anomaly_probe.errors import UserError
from anomaly_probe.methods.base import LayerView
from anomaly_probe.methods.scored import ScoredEviction


def is_press(obj: object) -> bool:
    """True when ``obj`` has a callable ``score`` (a ScorerPress-like object or class)."""
    return callable(getattr(obj, "score", None))


@dataclass(frozen=True)
class PressPolicy(ScoredEviction):
    """Keep ``heavy_size`` keys per KV head by ``press.score`` (+ sinks and a recent window).

    Parameters
    ----------
    press : object
        Has ``score(module, hidden_states, keys, values, attentions, kwargs)``.
    spec : str
        How the press was named (``file.py:Class`` and its arguments), for the label.
    """

    name: ClassVar[str] = "press"
    needs_attention: ClassVar[bool] = True
    press: object = field(default=None, compare=False)
    spec: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not is_press(self.press):
            raise UserError(f"{self.spec or 'press'}: needs a score(module, hidden_states, keys, values, attentions, "
                            "kwargs) method")

    def label(self) -> str:
        """E.g. ``MyPress(heavy 128 + recent 128, in-cache)``."""
        return f"{self.spec or type(self.press).__name__}({self.options_text()}, {self.position_mode}{self.every_suffix()})"

    def score(self, view: LayerView) -> torch.Tensor:
        attentions = None if view.last_attention is None else view.last_attention[None, :, None, :]  # (1, H, 1, n)
        out = self.press.score(view.module, None, view.keys[None], view.values[None], attentions, {})
        if not isinstance(out, torch.Tensor):
            raise UserError(f"{self.label()}: score() returned a {type(out).__name__}; expected a tensor (B, Hkv, n)")
        return out[0] if out.dim() == 3 else out  # (Hkv, n)
