"""Score-based eviction: sinks + the ``heavy_size`` best-scored middle keys + a recent window, per KV head.

The shared shape of H2O, TOVA, key-norm and any kvpress-style scorer: a subclass only says how to
score the cached keys of one layer (:meth:`ScoredEviction.score`, higher = keep); this class turns the
scores into head-wise kept sets. The first ``sink_size`` and the last ``recent_size`` slots of every
head are always kept (they are the first and the latest tokens: sinks never leave and the newest
tokens have not been evicted yet); the ``heavy_size`` best-scored of the others fill the rest.

Ties: scores are compared with :data:`SCORE_BITS` significant bits (relative steps of ~1e-3) and
equal ones go to the newer token. Exact ties are common (in the first layer a key's norm depends only
on its token), and float rounding noise (~1e-7, e.g. one query per forward vs a chunk) would otherwise
pick a different key in the stepwise and the chunked engine. kvpress compares raw scores. A score
within float32 noise of a 10-bit step can still flip; the engines' equality contract covers that
(:mod:`anomaly_probe.engines.chunked_equality`: float32 up to the first differing decision, float64 after).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from anomaly_probe.errors import UserError
from anomaly_probe.methods.base import CacheMethod, LayerView


SCORE_BITS = 10


def top_slots(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` highest of ``scores`` (Hkv, m) per row, compared with :data:`SCORE_BITS`
    significant bits, ties to the higher index (the newer token); shape (Hkv, k)."""
    mantissa, exponent = torch.frexp(scores.double())
    rounded = torch.ldexp(torch.round(mantissa * 2 ** SCORE_BITS), exponent).flip(-1)  # newest first
    order = rounded.sort(dim=-1, descending=True, stable=True).indices[:, :k]
    return scores.shape[-1] - 1 - order


@dataclass(frozen=True)
class ScoredEviction(CacheMethod):
    """Keep ``sink_size`` + ``heavy_size`` + ``recent_size`` slots per KV head, the heavy ones by score.

    Parameters
    ----------
    heavy_size : int
        Middle slots kept per KV head, chosen by :meth:`score`.
    sink_size, recent_size, position_mode, compress_every :
        As for every :class:`CacheMethod`.
    """

    name: ClassVar[str] = "scored"
    heavy_size: int = 128
    recent_size: int = 128
    position_mode: str = "in-cache"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.heavy_size < 0:
            raise UserError(f"heavy_size must be >= 0 (got {self.heavy_size})")
        if self.capacity <= 0:
            raise UserError(f"{self.name}: sink_size + heavy_size + recent_size must be > 0: a cache of zero "
                            "tokens keeps nothing")

    @property
    def capacity(self) -> int:
        return self.sink_size + self.heavy_size + self.recent_size

    def options_text(self) -> str:
        """``heavy 128 + recent 128`` (with ``sink 4 + `` in front when there are sinks)."""
        parts = [f"sink {self.sink_size}"] if self.sink_size else []
        parts.append(f"heavy {self.heavy_size}")
        if self.recent_size:
            parts.append(f"recent {self.recent_size}")
        return " + ".join(parts)

    def label(self) -> str:
        """E.g. ``h2o(heavy 128 + recent 128, in-cache)``."""
        return f"{self.name}({self.options_text()}, {self.position_mode}{self.every_suffix()})"

    def score(self, view: LayerView) -> torch.Tensor:
        """Per-slot scores of one layer, shape (Hkv, n), higher = keep. Subclasses implement it."""
        raise NotImplementedError

    def keep_heads(self, view: LayerView) -> torch.Tensor | None:
        n = view.n
        if n <= self.capacity:
            return None
        hkv = view.keys.shape[0]
        device = view.keys.device
        s, r = min(self.sink_size, n), self.recent_size
        middle = torch.arange(s, n - r, device=device)  # (m,) slots that compete on score
        scores = self.score(view)  # (Hkv, n)
        if scores.shape != (hkv, n):
            raise UserError(f"{self.label()}: score() returned shape {tuple(scores.shape)}, expected ({hkv}, {n}) "
                            "(one score per KV head and cached slot)")
        best = top_slots(scores[:, middle], self.heavy_size)  # (Hkv, heavy) indices into middle
        fixed = torch.cat([torch.arange(s, device=device), torch.arange(n - r, n, device=device)])
        kept = torch.cat([fixed[None].expand(hkv, -1), middle[best]], dim=-1)  # (Hkv, capacity)
        return kept.sort(dim=-1).values
