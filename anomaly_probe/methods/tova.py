"""TOVA: keep the keys the last query attends to most.

Oren et al., "Transformers are Multi-State RNNs", 2024 (arXiv:2401.06104), Token Omission Via
Attention. At each step the key with the lowest attention weight from the newest query is dropped.

Simplifications: the paper averages the weights over all heads of a layer and keeps one set per
layer; we average over the query heads of each KV head and keep a set per KV head (the issue's and
kvpress's granularity). With ``compress_every`` > 1 several keys go at once, ranked by the last query
of the interval. Sinks and a recent window are options (default none, as in the paper).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from anomaly_probe.methods.base import LayerView
from anomaly_probe.methods.scored import ScoredEviction


@dataclass(frozen=True)
class TOVA(ScoredEviction):
    """Keep the ``heavy_size`` keys with the highest weight from the last query (default 256)."""

    name: ClassVar[str] = "tova"
    needs_attention: ClassVar[bool] = True
    heavy_size: int = 256
    recent_size: int = 0

    def score(self, view: LayerView) -> torch.Tensor:
        hkv = view.keys.shape[0]
        w = view.last_attention  # (H, n)
        return w.view(hkv, w.shape[0] // hkv, -1).mean(dim=1)  # (Hkv, n): query head h reads KV head h // G
