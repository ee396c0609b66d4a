"""Per-group cache bookkeeping for layered models: slots, eviction and key positions per layer group.

The engines' uniform path keeps one list of cached tokens for every layer. A layered model (sliding
windows, hybrid layers, ALiBi in ``absolute`` mode; see :mod:`anomaly_probe.engines.layers`) keeps one per
:class:`~anomaly_probe.engines.layers.LayerGroup`: :class:`GroupCaches` appends each forward's tokens,
evicts every group by its own rule and, in ``in-cache`` mode with RoPE, rotates each group's keys (from a
shadow copy as stored, with each layer's own :class:`~anomaly_probe.models.rope.RopeSpec`) to the
positions the next query needs.
"""

from __future__ import annotations

import dataclasses

import torch

from anomaly_probe.engines.cache_ops import evict
from anomaly_probe.engines.layers import CacheView, Layout, keep_for_next
from anomaly_probe.methods.base import CacheMethod


class GroupCaches:
    """Slots (absolute token index per cached entry) and key placement of every layer group.

    Parameters
    ----------
    layout : Layout
        The model's groups under the method.
    mode : str
        Position mode in force (``absolute`` for the full cache).
    """

    def __init__(self, layout: Layout, mode: str) -> None:
        self.layout, self.mode = layout, mode
        self.rotate = mode == "in-cache" and not layout.alibi
        n = len(layout.groups)
        self.slots: list[torch.Tensor] = [torch.zeros(0, dtype=torch.long) for _ in range(n)]  # (n_g,) each
        self.stored_pos: list[torch.Tensor] = [torch.zeros(0, dtype=torch.long) for _ in range(n)]  # (n_g,)
        self.shadow: dict[int, torch.Tensor] = {}  # layer -> (B, Hkv, n_g, D) keys as stored

    def keys_before(self, q_abs: torch.Tensor) -> list[torch.Tensor]:
        """Each group's key indices for a forward of queries ``q_abs``: its slots then the queries."""
        return [torch.cat([s, q_abs]) for s in self.slots]

    def after_forward(self, cache, q_abs: torch.Tensor, model_pos: torch.Tensor, next_query: int) -> None:
        """Record the forward's new tokens (stored at ``model_pos``), evict each group by its rule and,
        in in-cache mode, move each group's keys to where query ``next_query`` must see them."""
        n_new = q_abs.numel()
        for k, g in enumerate(self.layout.groups):
            view = CacheView(cache, g.layers)
            if self.rotate:
                for i, layer in zip(g.layers, view.layers):
                    new = layer.keys[..., -n_new:, :]  # (B, Hkv, n_new, D)
                    self.shadow[i] = new if i not in self.shadow else torch.cat([self.shadow[i], new], dim=-2)
            slots = torch.cat([self.slots[k], q_abs])
            stored = torch.cat([self.stored_pos[k], model_pos])
            keep = keep_for_next(g.rule, slots, next_query)
            if keep is not None:
                slots, stored = slots[keep], stored[keep]
                evict(view, keep)
                if self.rotate:
                    for i, layer in zip(g.layers, view.layers):
                        self.shadow[i] = self.shadow[i].index_select(-2, keep.to(layer.keys.device))
            self.slots[k], self.stored_pos[k] = slots, stored
            if self.rotate and slots.numel():
                target = g.key_positions(self.layout.position_rule, torch.tensor(next_query), slots)
                delta = target - stored  # (n_g,)
                if bool(delta.any()):
                    for i, layer in zip(g.layers, view.layers):
                        layer.keys = self.layout.schemes[i].rope.rotate(self.shadow[i], delta.to(layer.keys.device))
                    # the shadow stays as stored; ``stored`` keeps the insertion positions

    def distances(self, k: int, q_abs: torch.Tensor, k_abs: torch.Tensor) -> torch.Tensor:
        """Query-to-key distances of group ``k`` for ALiBi, shape (Tq, Tk): true distances in absolute
        mode, the group's in-cache distances otherwise: an ALiBi model recomputes its bias from cache
        slots at every step, so an evicted cache compresses the distances in ``naive`` mode too."""
        t, j = q_abs[:, None], k_abs[None, :]
        if self.mode == "absolute":
            return (t - j).float()
        rule = self.layout.groups[k].rule
        if isinstance(rule, CacheMethod) and self.mode == "naive":
            rule = dataclasses.replace(rule, position_mode="in-cache")
        t, j = torch.broadcast_tensors(t, j)
        return (rule.query_position(t) - rule.key_position(t, j)).float()
