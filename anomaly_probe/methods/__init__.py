"""KV-cache methods: one small frozen dataclass per file, looked up by name.

>>> build_method("streaming_llm", sink_size=4, recent_size=252, position_mode="in-cache").capacity
256
>>> build_method("h2o", method_args=["heavy_size=64", "recent_size=64"]).label()
'h2o(heavy 64 + recent 64, in-cache)'
"""

from __future__ import annotations

from anomaly_probe.errors import UserError
from anomaly_probe.methods.base import POSITION_MODES, Ablation, CacheMethod, LayerView
from anomaly_probe.methods.full import FullCache
from anomaly_probe.methods.h2o import H2O
from anomaly_probe.methods.knorm import KNorm
from anomaly_probe.methods.kv_quant import KVQuant
from anomaly_probe.methods.recompute import RecomputeOracle
from anomaly_probe.methods.scored import ScoredEviction
from anomaly_probe.methods.streaming import StreamingLLM
from anomaly_probe.methods.tova import TOVA
from anomaly_probe.methods.window import WindowCache
from anomaly_probe.registry import Registry

METHODS: Registry[type[CacheMethod]] = Registry("method")
for _cls in (FullCache, StreamingLLM, WindowCache, RecomputeOracle, H2O, TOVA, KNorm, KVQuant):
    METHODS.register(_cls.name, _cls)

CLI_SIZED = ("streaming_llm", "window")
"""Methods sized by ``--sink-size``/``--recent-size``; every other policy takes ``--method-arg`` options."""


def build_method(
    name: str, *, sink_size: int = 4, recent_size: int = 252, position_mode: str = "in-cache",
    window: int | None = None, stride: int | None = None, compress_every: int = 1,
    method_args: list[str] | tuple[str, ...] = (),
) -> CacheMethod:
    """Build a method from CLI-style options; irrelevant options are ignored (window has no sinks).

    ``recompute`` takes ``window`` (required: give the model's trained context) and ``stride``
    (default ``window // 2``) and ignores the cache options. ``h2o``, ``tova``, ``knorm`` and user
    policies (``file.py:Class``, ``module:Class``) take their sizes from ``method_args``
    (``key=value``, typed by the dataclass fields) and ``position_mode``/``compress_every`` from the
    command line unless an option overrides them. ``kv_quant`` takes ``base=NAME`` (default ``full``);
    the options it does not know go to the base policy.
    """
    from anomaly_probe.methods.options import option_fields, split_options, typed_options
    from anomaly_probe.methods.user import is_user_spec, load_policy

    common = {"position_mode": position_mode, "compress_every": compress_every}
    if is_user_spec(name):
        return load_policy(name, method_args, common)
    cls = METHODS.get(name)
    if cls is FullCache:
        _no_options(name, method_args)
        return FullCache()
    if cls is RecomputeOracle:
        _no_options(name, method_args)
        if window is None:
            raise UserError("the recompute method needs a window (tokens per forward), e.g. the model's "
                            "trained context")
        return RecomputeOracle(window=window, stride=stride)
    if cls is KVQuant:
        options = split_options(method_args)
        own = {k for k in option_fields(KVQuant) if k not in ("sink_size", "recent_size")}
        mine = [f"{k}={v}" for k, v in options.items() if k in own]
        rest = [f"{k}={v}" for k, v in options.items() if k not in own]
        kwargs = typed_options(KVQuant, mine)
        base_name = str(kwargs.pop("base", "full"))
        if base_name in ("kv_quant", "recompute"):
            raise UserError(f"kv_quant: base={base_name} is not an eviction policy; use full, streaming_llm, window, "
                            "h2o, tova, knorm or file.py:Class")
        base = build_method(base_name, sink_size=sink_size, recent_size=recent_size, position_mode=position_mode,
                            compress_every=compress_every, method_args=rest)
        return KVQuant(base=base, **kwargs)
    if cls is WindowCache:
        kwargs = {"recent_size": sink_size + recent_size, **common}
    elif name in CLI_SIZED:
        kwargs = {"sink_size": sink_size, "recent_size": recent_size, **common}
    else:
        kwargs = dict(common)
    return cls(**(kwargs | typed_options(cls, method_args)))


def _no_options(name: str, method_args) -> None:
    if method_args:
        raise UserError(f"--method {name} takes no --method-arg options (got {', '.join(method_args)})")


__all__ = ["POSITION_MODES", "Ablation", "CacheMethod", "FullCache", "H2O", "KNorm", "KVQuant", "LayerView",
           "RecomputeOracle", "ScoredEviction", "StreamingLLM", "TOVA", "WindowCache", "METHODS", "build_method"]
