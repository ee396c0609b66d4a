"""Which key columns a chunk of query rows needs, from per-row spans computed once per forward.

The fused kernel (:mod:`anomaly_probe.attention.fused`) scores each query chunk against the keys any of
its rows can see and masks only the columns some row cannot see. Reducing a (rows, Tk) boolean mask
across rows for every chunk of every layer is slow (a strided reduction per chunk: at 12000 keys it
cost more than the statistics). The mask is the same for every layer of a forward, so
:func:`spans_of` reduces it once along its contiguous key axis into three numbers per row, and
:meth:`RowSpans.chunk` answers a chunk's question from those.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def _first_true(m: torch.Tensor) -> torch.Tensor:
    """Index of the first True along the last axis of ``m`` (R, Tk); Tk where a row has none."""
    idx = m.to(torch.uint8).argmax(-1)  # first maximal value
    return torch.where(m.any(-1), idx, m.shape[-1])


@dataclass(frozen=True)
class RowSpans:
    """Per query row: ``first``/``last`` visible column (of the union over batch and heads) and
    ``start``/``run_end``, the first visible column and the first hidden one after it, of the
    intersection. Rows without a visible key have ``first = start = run_end = Tk``, ``last = -1``.
    All int64 numpy arrays, shape (Tq,)."""

    first: np.ndarray
    last: np.ndarray
    start: np.ndarray
    run_end: np.ndarray
    n_keys: int

    def chunk(self, lo: int, hi: int) -> tuple[int, int, int]:
        """``(a, b, full)`` for rows ``lo:hi``: keys outside ``[a, b)`` are hidden from every row (an
        empty chunk gives ``(0, Tk)``), and columns ``[a, full)`` are visible to every row."""
        a, b = int(self.first[lo:hi].min()), int(self.last[lo:hi].max()) + 1
        if b <= a:
            return 0, self.n_keys, 0
        full = int(np.where(self.start[lo:hi] > a, a, self.run_end[lo:hi]).min())
        return a, b, max(a, min(full, b))


def spans_of(visible: torch.Tensor) -> RowSpans:
    """:class:`RowSpans` of a boolean mask (1|B, 1|H, Tq, Tk) (True = the row sees the key)."""
    tk = visible.shape[-1]
    flat = visible.reshape(-1, *visible.shape[-2:])  # (B*H, Tq, Tk)
    union, inter = flat.any(0), flat.all(0)  # (Tq, Tk)
    first = _first_true(union)
    last = tk - 1 - _first_true(union.flip(-1))  # -1 where none
    start = _first_true(inter)
    cols = torch.arange(tk, device=visible.device)
    run_end = _first_true(~inter & (cols[None, :] >= start[:, None]))
    return RowSpans(first.cpu().numpy(), last.cpu().numpy(), start.cpu().numpy(), run_end.cpu().numpy(), tk)
