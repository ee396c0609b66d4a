"""Trace rows: every recorded query of every forward gets one row, in the order the forwards ran.

With ``--probe-stride N`` only queries whose absolute index is a multiple of N are recorded (every
query with the default N = 1), so a forward's recorded rows need not be contiguous among its queries:
:meth:`StepRows.chunk_rows` maps any range of a forward's query rows to the recorded ones and their
trace rows. The attention probe (during a forward) and the cache/process probes (after it) both ask
:meth:`StepRows.register` for a forward's first row, so their records line up without sharing state.
"""

from __future__ import annotations

import numpy as np
import torch

from anomaly_probe.step_context import StepInfo

_ROW_CHUNK = 256  # query rows per pass when a (Tq, Tk) distance map is needed


def query_reach(info: StepInfo) -> tuple[np.ndarray, np.ndarray]:
    """Visible keys and the largest query-key position distance of each query.

    Parameters
    ----------
    info : StepInfo
        One forward; ``visible=None`` means causal over absolute indices (key ``j`` visible to query
        ``t`` when ``k_abs[j] <= q_abs[t]``). ``k_pos=None`` means key positions depend on the query
        (the parallel engine's in-cache mode); they then follow the in-cache rule: a sink
        (``j < sink_size``) sits at slot ``j``, any other key ``t - j`` below the query.

    Returns
    -------
    tuple of np.ndarray
        ``n_keys`` (Tq,) int64 and ``max_distance`` (Tq,) int64: the largest ``query position - key
        position`` over visible keys, -1 when no key is visible.
    """
    q_abs, k_abs = info.q_abs.cpu().long(), info.k_abs.cpu().long()
    q_pos = info.q_pos.cpu().long()
    if q_abs.numel() == 1 and info.visible is None and info.k_pos is not None:  # one query (stepwise)
        vis = k_abs <= q_abs
        n = int(vis.sum())
        dist = int(q_pos[0] - info.k_pos.cpu().long()[vis].min()) if n else -1
        return np.array([n], dtype=np.int64), np.array([dist], dtype=np.int64)
    if info.visible is None and info.k_pos is not None:  # O(Tk log Tk): no (Tq, Tk) map
        order = torch.argsort(k_abs)
        n_keys = torch.searchsorted(k_abs[order].contiguous(), q_abs, right=True)  # (Tq,)
        running_min = torch.cummin(info.k_pos.cpu().long()[order], dim=0).values  # over keys sorted by k_abs
        max_distance = q_pos - running_min[(n_keys - 1).clamp(min=0)]
    else:  # query-dependent positions or an explicit mask: row chunks of (rows, Tk)
        n_parts, d_parts = [], []
        for lo in range(0, q_abs.numel(), _ROW_CHUNK):
            t, tp = q_abs[lo:lo + _ROW_CHUNK, None], q_pos[lo:lo + _ROW_CHUNK, None]
            vis = k_abs[None] <= t if info.visible is None else info.visible[lo:lo + _ROW_CHUNK].cpu()
            if info.k_pos is None:
                dist = torch.where(k_abs[None] < info.sink_size, tp - k_abs[None], t - k_abs[None])
            else:
                dist = tp - info.k_pos.cpu().long()[None]
            n_parts.append(vis.sum(-1))
            d_parts.append(torch.where(vis, dist, torch.iinfo(torch.int64).min).amax(-1))
        n_keys, max_distance = torch.cat(n_parts), torch.cat(d_parts)
    max_distance = torch.where(n_keys > 0, max_distance, -1)
    return n_keys.numpy().astype(np.int64), max_distance.numpy().astype(np.int64)


class StepRows:
    """Row bookkeeping shared by the probes of one scoring run.

    Parameters
    ----------
    stride : int
        Record queries whose absolute index is a multiple of ``stride`` (1: every query).

    Attributes
    ----------
    n : int
        Rows assigned so far (S once the run is over).
    """

    def __init__(self, stride: int = 1) -> None:
        if stride < 1:
            raise ValueError(f"probe stride must be >= 1, got {stride}")
        self.stride = stride
        self.n = 0
        self._last: StepInfo | None = None
        self._last_base = 0
        self._last_before: np.ndarray | None = None  # (Tq + 1,) recorded rows before each query row
        self._cols: dict[str, list[np.ndarray]] = {"step": [], "query_pos": [], "max_distance": [],
                                                    "n_keys": [], "sink_size": []}

    def register(self, info: StepInfo) -> int:
        """First trace row of ``info``'s recorded queries; assigns their rows on first sight."""
        if info is self._last:
            return self._last_base
        base = self.n
        q_abs = info.q_abs.cpu().numpy().astype(np.int64)
        keep = (q_abs % self.stride) == 0 if self.stride > 1 else np.ones(q_abs.size, dtype=bool)  # (Tq,)
        n_keys, max_distance = query_reach(info)
        self._cols["step"].append(q_abs[keep])
        self._cols["query_pos"].append(info.q_pos.cpu().numpy().astype(np.int64)[keep])
        self._cols["max_distance"].append(max_distance[keep])
        self._cols["n_keys"].append(n_keys[keep])
        self._cols["sink_size"].append(np.full(int(keep.sum()), info.sink_size, dtype=np.int64))
        self.n += int(keep.sum())
        self._last, self._last_base = info, base
        self._last_before = np.concatenate([[0], np.cumsum(keep)])
        return base

    def recorded(self, info: StepInfo) -> int:
        """How many of ``info``'s queries are recorded (registers ``info``)."""
        self.register(info)
        return int(self._last_before[-1])

    def chunk_rows(self, info: StepInfo, lo: int, hi: int) -> tuple[torch.Tensor | None, int]:
        """The recorded rows among query rows ``lo:hi`` of ``info`` and the trace row of the first.

        Returns
        -------
        tuple
            ``select``: ``None`` when every row of the range is recorded, else int64 indices into the
            range (possibly empty); and the trace row of the first recorded one.
        """
        base = self.register(info)
        before = self._last_before
        first = base + int(before[lo])
        n = int(before[hi] - before[lo])
        if n == hi - lo:
            return None, first
        keep = np.diff(before[lo:hi + 1]).astype(bool)
        return torch.from_numpy(np.nonzero(keep)[0]), first

    def columns(self) -> dict[str, np.ndarray]:
        """``step``, ``query_pos``, ``max_distance``, ``n_keys``, ``sink_size``: each (S,) int64."""
        return {name: (np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64))
                for name, parts in self._cols.items()}
