"""The fast path of the parallel attention: all query blocks of a forward in a few batched matmuls.

A sinks + recent-window mask is a band: query row ``r`` (key column ``n_cached + r``) sees at most the
``w`` columns ending at its own, plus the sink columns. So block ``i`` of ``b`` rows needs key columns
``[a_i, a_i + w)`` with ``a_i = a_0 + i * b``: a strided view of the keys (``as_strided``, no copy
besides zero padding at both ends). Columns outside a row's view, padding and sink columns (scored
separately with the shifted query) are masked. Compared with the block loop
(:func:`~anomaly_probe.engines.parallel_attention.blockwise_attention`) this does the same arithmetic in
~15 tensor ops per layer instead of ~12 per block, which matters on a busy CPU. GQA heads are grouped
as in :mod:`anomaly_probe.attention.gqa` (query head ``h`` reads kv head ``h // G``, stacked as rows),
with the block axis added; the mask is the engine's boolean band, so no mask conversion is needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

GROUP_ELEMENTS = 1 << 21  # float32 scores per group of blocks (8 MiB): bounds memory, stays near the caches


@dataclass
class Band:
    """Geometry of the banded score tiles of one forward (shared by all layers).

    Attributes
    ----------
    block : int
        Query rows per block (``b``).
    n_blocks : int
        Blocks, the last one padded with empty rows.
    width : int
        Key columns per block besides the sinks (``w``).
    start : int
        First key column of block 0 (``a_0``; may be negative: padding).
    pad_left, pad_right : int
        Zero key columns added before column 0 and after the last column.
    mask : torch.Tensor
        Boolean, shape (n_blocks, block, n_sink_cols + width): sink columns then the band.
    """

    block: int
    n_blocks: int
    width: int
    start: int
    pad_left: int
    pad_right: int
    mask: torch.Tensor
    _grouped: dict = field(default_factory=dict)

    @classmethod
    def build(cls, visible: torch.Tensor, block: int, n_sink_cols: int,
              spans: list[tuple[int, int, int, int]]) -> "Band | None":
        """The band for ``visible`` (shape (Tq, Tk), queries the last Tq columns), or ``None`` when a
        band would do > 1.5x the block loop's work (wide masks such as the full cache)."""
        Tq, Tk = visible.shape
        n_cached = Tk - Tq
        ends = [n_cached + (i + 1) * block for i in range(len(spans))]  # column after block i's last row
        needed = [end - c0 for end, (_lo, _hi, c0, c1) in zip(ends, spans) if c1 > c0]
        if not needed:
            return None
        width = max(needed)
        loop_work = sum((hi - lo) * (c1 - c0) for lo, hi, c0, c1 in spans)
        if len(spans) * block * width > 1.5 * loop_work:
            return None
        n_blocks, start = len(spans), ends[0] - width
        pad_left, pad_right = max(0, -start), n_blocks * block - Tq
        rows = F.pad(visible, (0, 0, 0, pad_right))  # (n_blocks * block, Tk), padded rows see nothing
        cols = start + block * torch.arange(n_blocks)[:, None] + torch.arange(width)  # (n_blocks, width)
        in_band = (cols >= n_sink_cols) & (cols < Tk)
        idx = cols.clamp(0, Tk - 1)[:, None, :].expand(n_blocks, block, width)
        band = rows.view(n_blocks, block, Tk).gather(2, idx) & in_band[:, None, :]  # (n_blocks, block, width)
        sinks = rows[:, :n_sink_cols].view(n_blocks, block, n_sink_cols)
        mask = torch.cat([sinks, band], dim=-1)  # (n_blocks, block, ns + width)
        mask[:, :, 0] |= ~mask.any(dim=-1)  # padded rows: one harmless column, so softmax stays finite
        return cls(block=block, n_blocks=n_blocks, width=width, start=start, pad_left=pad_left,
                   pad_right=pad_right, mask=mask)

    def group_mask(self, groups: int, device: torch.device) -> torch.Tensor:
        """Mask expanded over the GQA group: shape (n_blocks, groups * block, ns + width)."""
        key = (groups, device)
        if key not in self._grouped:
            nb, b, m = self.mask.shape
            self._grouped[key] = self.mask.to(device)[:, None].expand(nb, groups, b, m).reshape(nb, groups * b, m)
        return self._grouped[key]


def _to_blocks(x: torch.Tensor, kv_heads: int, n: int, b: int) -> torch.Tensor:
    """(B, H, n*b, D) -> (B, Hkv, n, G*b, D): query rows of a kv head's group, block by block."""
    B, H, _, D = x.shape
    return x.reshape(B, kv_heads, H // kv_heads, n, b, D).transpose(2, 3).reshape(B, kv_heads, n, -1, D)


def _strided(x: torch.Tensor, first: int, n: int, b: int, width: int) -> torch.Tensor:
    """Overlapping windows of a contiguous (B, Hkv, L, D) tensor: (B, Hkv, n, width, D), window i at
    row ``first + i * b``."""
    B, Hkv, _, D = x.shape
    s0, s1, s2, _ = x.stride()
    return x.as_strided((B, Hkv, n, width, D), (s0, s1, b * s2, s2, 1), x.storage_offset() + first * s2)


def banded_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, band: Band,
                     n_sink: int, sink_query: torch.Tensor | None, scaling: float, out: torch.Tensor) -> None:
    """Fill ``out`` (B, Tq, H, Dv) with attention over the band and the sinks.

    Parameters
    ----------
    query : torch.Tensor
        Float32 queries, shape (B, H, Tq, D).
    key, value : torch.Tensor
        Float32 keys and values, shape (B, Hkv, Tk, D).
    sink_query : torch.Tensor or None
        Queries for the sink columns (rotated to their in-cache position), shape like ``query``;
        ``None``: the plain queries.
    """
    B, H, Tq, _D = query.shape
    Hkv = key.shape[1]
    b, nb, w = band.block, band.n_blocks, band.width
    kp = F.pad(key, (0, 0, band.pad_left, band.pad_right)).contiguous()  # (B, Hkv, P + Tk + Q, D)
    vp = F.pad(value, (0, 0, band.pad_left, band.pad_right)).contiguous()
    q = F.pad(query, (0, 0, 0, band.pad_right))  # (B, H, nb*b, D)
    qs = q if sink_query is None else F.pad(sink_query, (0, 0, 0, band.pad_right))
    k_sink = key[:, :, None, :n_sink]  # (B, Hkv, 1, ns, D)
    v_sink = value[:, :, None, :n_sink]
    mask = band.group_mask(H // Hkv, query.device)  # (nb, G*b, ns + w)
    per_block = H * b * (n_sink + w)
    step = max(1, GROUP_ELEMENTS // per_block)
    for g0 in range(0, nb, step):
        n = min(step, nb - g0)
        rows = slice(g0 * b, (g0 + n) * b)
        logits = _to_blocks(q[:, :, rows], Hkv, n, b) @ _strided(kp, band.start + band.pad_left + g0 * b, n, b,
                                                                   w).transpose(-1, -2)  # (B, Hkv, n, G*b, w)
        if n_sink:
            sink = _to_blocks(qs[:, :, rows], Hkv, n, b) @ k_sink.transpose(-1, -2)  # (B, Hkv, n, G*b, ns)
            logits = torch.cat([sink, logits], dim=-1)
        logits = logits * scaling
        probs = torch.softmax(logits.masked_fill(~mask[g0:g0 + n], float("-inf")), dim=-1)
        o = probs[..., n_sink:] @ _strided(vp, band.start + band.pad_left + g0 * b, n, b, w)  # (B, Hkv, n, G*b, Dv)
        if n_sink:
            o = o + probs[..., :n_sink] @ v_sink
        Dv = o.shape[-1]
        o = o.view(B, Hkv, n, H // Hkv, b, Dv).permute(0, 2, 4, 1, 3, 5).reshape(B, n * b, H, Dv)
        r0, r1 = g0 * b, min((g0 + n) * b, Tq)
        out[:, r0:r1] = o[:, :r1 - r0].to(out.dtype)
