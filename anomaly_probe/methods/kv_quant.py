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
from anomaly_probe.methods.base import Ablation, CacheMethod, LayerView
from anomaly_probe.methods.full import FullCache

GROUPINGS = ("channel", "token")


def fake_quantize(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int) -> torch.Tensor:
    """Round ``x`` to ``2**bits`` levels between ``lo`` and ``hi`` (broadcasting), in float32; x's dtype out."""
    levels = 2 ** bits - 1
    scale = (hi - lo).clamp_min(1e-8) / levels
    q = ((x.float() - lo) / scale).round().clamp(0, levels)
    return (q * scale + lo).to(x.dtype)


def quantize_per_token(x: torch.Tensor, group: int, bits: int) -> torch.Tensor:
    """Each token's vector in groups of ``group`` channels: x (Hkv, n, D) -> same shape."""
    hkv, n, d = x.shape
    g = min(group, d)
    if d % g:
        raise UserError(f"kv_quant: head dimension {d} is not a multiple of group_size {g}")
    xg = x.float().reshape(hkv, n, d // g, g)  # (Hkv, n, D/g, g)
    out = fake_quantize(xg, xg.amin(-1, keepdim=True), xg.amax(-1, keepdim=True), bits)
    return out.reshape(hkv, n, d).to(x.dtype)


def quantize_per_channel(x: torch.Tensor, members: torch.Tensor, bits: int) -> torch.Tensor:
    """Each channel over the slots in ``members`` (Hkv, n) bool, per head: x (Hkv, n, D) -> same shape."""
    m = members[..., None]  # (Hkv, n, 1)
    xf = x.float()
    lo = torch.where(m, xf, torch.inf).amin(dim=1, keepdim=True)  # (Hkv, 1, D)
    hi = torch.where(m, xf, -torch.inf).amax(dim=1, keepdim=True)
    lo, hi = torch.where(torch.isfinite(lo), lo, 0.0), torch.where(torch.isfinite(hi), hi, 0.0)
    return torch.where(m, fake_quantize(xf, lo, hi, bits), xf).to(x.dtype)


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
        for x, how in ((keys, self.key_group), (values, self.value_group)):
            if how == "token":
                q = quantize_per_token(x, G, self.bits)
                out.append(torch.where(done[..., None], q, x))
            else:
                for g in range(first, stop):
                    x = quantize_per_channel(x, group == g, self.bits)
                out.append(x)
        return out[0], out[1]

    def ablations(self) -> tuple[Ablation, ...]:
        """The same policy unquantised (does the quantisation matter?)."""
        return (Ablation("unquantised", self.base, f"removing the int{self.bits} quantisation (the same cache in the model's dtype)"),)
