"""Key-norm eviction: keep the keys with the lowest L2 norm.

Devoto et al., "A Simple and Effective L2 Norm-Based Strategy for KV Cache Compression", EMNLP 2024
(arXiv:2406.11430): keys with a low norm tend to draw high attention, so they are kept. The norm is
taken on the stored (rotated) key, which RoPE does not change. No attention weights are needed.

Simplification: the paper compresses a prefilled cache once; here the rule runs at every eviction
step of the evaluation loop, like kvpress's ``KnormPress`` inside its decoding press.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from anomaly_probe.methods.base import LayerView
from anomaly_probe.methods.scored import ScoredEviction


@dataclass(frozen=True)
class KNorm(ScoredEviction):
    """Keep the ``heavy_size`` lowest-norm keys per KV head (default 256, no recent window)."""

    name: ClassVar[str] = "knorm"
    heavy_size: int = 256
    recent_size: int = 0

    def score(self, view: LayerView) -> torch.Tensor:
        return -view.keys.float().norm(dim=-1)  # (Hkv, n)
