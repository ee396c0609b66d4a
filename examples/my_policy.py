"""A user KV-cache policy, as the README shows it: keep the keys whose *values* are largest.

Run it (``--method-arg`` options are typed by the dataclass fields):

    anomaly-probe run --model tiny-neox --max-tokens 400 --hypothesis none \
        --method examples/my_policy.py:ValueNorm --method-arg heavy_size=48 --method-arg recent_size=16
    anomaly-probe check --method examples/my_policy.py:ValueNorm --method-arg heavy_size=48

``KeyNormPress`` shows the other accepted shape: any object with kvpress's ``ScorerPress.score``
signature (kvpress itself is not needed):

    anomaly-probe run --model tiny-neox --max-tokens 400 --hypothesis none \
        --method examples/my_policy.py:KeyNormPress --method-arg heavy_size=48
"""

from dataclasses import dataclass

import torch

from anomaly_probe.methods import LayerView, ScoredEviction


@dataclass(frozen=True)
class ValueNorm(ScoredEviction):
    """Sinks + ``heavy_size`` keys with the largest value norm + ``recent_size`` recent keys, per KV head."""

    name = "value_norm"
    heavy_size: int = 192
    recent_size: int = 64

    def score(self, view: LayerView) -> torch.Tensor:
        return view.values.float().norm(dim=-1)  # (Hkv, n): higher = keep


@dataclass
class KeyNormPress:
    """kvpress-style scorer: low key norm = high score (like kvpress' KnormPress)."""

    compression_ratio: float = 0.0  # unused here: the policy's sizes decide how many keys stay

    def score(self, module, hidden_states, keys, values, attentions, kwargs):
        return -keys.norm(dim=-1)  # (B, Hkv, n)
