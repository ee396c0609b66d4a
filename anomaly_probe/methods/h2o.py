"""H2O: heavy hitters by accumulated attention, plus a recent window.

Zhang et al., "H2O: Heavy-Hitter Oracle for Efficient Generative Inference of Large Language Models",
NeurIPS 2023 (arXiv:2306.14048). A key's score is the attention it has received, summed over every
query since it entered the cache; the ``heavy_size`` highest are kept besides the recent tokens.

Simplifications: the paper keeps a set per attention head; we keep one per KV head with the weights
averaged over the query heads that share it (kvpress does the same for GQA models), and the
accumulated score of a kept key is carried as is across evictions (not renormalised).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from anomaly_probe.methods.base import LayerView
from anomaly_probe.methods.scored import ScoredEviction


@dataclass(frozen=True)
class H2O(ScoredEviction):
    """Keep ``heavy_size`` heavy hitters + ``recent_size`` recent tokens per KV head (default 128 + 128)."""

    name: ClassVar[str] = "h2o"
    needs_attention: ClassVar[bool] = True
    heavy_size: int = 128
    recent_size: int = 128

    def score(self, view: LayerView) -> torch.Tensor:
        return view.accumulated  # (Hkv, n)
