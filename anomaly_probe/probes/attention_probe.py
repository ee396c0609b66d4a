"""The attention recorder: scores each layer into a shared buffer and reduces forwards in batches.

It is what :data:`~anomaly_probe.step_context.ATTENTION_RECORDER` holds while the probe is
attached. Two ways in:

* ``probe(module, logits, visible)`` -- the contract any attention function can call with its own
  float32 scores (a parallel engine; the recording wrapper for large forwards).
* ``probe.record_qk(...)`` -- the recording wrapper's path for small forwards: the probe scores the
  layer's query against its key itself, right away (the key is still in cache), straight into the
  forward's row of a :class:`StatBatch` (no temporary, no copy).
* ``probe.observe_chunk(chunk)`` -- the fused attention's path (multi-query forwards of the batched,
  parallel and recompute engines): the attention computes its scores once per query chunk and the
  probe reads them, and their exponentials, before the weighted sum (:mod:`~anomaly_probe.probes.chunk_stats`).

With a probe stride (``--probe-stride N``) only the queries :class:`StepRows` records are described.

Rows of small forwards (one query per step) are reduced together when the batch is full: a
stepwise run pays the reduction's ~30 op launches once per step or less, never once per layer. Large
forwards (many queries) are reduced as they come, per layer and query chunk. Results stay on the
device as small tensors and move to the CPU in batches.
"""

from __future__ import annotations

import threading
from typing import Callable, NamedTuple

import numpy as np
import torch

from anomaly_probe.attention import gqa_weighted
from anomaly_probe.attention.fused import ScoredChunk
from anomaly_probe.probes.attention_stats import ATTN_METRICS, COUNT_METRICS, fused_stats, key_weights
from anomaly_probe.probes.chunk_stats import chunk_stats
from anomaly_probe.probes.rows import StepRows
from anomaly_probe.probes.scores import scaled_scores, scores_into
from anomaly_probe.probes.stat_batch import StatBatch
from anomaly_probe.probes.threads import single_thread
from anomaly_probe.step_context import CURRENT_STEP, StepInfo

FORWARD_ELEMENTS = 1 << 22  # scores of all layers of a forward held until its end (16 MiB of float32)
OFFLOAD_EVERY = 64  # reductions kept on an accelerator before one batched copy to the CPU


class _Entry(NamedTuple):
    """Scores of one layer handed to the recorder, kept until the end of the forward."""

    layer: int
    row_lo: int  # first query row of the forward that the scores hold
    visible: torch.Tensor | None
    scores: torch.Tensor  # (1, H, Tq, Tk) float32, owned by the probe

    def shape_key(self) -> tuple:
        return self.row_lo, *self.scores.shape[1:]


def _same_mask(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None:
        return a is b
    return a is b or (a.shape == b.shape and torch.equal(a, b))


class AttentionProbe:
    """Recorder plus the trace columns it produces.

    Parameters
    ----------
    rows : StepRows
        Shared row bookkeeping (one row per query).
    num_layers : int
        Layers of the model (``layers.{L}`` for L in range(num_layers)).
    recent : int, optional
        Window of the ``recent_mass`` statistic in tokens (``None``: NaN).
    sink_size : int, optional
        Keys ``k_abs < sink_size`` count as sinks for ``sink_mass`` (default: each step's
        ``StepInfo.sink_size``; the run passes the method's, so the full cache is measured on the same
        tokens).

    Notes
    -----
    ``visible`` masks handed to the recorder are used until the engine's forward ends
    (``end_forward``, called by the probe session's ``after_forward``); callers must not modify them
    in place before that. Scores are copied. Calls made while no engine step is set
    (``CURRENT_STEP`` is ``None``) are not recorded; ``unrecorded_calls`` counts them. Batch size 1
    only (the engines' contract).
    """

    def __init__(self, rows: StepRows, num_layers: int, recent: int | None = None,
                 sink_size: int | None = None) -> None:
        self.rows = rows
        self.num_layers = num_layers
        self.recent = recent
        self.sink_size = sink_size
        self._keys: tuple | None = None  # (info, device, key_w (Tk, 3), q_off (Tq,)) of the current forward
        self.calls = 0
        self.unrecorded_calls = 0
        self._lock = threading.Lock()  # observe_chunk may be called from the fused kernel's workers
        self._info: StepInfo | None = None
        self._base = 0
        self._offsets: dict[int, int] = {}  # layer -> query rows of the current forward already seen
        self._entries: list[_Entry] = []
        self._batch: StatBatch | None = None
        self._row: tuple | None = None  # (shape key, visible, r): the current forward's batch row
        self._pending: list[tuple] = []  # (stats on the device, slots per row, first trace row per row)
        self._done: list[tuple] = []  # (stats (R, L', Tq, H, M) numpy, [[(slot, layer), ...] per row], [row0])

    # ------------------------------------------------------------------ recording
    def _step(self, module: torch.nn.Module, n_queries: int) -> tuple[int, int] | None:
        """(layer, first row of this call within the forward), or None when no step is set."""
        info = CURRENT_STEP.get()
        if info is None:
            self.unrecorded_calls += 1
            return None
        layer = getattr(module, "layer_idx", None)
        if layer is None:
            raise ValueError(f"attention probe: {type(module).__name__} has no layer_idx")
        self.calls += 1
        if info is not self._info:
            self.end_forward()
            self._info, self._base, self._offsets = info, self.rows.register(info), {}
        row_lo = self._offsets.get(layer, 0)
        self._offsets[layer] = row_lo + n_queries
        return layer, row_lo

    def __call__(self, module: torch.nn.Module, logits: torch.Tensor, visible: torch.Tensor | None) -> None:
        """Record scaled float32 scores of shape (1, H, Tq, Tk) (the ATTENTION_RECORDER contract)."""
        if logits.dim() != 4 or logits.shape[0] != 1:
            raise ValueError(f"attention probe: expected logits of shape (1, H, Tq, Tk), got {tuple(logits.shape)}")
        where = self._step(module, logits.shape[-2])
        if where is None:
            return
        if self.rows.stride > 1:  # only some rows are recorded: reduce those now
            select, _ = self.rows.chunk_rows(self._info, where[1], where[1] + logits.shape[-2])
            if select is None or select.numel():
                self._reduce_one(logits.float(), visible, *where, select=select)
            return
        if logits.numel() * self.num_layers > FORWARD_ELEMENTS:  # large: reduce now, per layer
            self._reduce_one(logits.float(), visible, *where)
        else:
            self._entries.append(_Entry(*where, visible, logits.float().clone()))

    def record_qk(self, module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, scaling: float,
                  softcap: float | None, mask: Callable[[], tuple],
                  value: torch.Tensor | None = None) -> bool | torch.Tensor:
        """Score a small forward's query (1, H, Tq, D) against its key (1, Hkv, Tk, D) and record it.

        ``mask()`` returns ``(visible, bias)`` for all the forward's queries (see
        :func:`~anomaly_probe.attention.masks.visible_from_mask`); it is called only when the
        forward is accepted. With ``value`` (1, Hkv, Tk, Dv) the probe also computes the attention
        from the same scores (softmax, ``P @ V``) so that the caller need not score the keys again:
        the stepwise engine's single-query forwards then pay one score matmul, not two.

        Returns
        -------
        bool or torch.Tensor
            False, recording nothing, when the forward is too large (the caller then passes scores
            in query chunks to ``__call__``); the attention output (1, Tq, H, Dv) when ``value`` was
            given and the scores were computed; else True.
        """
        _, H, Tq, _ = query.shape
        Tk = key.shape[2]
        if query.shape[0] != 1 or H * Tq * Tk * self.num_layers > FORWARD_ELEMENTS:
            return False
        if Tq > 1 and self.rows.stride > 1:
            return False
        where = self._step(module, Tq)
        if where is None:
            return True
        if self.rows.recorded(self._info) == 0:  # a query the stride skips
            return True
        layer, row_lo = where
        with single_thread(query.device), torch.no_grad():  # small work: keep the thread pool asleep
            visible, bias = mask()
            r = self._open_row(H, Tq, Tk, visible, row_lo, query.device)
            if r is None:  # this layer differs from the forward's first (e.g. its own mask)
                s = scaled_scores(query, key, scaling, softcap)
                s = s if bias is None else s + bias
                self._entries.append(_Entry(layer, row_lo, visible, s))
            else:
                s = self._batch.slot(r, layer)[None]  # (1, H, Tq, Tk) view of the batch row
                scores_into(s[0], query, key, scaling, softcap, bias)
            if value is None:
                return True
            if visible is not None:
                s = s.masked_fill(~visible, float("-inf"))  # a copy: the recorded scores stay as they are
            return gqa_weighted(torch.softmax(s, dim=-1), value.float()).transpose(1, 2).contiguous()

    def _open_row(self, H: int, Tq: int, Tk: int, visible: torch.Tensor | None, row_lo: int,
                  device: torch.device) -> int | None:
        """The current forward's batch row (opened at its first layer), or None if this layer cannot join."""
        key = (H, Tq, Tk, row_lo)
        if self._row is not None:
            row_key, row_visible, r = self._row
            return r if row_key == key and _same_mask(visible, row_visible) else None
        if not StatBatch.batchable(visible):
            return None
        key_w, q_off = key_weights(self._info, slice(row_lo, row_lo + Tq), Tk, self.sink_size)
        if self._batch is None or not self._batch.fits(H, Tq, Tk, device):
            spent = self._batch
            self.flush()
            if spent is not None and spent.reusable(H, Tq, Tk, device):  # flushed (emptied), same shape
                self._batch = spent
            else:
                self._batch = StatBatch(self.num_layers, H, Tq, Tk, device, self.recent)
        r = self._batch.open(Tk, visible, key_w, q_off, self._base + row_lo)
        self._row = (key, visible, r)
        return r

    def end_forward(self) -> None:
        """Stage the scores the current forward handed over (called after each forward)."""
        self._row = None
        entries, self._entries = self._entries, []
        groups: dict[tuple, list[_Entry]] = {}  # same query rows and shape: one batch row
        for e in entries:
            groups.setdefault(e.shape_key(), []).append(e)
        for group in groups.values():
            first = group[0]
            if (len({e.layer for e in group}) == len(group) and StatBatch.batchable(first.visible)
                    and all(_same_mask(e.visible, first.visible) for e in group[1:])):
                _, H, Tq, Tk = first.shape_key()
                self._row = None
                r = self._open_row(H, Tq, Tk, first.visible, first.row_lo, first.scores.device)
                for e in group:
                    self._batch.slot(r, e.layer).copy_(e.scores[0])
            else:  # e.g. sliding-window layers with their own masks: one layer at a time
                for e in group:
                    self._reduce_one(e.scores, e.visible, e.layer, e.row_lo)
        self._row = None

    def _reduce_one(self, scores: torch.Tensor, visible: torch.Tensor | None, layer: int, row_lo: int,
                    select: torch.Tensor | None = None) -> None:
        """Reduce one layer's scores (1, H, Tq, Tk) of query rows ``row_lo:row_lo+Tq`` now (rows ``select``
        of them only, when given: the recorded ones)."""
        _, H, Tq, Tk = scores.shape
        vis = None if visible is None else visible.reshape(1, *visible.shape[-3:])
        rows = torch.arange(row_lo, row_lo + Tq)
        _, first = self.rows.chunk_rows(self._info, row_lo, row_lo + Tq)  # trace row of the first recorded one
        if select is not None:
            rows, scores = rows[select], scores.index_select(2, select.to(scores.device))
            if vis is not None and vis.shape[2] > 1:
                vis = vis.index_select(2, select.to(vis.device))
        key_w, q_off = key_weights(self._info, rows, Tk, self.sink_size)
        stats = fused_stats(scores.reshape(1, H, rows.numel(), Tk), vis, key_w.to(scores.device)[None],
                            q_off.to(scores.device)[None], self.recent)  # (1, H, Tq', M)
        self._keep(stats.transpose(1, 2)[:, None], [[layer]], [first], slots=[[0]])

    def observe_chunk(self, chunk: ScoredChunk) -> None:
        """Record one query chunk of the fused attention (an ``Observer`` of :mod:`anomaly_probe.attention.fused`).

        Thread-safe: the fused kernel may run a call's chunks on several worker threads at once, in any
        order (the bookkeeping is locked; the statistics, the costly part, are not)."""
        lo, hi = chunk.rows
        if chunk.logits.shape[0] != 1:
            raise ValueError(f"attention probe: batch size 1 only, got {tuple(chunk.logits.shape)}")
        with self._lock:
            where = self._step(chunk.module, hi - lo)
            if where is None:
                return
            select, first = self.rows.chunk_rows(self._info, lo, hi)
            if select is not None and select.numel() == 0:
                return
            key_w, q_off = self._key_weights(chunk.n_keys, chunk.logits.device)
        rows = slice(lo, hi) if select is None else lo + select
        with torch.no_grad():
            stats = chunk_stats(chunk, key_w[chunk.cols], q_off[rows], self.recent, select)  # (1, H, c', M)
        with self._lock:
            self._keep(stats.transpose(1, 2)[:, None], [[where[0]]], [first], slots=[[0]])

    def _key_weights(self, n_keys: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Key weights (Tk, 3) and query offsets (Tq,) of the current forward, on ``device`` (made once per
        forward; the reference index is its last query)."""
        info = self._info
        if self._keys is None or self._keys[0] is not info or self._keys[1] != device:
            key_w, q_off = key_weights(info, slice(None), n_keys, self.sink_size)
            self._keys = (info, device, key_w.to(device), q_off.to(device))
        return self._keys[2], self._keys[3]

    def flush(self) -> None:
        """Reduce the current batch (emptied, kept for reuse by the next forward of the same shape)."""
        batch, self._batch = self._batch, None
        if batch is not None and batch.row0:
            stats, written, row0 = batch.reduce()
            self._keep(stats, written, row0, slots=written)
            batch.reset()

    def _keep(self, stats: torch.Tensor, layers: list[list[int]], row0: list[int], slots: list[list[int]]) -> None:
        """Store results (R, L', Tq, H, M): row r's ``layers[r]`` sit at ``slots[r]`` of axis 1."""
        item = (stats, [list(zip(s, ls)) for s, ls in zip(slots, layers)], list(row0))
        if stats.device.type == "cpu":
            self._done.append((stats.numpy(), *item[1:]))
            return
        self._pending.append(item)
        if len(self._pending) >= OFFLOAD_EVERY:
            self._offload()

    def _offload(self) -> None:
        if not self._pending:
            return
        flat = torch.cat([s.reshape(-1) for s, _, _ in self._pending]).cpu().numpy()  # one copy
        at = 0
        for stats, slots, row0 in self._pending:
            self._done.append((flat[at:at + stats.numel()].reshape(stats.shape), slots, row0))
            at += stats.numel()
        self._pending.clear()

    # ------------------------------------------------------------------ output
    def columns(self, n_rows: int) -> dict[str, np.ndarray]:
        """Trace columns ``layers.{L}.attn.{metric}``, each (S, H).

        Rows a layer never recorded are NaN (floats) or -1 (counts).
        """
        self.end_forward()
        self.flush()
        self._offload()
        if not self._done:
            return {}
        heads = self._done[0][0].shape[3]
        table = np.full((self.num_layers, n_rows, heads, len(ATTN_METRICS)), np.nan, dtype=np.float32)
        for stats, slots, row0 in self._done:  # stats (R, L', Tq, H, M)
            tq = stats.shape[2]
            for r, first in enumerate(row0):
                idx, layers = zip(*slots[r]) if slots[r] else ((), ())
                table[list(layers), first:first + tq] = stats[r, list(idx)]
        out = {}
        for layer in range(self.num_layers):
            for m, name in enumerate(ATTN_METRICS):
                col = table[layer, :, :, m]
                if name in COUNT_METRICS:
                    col = np.where(np.isnan(col), -1, col).astype(np.int32)
                out[f"layers.{layer}.attn.{name}"] = np.ascontiguousarray(col)
        return out
