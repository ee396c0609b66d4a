"""StreamingLLM: attention sinks plus a window of recent tokens (Xiao et al., 2023)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from anomaly_probe.errors import UserError
from anomaly_probe.methods.base import CacheMethod


@dataclass(frozen=True)
class StreamingLLM(CacheMethod):
    """Keep ``sink_size`` first tokens and ``recent_size`` latest ones (default 4 + 252 = 256)."""

    name: ClassVar[str] = "streaming_llm"
    sink_size: int = 4
    recent_size: int = 252
    position_mode: str = "in-cache"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sink_size + self.recent_size <= 0:
            raise UserError("--sink-size + --recent-size must be > 0: a cache of zero tokens keeps nothing")

    @property
    def capacity(self) -> int:
        return self.sink_size + self.recent_size

    def label(self) -> str:
        return f"streaming_llm({self.sink_size}+{self.recent_size}, {self.position_mode}{self.every_suffix()})"
