"""Quantised KV cache: the full cache or any eviction policy, with stored K/V rounded to int8 or int4.

KIVI: Liu et al., "KIVI: A Tuning-Free Asymmetric 2bit Quantization for KV Cache", ICML 2024
(arXiv:2402.02750). Asymmetric min/max quantisation; keys per channel (a group is ``group_size``
consecutive tokens of one channel), values per token (a group is ``group_size`` consecutive channels of
one token). As in KIVI the newest tokens stay in full precision until their group of ``group_size``
tokens is complete (the residual); then the group is quantised once and stays so. Dequantised values
are stored in the model's dtype (a round trip), so attention runs unchanged.

Simplifications: quantisation is emulated (dequantised values are stored, no packed integers, so
memory is not saved); a group is the same ``group_size`` for both axes; keys are rounded as stored
(rotated by RoPE at their insertion position, like KIVI's post-RoPE cache). When an eviction policy
dropped some tokens of a group before it completed, the survivors form the group.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from anomaly_probe.errors import UserError
from anomaly_probe.methods.base import Ablation, CacheMethod, LayerView, record_decision
from anomaly_probe.methods.full import FullCache

GROUPINGS = ("channel", "token")


def _work(x: torch.Tensor) -> torch.dtype:
    """float32, or float64 for a float64 ``x`` (the engines' float64 equality proof stays float64)."""
    return torch.promote_types(x.dtype, torch.float32)


def quantize_levels(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer levels of ``x`` on ``2**bits`` steps between ``lo`` and ``hi`` (broadcasting), and the step.

    Returns
    -------
    tuple of torch.Tensor
        ``levels`` (x's shape, integers 0..2**bits-1 stored as floats) and ``scale`` (broadcast shape of
        lo/hi), both in float32 (float64 for a float64 ``x``).
    """
    top = 2 ** bits - 1
    scale = (hi - lo).clamp_min(1e-8) / top
    return ((x.to(_work(x)) - lo) / scale).round().clamp(0, top), scale


def fake_quantize(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int) -> torch.Tensor:
    """Round ``x`` to ``2**bits`` levels between ``lo`` and ``hi`` (broadcasting), in float32 (float64 for
    float64); x's dtype out."""
    q, scale = quantize_levels(x, lo, hi, bits)
    return (q * scale + lo).to(x.dtype)


def quantize_per_token(x: torch.Tensor, group: int, bits: int, rows: torch.Tensor | None = None,
                       kind: str = "V levels") -> torch.Tensor:
    """Each token's vector in groups of ``group`` channels: x (Hkv, n, D) -> same shape.

    ``rows`` (Hkv, n) bool: the slots to round (all when ``None``; the others are returned unchanged);
    their levels go to :func:`~anomaly_probe.methods.base.record_decision` as ``kind``.
    """
    hkv, n, d = x.shape
    g = min(group, d)
    if d % g:
        raise UserError(f"kv_quant: head dimension {d} is not a multiple of group_size {g}")
    xg = x.to(_work(x)).reshape(hkv, n, d // g, g)  # (Hkv, n, D/g, g)
    lo, hi = xg.amin(-1, keepdim=True), xg.amax(-1, keepdim=True)  # (Hkv, n, D/g, 1)
    q, scale = quantize_levels(xg, lo, hi, bits)
    out = (q * scale + lo).reshape(hkv, n, d).to(x.dtype)
    if rows is None:
        rows = torch.ones(hkv, n, dtype=torch.bool, device=x.device)
    record_decision(kind, q.reshape(hkv, n, d)[rows].to(torch.uint8))  # (n_rounded, D)
    return torch.where(rows[..., None], out, x)


def quantize_per_channel(x: torch.Tensor, members: torch.Tensor, bits: int, kind: str = "K levels") -> torch.Tensor:
    """Each channel over the slots in ``members`` (Hkv, n) bool, per head: x (Hkv, n, D) -> same shape.

    The members' levels go to :func:`~anomaly_probe.methods.base.record_decision` as ``kind``."""
    m = members[..., None]  # (Hkv, n, 1)
    xf = x.to(_work(x))
    lo = torch.where(m, xf, torch.inf).amin(dim=1, keepdim=True)  # (Hkv, 1, D)
    hi = torch.where(m, xf, -torch.inf).amax(dim=1, keepdim=True)
    lo, hi = torch.where(torch.isfinite(lo), lo, 0.0), torch.where(torch.isfinite(hi), hi, 0.0)
    q, scale = quantize_levels(xf, lo, hi, bits)
    record_decision(kind, q[members].to(torch.uint8))  # (n_members, D)
    return torch.where(m, q * scale + lo, xf).to(x.dtype)


@dataclass(frozen=True)
class KVQuant(CacheMethod):
    """``base``'s cache with its stored keys and values rounded to ``bits`` bits.

    Parameters
    ----------
    base : CacheMethod
        The eviction policy (or the full cache) that decides what is kept.
    bits : int
        8 or 4.
    key_group, value_group : str
        ``channel`` (a group spans ``group_size`` tokens of one channel) or ``token`` (``group_size``
        channels of one token). KIVI: keys per channel, values per token (the defaults).
    group_size : int
        Tokens per group (and channels per group for per-token groups); also the residual length.
    position_mode, compress_every : str or None, int or None
        ``None``: the base's; given: passed down to the base.
    """

    name: ClassVar[str] = "kv_quant"
    base: CacheMethod = field(default_factory=FullCache)
    bits: int = 4
    key_group: str = "channel"
    value_group: str = "token"
    group_size: int = 32
    position_mode: str | None = None  # type: ignore[assignment]
    compress_every: int | None = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if not isinstance(self.base, CacheMethod) or isinstance(self.base, KVQuant):
            raise UserError("kv_quant wraps the full cache or one eviction policy (base=full, h2o, ...)")
        base = self.base
        for name in ("position_mode", "compress_every"):
            mine = getattr(self, name)
            if mine is None:
                object.__setattr__(self, name, getattr(base, name))
            elif mine != getattr(base, name):
                base = dataclasses.replace(base, **{name: mine})
        object.__setattr__(self, "base", base)
        object.__setattr__(self, "sink_size", base.sink_size)
        object.__setattr__(self, "recent_size", base.recent_size)
        super().__post_init__()
        if self.bits not in (4, 8):
            raise UserError(f"kv_quant: bits must be 8 or 4 (got {self.bits})")
        for what in (self.key_group, self.value_group):
            if what not in GROUPINGS:
                raise UserError(f"kv_quant: grouping {what!r} unknown; use channel or token")
        if self.group_size < 1:
            raise UserError(f"kv_quant: group_size must be >= 1 (got {self.group_size})")

    @property
    def needs_attention(self) -> bool:  # type: ignore[override]
        return self.base.needs_attention

    @property
    def capacity(self) -> int | None:
        return self.base.capacity

    def label(self) -> str:
        """E.g. ``kv_quant(int4 K/channel V/token g32, full)``."""
        return (f"kv_quant(int{self.bits} K/{self.key_group} V/{self.value_group} g{self.group_size}, "
                f"{self.base.label()})")

    def keep(self, n_cached: int) -> torch.Tensor | None:
        return self.base.keep(n_cached)

    def keep_heads(self, view: LayerView) -> torch.Tensor | None:
        return self.base.keep_heads(view)

    def quantize(self, keys: torch.Tensor, values: torch.Tensor, positions: torch.Tensor,
                 seen_before: int, seen: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        G = self.group_size
        first, stop = seen_before // G, seen // G  # groups completed by this forward: [first, stop)
        group = torch.div(positions, G, rounding_mode="floor")  # (Hkv, n)
        done = (group >= first) & (group < stop)
        if stop == first or not bool(done.any()):
            return None
        out = []
        for x, how, what in ((keys, self.key_group, "K"), (values, self.value_group, "V")):
            if how == "token":
                out.append(quantize_per_token(x, G, self.bits, done, f"{what} levels"))
            else:
                for g in range(first, stop):
                    x = quantize_per_channel(x, group == g, self.bits, f"{what} levels")
                out.append(x)
        return out[0], out[1]

    def ablations(self) -> tuple[Ablation, ...]:
        """The same policy unquantised (does the quantisation matter?)."""
        return (Ablation("unquantised", self.base, f"removing the int{self.bits} quantisation (the same cache in the model's dtype)"),)
