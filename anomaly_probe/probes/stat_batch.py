"""Logits of several forwards, padded to one key length and reduced together.

A stepwise run makes one small forward per token; reducing each alone would launch the ~30 ops of
:func:`~anomaly_probe.probes.attention_stats.fused_stats` per token. A :class:`StatBatch` copies each
forward's (layers x heads, Tq, Tk) logits into row ``r`` of a preallocated buffer whose key axis is a
little longer than needed; padding keys are simply not visible. One reduction then serves up to
``capacity`` forwards. The buffer is kept small (1 MiB) so that the reduction's passes run in cache;
a forward that fills it alone gets a batch of its own without padding or mask.
"""

from __future__ import annotations

import torch

from anomaly_probe.probes.attention_stats import fused_stats

BATCH_ELEMENTS = 1 << 18  # float32 logits per batch (1 MiB): the reduction's passes stay in cache
MAX_ROWS = 64  # forwards per batch


class StatBatch:
    """A buffer of forwards with equal layers, heads and query count.

    Parameters
    ----------
    layers : tuple of int
        Layer indices of the rows' first axis, in order.
    heads : int
        Attention heads per layer.
    n_queries : int
        Queries per forward (Tq).
    n_keys : int
        Key count of the first forward; the buffer keeps room for a few more (growing caches).
    device : torch.device
        Where the logits live.
    """

    def __init__(self, layers: tuple[int, ...], heads: int, n_queries: int, n_keys: int,
                 device: torch.device) -> None:
        self.layers, self.heads, self.n_queries, self.device = layers, heads, n_queries, device
        self.key_cap = n_keys + max(16, n_keys // 8)  # room for a growing cache
        per_row = len(layers) * heads * n_queries * self.key_cap
        self.capacity = max(1, min(MAX_ROWS, BATCH_ELEMENTS // per_row))
        if self.capacity == 1:  # one forward fills the batch: no padding
            self.key_cap = n_keys
        self.masked = False  # whether any row has hidden keys (a mask, or padding)
        rows = self.capacity
        self.x = torch.empty((rows, len(layers) * heads, n_queries, self.key_cap), dtype=torch.float32, device=device)
        self.visible = torch.zeros((rows, 1, n_queries, self.key_cap), dtype=torch.bool, device=device)
        self.key_w = torch.zeros((rows, self.key_cap, 3), dtype=torch.float32, device=device)
        self.q_off = torch.zeros((rows, n_queries), dtype=torch.float32, device=device)
        self.row0: list[int] = []  # first trace row of each forward

    @staticmethod
    def batchable(visible: torch.Tensor | None) -> bool:
        """Whether a forward's mask is shared by all layers and heads (a (Tq, Tk) pattern)."""
        return visible is None or all(d == 1 for d in visible.shape[:-2])

    def fits(self, layers: tuple[int, ...], heads: int, n_queries: int, n_keys: int, device: torch.device) -> bool:
        return (len(self.row0) < self.capacity and n_keys <= self.key_cap and layers == self.layers
                and heads == self.heads and n_queries == self.n_queries and device == self.device)

    def add(self, scores: list[torch.Tensor], visible: torch.Tensor | None, key_w: torch.Tensor,
            q_off: torch.Tensor, row0: int) -> None:
        """Append one forward.

        Parameters
        ----------
        scores : list of torch.Tensor
            One (1, heads, Tq, Tk) tensor per layer of ``self.layers``, in order, any float dtype.
        visible : torch.Tensor or None
            Boolean, shape (1, ..., Tq, Tk) with singleton leading dims, or ``None`` for all keys.
        key_w, q_off : torch.Tensor
            From :func:`~anomaly_probe.probes.attention_stats.key_weights`: (Tk, 3) and (Tq,).
        row0 : int
            First trace row of the forward's queries.
        """
        r, tk, h = len(self.row0), scores[0].shape[-1], self.heads
        for i, s in enumerate(scores):  # keys beyond tk stay hidden
            self.x[r, i * h:(i + 1) * h, :, :tk].copy_(s[0])
        if visible is None:
            self.visible[r, 0, :, :tk] = True
        else:
            self.visible[r, 0, :, :tk] = visible.reshape(self.n_queries, tk)
        self.masked = self.masked or visible is not None or tk < self.key_cap
        self.key_w[r, :tk].copy_(key_w)
        self.q_off[r].copy_(q_off)
        self.row0.append(row0)

    def reduce(self) -> torch.Tensor:
        """Statistics of every forward added, shape (rows, layers, Tq, heads, M)."""
        n = len(self.row0)
        visible = self.visible[:n] if self.masked else None
        stats = fused_stats(self.x[:n], visible, self.key_w[:n], self.q_off[:n])  # (n, L*H, Tq, M)
        stats = stats.view(n, len(self.layers), self.heads, self.n_queries, -1)
        return stats.transpose(2, 3)  # (n, L, Tq, H, M)
