"""Trace rows: every query of every forward gets one row, in the order the forwards ran.

The attention probe (during a forward) and the cache/process probes (after it) both ask
:meth:`StepRows.register` for a forward's first row, so their records line up without sharing state.
"""

from __future__ import annotations

import numpy as np
import torch

from anomaly_probe.engines.step_context import StepInfo

_ROW_CHUNK = 256  # query rows per pass when an explicit (Tq, Tk) visible mask is reduced


def query_reach(info: StepInfo) -> tuple[np.ndarray, np.ndarray]:
    """Visible keys and the largest query-key position distance of each query.

    Parameters
    ----------
    info : StepInfo
        One forward; ``visible=None`` means causal over absolute indices (key ``j`` visible to query
        ``t`` when ``k_abs[j] <= q_abs[t]``).

    Returns
    -------
    tuple of np.ndarray
        ``n_keys`` (Tq,) int64 and ``max_distance`` (Tq,) int64: ``q_pos - min k_pos`` over visible keys,
        -1 when ``info.k_pos`` is ``None`` (positions depend on the query) or no key is visible.
    """
    q_abs, k_abs = info.q_abs.cpu(), info.k_abs.cpu()
    q_pos = info.q_pos.cpu().long()
    k_pos = None if info.k_pos is None else info.k_pos.cpu().long()
    if info.visible is None:  # O(Tk log Tk): never builds the (Tq, Tk) map
        order = torch.argsort(k_abs)
        n_keys = torch.searchsorted(k_abs[order].contiguous(), q_abs, right=True)  # (Tq,)
        if k_pos is None:
            min_pos = None
        else:
            running_min = torch.cummin(k_pos[order], dim=0).values  # (Tk,) over keys sorted by k_abs
            min_pos = running_min[(n_keys - 1).clamp(min=0)]
    else:
        vis = info.visible.cpu()
        n_keys = vis.sum(-1)
        min_pos = None
        if k_pos is not None:
            big = torch.iinfo(torch.int64).max
            min_pos = torch.cat([torch.where(vis[lo:lo + _ROW_CHUNK], k_pos[None, :], big).amin(-1)
                                 for lo in range(0, vis.shape[0], _ROW_CHUNK)])
    if min_pos is None:
        max_distance = torch.full_like(q_pos, -1)
    else:
        max_distance = torch.where(n_keys > 0, q_pos - min_pos, -1)
    return n_keys.numpy().astype(np.int64), max_distance.numpy().astype(np.int64)


class StepRows:
    """Row bookkeeping shared by the probes of one scoring run.

    Attributes
    ----------
    n : int
        Rows assigned so far (S once the run is over).
    """

    def __init__(self) -> None:
        self.n = 0
        self._last: StepInfo | None = None
        self._last_base = 0
        self._cols: dict[str, list[np.ndarray]] = {"step": [], "query_pos": [], "max_distance": [],
                                                    "n_keys": [], "sink_size": []}

    def register(self, info: StepInfo) -> int:
        """First row of ``info``'s queries; assigns ``len(info.q_abs)`` new rows on first sight."""
        if info is self._last:
            return self._last_base
        base, tq = self.n, int(info.q_abs.numel())
        n_keys, max_distance = query_reach(info)
        self._cols["step"].append(info.q_abs.cpu().numpy().astype(np.int64))
        self._cols["query_pos"].append(info.q_pos.cpu().numpy().astype(np.int64))
        self._cols["max_distance"].append(max_distance)
        self._cols["n_keys"].append(n_keys)
        self._cols["sink_size"].append(np.full(tq, info.sink_size, dtype=np.int64))
        self.n += tq
        self._last, self._last_base = info, base
        return base

    def columns(self) -> dict[str, np.ndarray]:
        """``step``, ``query_pos``, ``max_distance``, ``n_keys``, ``sink_size``: each (S,) int64."""
        return {name: (np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64))
                for name, parts in self._cols.items()}
