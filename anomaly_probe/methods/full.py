"""The uncompressed baseline: every key is kept at its absolute position."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from anomaly_probe.methods.base import CacheMethod


@dataclass(frozen=True)
class FullCache(CacheMethod):
    """Full KV cache. A real object, not ``None``, so runners need no special case."""

    name: ClassVar[str] = "full"

    def label(self) -> str:
        return "full"
