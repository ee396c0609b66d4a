"""Editing a transformers 5.x ``DynamicCache`` in place: evict from the middle, re-rotate keys.

``DynamicCache.crop`` only cuts from the end, so eviction rewrites each layer's ``keys``/``values``.
Only plain full-attention layers are supported (:func:`~anomaly_probe.attention.hf.is_plain_cache_layer`);
anything else is refused clearly.
"""

from __future__ import annotations

import torch

from anomaly_probe.attention.hf import is_plain_cache_layer
from anomaly_probe.errors import UserError
from anomaly_probe.models.rope import RopeSpec


def check_cache(cache) -> None:
    """Refuse caches we cannot edit safely (sliding-window, quantised, offloaded layers)."""
    for layer in cache.layers:
        if not is_plain_cache_layer(layer):
            raise UserError(f"cache layer type {type(layer).__name__} is not supported; "
                            "compressed-cache methods need plain full-attention layers")


def evict(cache, keep: torch.Tensor) -> None:
    """Keep only slots ``keep`` (shape (n_kept,)) in every layer."""
    for layer in cache.layers:
        idx = keep.to(layer.keys.device)
        layer.keys = layer.keys.index_select(-2, idx)  # (B, Hkv, n_kept, D)
        layer.values = layer.values.index_select(-2, idx)


class InCacheRotator:
    """Keep cached keys rotated to their slot positions 0..n-1 (StreamingLLM's re-rotation).

    A shadow copy holds every cached key as it was stored (rotated at its insertion position), so each
    step rotates once from the stored key instead of accumulating one rotation per step: the error
    stays at one rounding however long the run.
    """

    def __init__(self, rope: RopeSpec, num_layers: int) -> None:
        self.rope = rope
        self.shadow: list[torch.Tensor | None] = [None] * num_layers  # (B, Hkv, n, D) as stored
        self.inserted_at: torch.Tensor = torch.zeros(0, dtype=torch.long)  # (n,)

    def after_step(self, cache, query_position: int, keep: torch.Tensor | None) -> None:
        """Record the key just appended (at ``query_position``), evict ``keep``, re-rotate."""
        self.inserted_at = torch.cat([self.inserted_at, torch.tensor([query_position])])
        for i, layer in enumerate(cache.layers):
            new = layer.keys[..., -1:, :]
            self.shadow[i] = new if self.shadow[i] is None else torch.cat([self.shadow[i], new], dim=-2)
        if keep is None:
            return
        self.inserted_at = self.inserted_at[keep]
        evict(cache, keep)
        delta = torch.arange(keep.numel()) - self.inserted_at  # (n_kept,) slot - insertion position
        for i, layer in enumerate(cache.layers):
            self.shadow[i] = self.shadow[i].index_select(-2, keep.to(layer.keys.device))
            layer.keys = self.rope.rotate(self.shadow[i], delta.to(layer.keys.device))
