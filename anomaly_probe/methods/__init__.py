"""KV-cache methods: one small frozen dataclass per file, looked up by name.

>>> build_method("streaming_llm", sink_size=4, recent_size=252, position_mode="in-cache").capacity
256
"""

from __future__ import annotations

from anomaly_probe.errors import UserError
from anomaly_probe.methods.base import POSITION_MODES, CacheMethod
from anomaly_probe.methods.full import FullCache
from anomaly_probe.methods.recompute import RecomputeOracle
from anomaly_probe.methods.streaming import StreamingLLM
from anomaly_probe.methods.window import WindowCache
from anomaly_probe.registry import Registry

METHODS: Registry[type[CacheMethod]] = Registry("method")
for _cls in (FullCache, StreamingLLM, WindowCache, RecomputeOracle):
    METHODS.register(_cls.name, _cls)


def build_method(
    name: str, *, sink_size: int = 4, recent_size: int = 252, position_mode: str = "in-cache",
    window: int | None = None, stride: int | None = None,
) -> CacheMethod:
    """Build a method from CLI-style options; irrelevant options are ignored (window has no sinks).

    ``recompute`` takes ``window`` (required: give the model's trained context) and ``stride``
    (default ``window // 2``) and ignores the cache options.
    """
    cls = METHODS.get(name)
    if cls is FullCache:
        return FullCache()
    if cls is RecomputeOracle:
        if window is None:
            raise UserError("the recompute method needs a window (tokens per forward), e.g. the model's "
                            "trained context")
        return RecomputeOracle(window=window, stride=stride)
    if cls is WindowCache:
        return WindowCache(recent_size=sink_size + recent_size, position_mode=position_mode)
    return cls(sink_size=sink_size, recent_size=recent_size, position_mode=position_mode)


__all__ = ["POSITION_MODES", "CacheMethod", "FullCache", "RecomputeOracle", "StreamingLLM", "WindowCache", "METHODS",
           "build_method"]
