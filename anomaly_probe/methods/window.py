"""A plain sliding window: recent tokens only, no attention sinks (the sinks control)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from anomaly_probe.errors import UserError
from anomaly_probe.methods.base import CacheMethod


@dataclass(frozen=True)
class WindowCache(CacheMethod):
    """Keep the ``recent_size`` latest tokens. ``sink_size`` is always 0."""

    name: ClassVar[str] = "window"
    sink_size: int = 0
    recent_size: int = 256
    position_mode: str = "in-cache"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sink_size != 0:
            raise UserError("the window method keeps no sink tokens; use streaming_llm for sinks")
        if self.recent_size <= 0:
            raise UserError("--recent-size must be > 0 for the window method")

    @property
    def capacity(self) -> int:
        return self.recent_size

    def label(self) -> str:
        return f"window({self.recent_size}, {self.position_mode}{self.every_suffix()})"
