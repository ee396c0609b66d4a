"""Logits of several forwards, padded to one key length and reduced together.

A stepwise run makes one small forward per token; reducing each alone would launch the ~30 ops of
:func:`~anomaly_probe.probes.attention_stats.fused_stats` per token. A :class:`StatBatch` copies each
forward's (layers x heads, Tq, Tk) logits into row ``r`` of a preallocated buffer whose key axis is a
little longer than needed; padding keys are simply not visible. One reduction then serves up to
``capacity`` forwards. The buffer is kept to 4 MiB so that the reduction's passes stay near the core;
a forward that fills it alone gets a batch of its own. An emptied batch is reused by the next forwards
of the same shape while their keys fit (:meth:`StatBatch.reset`): a fresh buffer per forward cost
page faults on first write that exceeded the score matmuls writing into it (3x at 500 keys).
"""

from __future__ import annotations

import torch

from anomaly_probe.probes.attention_stats import fused_stats

BATCH_ELEMENTS = 1 << 20  # float32 logits per batch (4 MiB): the reduction's passes stay near the core
MAX_ROWS = 64  # forwards per batch


class StatBatch:
    """A buffer of forwards with equal heads and query count; one slot per layer.

    Parameters
    ----------
    num_layers : int
        Layers of the model: slot ``L`` of a row holds layer ``L``'s scores.
    heads : int
        Attention heads per layer.
    n_queries : int
        Queries per forward (Tq).
    n_keys : int
        Key count of the first forward; the buffer keeps room for a few more (growing caches).
    device : torch.device
        Where the logits live.
    recent : int, optional
        Window of ``recent_mass`` (tokens; ``None``: NaN).
    """

    def __init__(self, num_layers: int, heads: int, n_queries: int, n_keys: int, device: torch.device,
                 recent: int | None = None) -> None:
        self.num_layers, self.heads, self.n_queries, self.device = num_layers, heads, n_queries, device
        self.recent = recent  # window of the recent_mass statistic (tokens)
        self.key_cap = n_keys + max(16, n_keys // 8)  # room for a growing cache
        per_row = num_layers * heads * n_queries * self.key_cap
        self.capacity = max(1, min(MAX_ROWS, BATCH_ELEMENTS // per_row))  # one forward when it fills the batch
        self.masked = False  # whether any row has hidden keys (a mask, or padding)
        rows = self.capacity
        self.x = torch.empty((rows, num_layers * heads, n_queries, self.key_cap), dtype=torch.float32, device=device)
        self.visible = torch.zeros((rows, 1, n_queries, self.key_cap), dtype=torch.bool, device=device)
        self.key_w = torch.zeros((rows, self.key_cap, 3), dtype=torch.float32, device=device)
        self.q_off = torch.zeros((rows, n_queries), dtype=torch.float32, device=device)
        self.row0: list[int] = []  # first trace row of each forward
        self.written: list[list[int]] = []  # layers whose slot each row filled
        self._views: list[torch.Tensor] = []  # per row: (L, H, Tq, Tk) view of x

    @staticmethod
    def batchable(visible: torch.Tensor | None) -> bool:
        """Whether a forward's mask is shared by all layers and heads (a (Tq, Tk) pattern)."""
        return visible is None or all(d == 1 for d in visible.shape[:-2])

    def reusable(self, heads: int, n_queries: int, n_keys: int, device: torch.device) -> bool:
        """Whether an emptied batch (:meth:`reset`) can take forwards of this shape."""
        return (not self.row0 and n_keys <= self.key_cap and heads == self.heads and n_queries == self.n_queries
                and device == self.device)

    def fits(self, heads: int, n_queries: int, n_keys: int, device: torch.device) -> bool:
        return (len(self.row0) < self.capacity and n_keys <= self.key_cap and heads == self.heads
                and n_queries == self.n_queries and device == self.device)

    def open(self, n_keys: int, visible: torch.Tensor | None, key_w: torch.Tensor, q_off: torch.Tensor,
             row0: int) -> int:
        """Start row ``r`` for one forward; fill its layers' scores through :meth:`slot`.

        Parameters
        ----------
        n_keys : int
            Keys of this forward (Tk <= ``key_cap``).
        visible : torch.Tensor or None
            Boolean, shape (1, ..., Tq, Tk) with singleton leading dims, or ``None`` for all keys.
        key_w, q_off : torch.Tensor
            From :func:`~anomaly_probe.probes.attention_stats.key_weights`: (Tk, 3) and (Tq,).
        row0 : int
            First trace row of the forward's queries.
        """
        r, tk = len(self.row0), n_keys
        if visible is None:
            self.visible[r, 0, :, :tk] = True
        else:
            self.visible[r, 0, :, :tk] = visible.reshape(self.n_queries, tk)
        if tk < self.key_cap:
            self.visible[r, 0, :, tk:] = False  # padding (a reused buffer may hold an earlier row's True)
        self.masked = self.masked or visible is not None or tk < self.key_cap  # keys beyond tk stay hidden
        self.key_w[r, :tk].copy_(key_w)
        self.q_off[r].copy_(q_off)
        self.row0.append(row0)
        self.written.append([])
        self._views.append(self.x[r, :, :, :tk].unflatten(0, (self.num_layers, self.heads)))  # (L, H, Tq, tk)
        return r

    def reset(self) -> None:
        """Empty the batch, keeping its buffers (a fresh multi-hundred-KB buffer per forward costs page
        faults on first write that cost more than the scores written into it)."""
        self.row0, self.written, self._views = [], [], []
        self.masked = False

    def slot(self, r: int, layer: int) -> torch.Tensor:
        """Where row ``r`` keeps ``layer``'s scores: a float32 view of shape (heads, Tq, Tk of the row)."""
        self.written[r].append(layer)
        return self._views[r][layer]

    def reduce(self) -> tuple[torch.Tensor, list[list[int]], list[int]]:
        """Statistics of every row: (rows, layers, Tq, heads, M), each row's layers, each row's first trace row."""
        n, h = len(self.row0), self.heads
        for r, layers in enumerate(self.written):
            if len(layers) < self.num_layers:  # a layer that recorded nothing: harmless zeros, dropped later
                for layer in set(range(self.num_layers)) - set(layers):
                    self.x[r, layer * h:(layer + 1) * h].zero_()
        visible = self.visible[:n] if self.masked else None
        stats = fused_stats(self.x[:n], visible, self.key_w[:n], self.q_off[:n], self.recent)  # (n, L*H, Tq, M)
        stats = stats.view(n, self.num_layers, h, self.n_queries, -1).transpose(2, 3)  # (n, L, Tq, H, M)
        return stats, self.written, self.row0
