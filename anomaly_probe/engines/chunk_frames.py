"""Keep cached keys in the current chunk's RoPE frame (parallel engine, in-cache mode).

In-cache scores depend only on the distance ``t - j`` for recent keys, so the parallel engine may give
chunk ``[lo, hi)`` any common offset: it uses frame positions ``x - shift`` with
``shift = max(0, lo - capacity)``, which keeps every rotation angle below ``capacity + chunk`` (the
stepwise engine's angles are below ``capacity``; large fp32 angles would cost accuracy at long
lengths). Sinks stay at their slot ``j`` (frame 0) for good.

Like :class:`~anomaly_probe.engines.cache_ops.InCacheRotator`, a shadow copy holds every key as the
model stored it, so moving to a new frame is one rotation from the stored key, never an accumulation.
"""

from __future__ import annotations

import torch

from anomaly_probe.engines.cache_ops import evict
from anomaly_probe.models.rope import RopeSpec


class ChunkFrames:
    """Shadow keys and the frame each was stored in.

    Parameters
    ----------
    rope : RopeSpec
        The model's rotary embedding.
    num_layers : int
        Cache layers.
    sink_size : int
        Tokens ``j < sink_size`` are sinks: always at frame 0.
    """

    def __init__(self, rope: RopeSpec, num_layers: int, sink_size: int) -> None:
        self.rope = rope
        self.sink_size = sink_size
        self.shadow: list[torch.Tensor | None] = [None] * num_layers  # (B, Hkv, n, D) as stored
        self.stored_shift = torch.zeros(0, dtype=torch.long)  # (n,) frame shift at insertion
        self.abs_idx = torch.zeros(0, dtype=torch.long)  # (n,) absolute token index per slot

    def enter(self, cache, shift: int) -> None:
        """Rotate the cached keys into frame ``shift`` (sinks into frame 0) before a forward."""
        if self.shadow[0] is None:
            return
        target = torch.where(self.abs_idx < self.sink_size, 0, shift)  # (n,)
        delta = self.stored_shift - target  # frame position x - s_old becomes x - s_new
        if not bool(delta.any()):
            for layer, stored in zip(cache.layers, self.shadow):
                layer.keys = stored
            return
        for layer, stored in zip(cache.layers, self.shadow):
            layer.keys = self.rope.rotate(stored, delta.to(stored.device))

    def after_forward(self, cache, shift: int, new_abs: torch.Tensor, keep: torch.Tensor | None) -> None:
        """Record the chunk's new keys (stored at frame ``shift``), then evict down to ``keep``."""
        n_new = new_abs.numel()
        for i, layer in enumerate(cache.layers):
            new = layer.keys[..., -n_new:, :]  # (B, Hkv, n_new, D)
            self.shadow[i] = new if self.shadow[i] is None else torch.cat([self.shadow[i], new], dim=-2)
        self.stored_shift = torch.cat([self.stored_shift, torch.full((n_new,), shift, dtype=torch.long)])
        self.abs_idx = torch.cat([self.abs_idx, new_abs])
        if keep is None:
            return
        evict(cache, keep)
        self.stored_shift, self.abs_idx = self.stored_shift[keep], self.abs_idx[keep]
        for i, layer in enumerate(cache.layers):
            self.shadow[i] = self.shadow[i].index_select(-2, keep.to(layer.keys.device))
