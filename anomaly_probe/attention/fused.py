"""The fused chunked attention: scores once per query chunk, the softmax, an optional observer, then P @ V.

One kernel serves every attention function that computes its own scores: the attention probe (the
batched, recompute and parallel engines with ``--probes attention``), the top-k dilution intervention
and the fp16/bf16-emulated attention (``interventions/manual_attention.py``). Per chunk of query rows:

1. the scores of the chunk against the keys any of its rows can see (keys no row sees are skipped:
   for a causal chunk, everything after its last query), in the recipe's dtype (float32);
2. masking (hidden keys get :data:`HIDDEN`, a finite stand-in for ``-inf``: ``exp`` gives exactly 0 and
   ``0 * HIDDEN`` stays 0, so an observer can form ``sum(p * s)`` without NaNs), optional top-k;
3. ``p = torch.softmax(s)`` (one fused row-wise pass); an observer then sees ``s`` and ``p``
   (:class:`ScoredChunk`) before they are used, so statistics come from the same tensors with no
   second pass over the keys;
4. ``P @ V`` through the shared GQA path.

Memory is bounded by the chunk (:data:`CHUNK_ELEMENTS` scores) times the chunk workers (on the CPU, one
per intra-op thread, at most :data:`MAX_WORKERS`; see :func:`chunk_workers`), never a T x T map. The scores, the
weights and an observer's scratch live in buffers allocated once per call and reused by every chunk:
a fresh multi-megabyte tensor per op costs page faults that double the time of a pass on the CPU.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Callable

import torch

from anomaly_probe.attention.gqa import gqa_scores, gqa_weighted
from anomaly_probe.attention.masks import visible_from_mask
from anomaly_probe.attention.spans import RowSpans, spans_of
from anomaly_probe.attention.topk import kth_largest
from anomaly_probe.threads import can_toggle, worker_pool

CHUNK_ELEMENTS = 1 << 21  # float32 scores per query chunk (8 MiB): stays near the caches
HIDDEN = -1e30  # score of a hidden key when an observer reads the scores (finite, unlike -inf)


@dataclass
class ScoredChunk:
    """One query chunk's float32 attention, as an observer sees it before the weighted sum.

    Attributes
    ----------
    module : torch.nn.Module
        The attention module (``layer_idx`` names the layer).
    rows : tuple of int
        ``(lo, hi)``: the forward's query rows the chunk holds.
    cols : torch.Tensor or slice
        Which of the forward's key columns the last axis covers (a slice, or an int64 index (m,)).
    n_keys : int
        Key columns of the forward (Tk).
    logits : torch.Tensor
        Scaled scores (plus any additive mask bias), float32, shape (B, H, c, m); hidden keys hold
        :data:`HIDDEN`.
    weights : torch.Tensor
        ``softmax(logits)``, the attention weights, shape (B, H, c, m); exactly 0 on hidden keys.
    scratch : torch.Tensor or None
        A float32 buffer of the same shape the observer may overwrite (``None``: allocate your own).
    visible : torch.Tensor or None
        Boolean, broadcastable to (B, H, c, m): True where the row attends to the key; ``None``: every
        column is visible to every row.
    full_cols : int
        Columns ``[0, full_cols)`` are visible to every row (only the rest needs ``visible``).
    """

    module: torch.nn.Module
    rows: tuple[int, int]
    cols: torch.Tensor | slice
    n_keys: int
    logits: torch.Tensor
    weights: torch.Tensor
    scratch: torch.Tensor | None
    visible: torch.Tensor | None
    full_cols: int


Observer = Callable[[ScoredChunk], None]
"""``observe(chunk)``: reads a :class:`ScoredChunk`; must not modify its tensors."""


@dataclass(frozen=True)
class Recipe:
    """How the kernel computes attention.

    Attributes
    ----------
    compute_dtype : torch.dtype
        Dtype of the score matmul, softmax and weighted sum.
    round_to : torch.dtype or None
        Emulate a half-precision backend: q, k, v and the logits are rounded to this dtype, and the
        softmax weights are cast to it (where fp16 underflow happens) before the weighted sum.
    topk : int or None
        Keep only each query's ``topk`` largest logits (others get zero weight).
    """

    compute_dtype: torch.dtype = torch.float32
    round_to: torch.dtype | None = None
    topk: int | None = None


def key_span(visible: torch.Tensor) -> tuple[int, int]:
    """First and one-past-last key column of ``visible`` (..., c, Tk) visible to any query.

    Dropping columns that are masked for every query is exact: their weight is exactly 0. For a causal
    chunk this skips the keys after its last query (about half the work of a full-sequence forward).
    """
    cols = visible.reshape(-1, visible.shape[-1]).any(dim=0).nonzero()
    if cols.numel() == 0:
        return 0, visible.shape[-1]
    return int(cols[0]), int(cols[-1]) + 1


def first_partial_column(visible: torch.Tensor) -> int:
    """Index of the first key column of ``visible`` (..., c, Tk) hidden from some query (Tk if none).

    Columns before it need no masking: in a chunked forward over a long cache that is almost all of them.
    """
    full = visible.reshape(-1, visible.shape[-2], visible.shape[-1]).all(dim=-2).all(dim=0)  # (Tk,)
    bad = (~full).nonzero()
    return int(bad[0]) if bad.numel() else visible.shape[-1]


def _round(x: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    return x if dtype is None else x.to(dtype).to(x.dtype)


def softmax_chunk(logits: torch.Tensor, visible: torch.Tensor | None, full_cols: int, *, topk: int | None = None,
                  observe: Observer | None = None, module: torch.nn.Module | None = None,
                  rows: tuple[int, int] = (0, 0), cols: torch.Tensor | slice = slice(None),
                  n_keys: int = 0, out: torch.Tensor | None = None,
                  scratch: torch.Tensor | None = None) -> torch.Tensor:
    """Masked (optionally top-k) softmax of one chunk, showing the observer its scores on the way.

    Parameters
    ----------
    logits : torch.Tensor
        Scores (B, H, c, m), modified in place (masking).
    visible : torch.Tensor or None
        Boolean, broadcastable to ``logits``; ``None``: all visible.
    full_cols : int
        Columns ``[0, full_cols)`` are visible to every row (masking touches the rest only).
    topk : int, optional
        Keep each row's ``topk`` largest visible scores.
    observe : callable, optional
        Receives a :class:`ScoredChunk` (with ``module``, ``rows``, ``cols`` and ``n_keys``) once the
        weights are computed.
    out, scratch : torch.Tensor, optional
        Contiguous buffers shaped like ``logits`` for the weights and for the observer's scratch.

    Returns
    -------
    torch.Tensor
        Weights, shape (B, H, c, m), ``logits.dtype``.
    """
    fill = float("-inf") if observe is None else HIDDEN
    if visible is not None and full_cols < logits.shape[-1]:
        logits[..., full_cols:].masked_fill_(~visible[..., full_cols:], fill)
    if topk is not None and topk < logits.shape[-1]:
        kth = kth_largest(logits, topk)  # (B, H, c, 1); ties at it are kept
        dropped = logits < kth
        logits = logits.masked_fill(dropped, fill)
        if observe is not None:  # the observer's hidden keys: masked or dropped
            visible = ~dropped if visible is None else (visible & ~dropped)
            full_cols = 0
    if out is None or not logits.is_contiguous():
        weights = torch.softmax(logits, dim=-1)  # (B, H, c, m)
    else:
        weights = torch.ops.aten._softmax.out(logits, -1, False, out=out)  # the same kernel, into the buffer
    if observe is not None:
        observe(ScoredChunk(module, rows, cols, n_keys, logits, weights, scratch, visible, full_cols))
    return weights


_MASK_CACHE: list = []  # [(mask, version, Tq, Tk, device), (visible, bias, spans)]: one forward's mask


def _mask_view(mask: torch.Tensor | None, tq: int, tk: int,
               device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None, RowSpans | None]:
    """``visible_from_mask`` of a forward's mask and its :class:`RowSpans`, computed once per forward:
    every layer receives the same mask tensor, so the last one is kept (by identity and version)."""
    key = (mask, -1 if mask is None else mask._version, tq, tk, device)
    if _MASK_CACHE and _MASK_CACHE[0][0] is key[0] and _MASK_CACHE[0][1:] == key[1:]:
        return _MASK_CACHE[1]
    visible, bias = visible_from_mask(mask, 0, tq, tq, tk, device)
    view = (visible, bias, None if visible is None else spans_of(visible))
    _MASK_CACHE[:] = [key, view]
    return view


def fused_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attention_mask: torch.Tensor | None, scaling: float | None = None, recipe: Recipe = Recipe(),
                    observe: Observer | None = None, softcap: float | None = None,
                    chunk_elements: int = CHUNK_ELEMENTS) -> torch.Tensor:
    """Attention of every query, chunk by chunk (see the module docstring).

    Parameters
    ----------
    module : torch.nn.Module
        The attention module (handed to the observer).
    query : torch.Tensor
        Shape (B, H, Tq, D).
    key, value : torch.Tensor
        Shape (B, Hkv, Tk, D); GQA heads shared, never repeated.
    attention_mask : torch.Tensor or None
        What transformers passes (``None``, boolean or additive 4D; :func:`visible_from_mask`).
    scaling : float, optional
        Score scale (default ``D ** -0.5``).
    recipe : Recipe
        Precision and top-k.
    observe : callable, optional
        Sees each chunk's scores and exponentials before the weighted sum.
    softcap : float, optional
        Gemma-style cap ``tanh(s / softcap) * softcap``.
    chunk_elements : int
        Scores per query chunk (bounds memory; does not change results).

    Returns
    -------
    torch.Tensor
        Shape (B, Tq, H, Dv), ``query.dtype``, contiguous.
    """
    B, H, Tq, D = query.shape
    Tk = key.shape[-2]
    cd = recipe.compute_dtype
    k = _round(key.to(cd), recipe.round_to)  # (B, Hkv, Tk, D)
    v = _round(value.to(cd), recipe.round_to)
    scale = scaling if scaling is not None else D ** -0.5
    visible, bias, spans = _mask_view(attention_mask, Tq, Tk, query.device)  # (1|B, 1|H, Tq, Tk)
    out = torch.empty(B, H, Tq, v.shape[-1], dtype=cd, device=query.device)
    step = max(1, chunk_elements // max(1, B * H * Tk))
    starts = list(range(0, Tq, step))
    job = _Chunks(module, query, k, v, visible, bias, spans, out, step, scale, recipe, observe, softcap)
    workers = chunk_workers(query.device, len(starts))
    if workers == 1:
        job.run(starts)
    else:  # chunks dealt round-robin (later chunks see more keys); each worker keeps the caller's context
        pool = worker_pool("fused-chunks", workers)
        futures = [pool.submit(contextvars.copy_context().run, _in_worker, job.run, starts[i::workers])
                   for i in range(workers)]
        for f in futures:
            f.result()  # re-raises a worker's error
        torch.set_num_threads(torch.get_num_threads())  # the count new threads start with (a worker set 1)
    return out.to(query.dtype).transpose(1, 2).contiguous()  # (B, Tq, H, Dv)


MAX_WORKERS = 16  # each holds up to three chunk buffers (24 MiB): at most 384 MiB of scratch in all
WORKERS_ENV = "ANOMALY_PROBE_CHUNK_WORKERS"
"""Environment variable that fixes the number of chunk workers (a positive integer; 1: none)."""


def chunk_workers(device: torch.device, n_chunks: int) -> int:
    """Threads that each run whole query chunks (CPU only; at most one per intra-op thread and chunk).

    On the CPU a chunk's ops are small enough that the intra-op pool's fork/join around each op, and
    its spinning workers, cost as much as the work (the statistics kernel ran slower with two
    threads than with one). Whole chunks on ``torch.get_num_threads()`` worker threads, each with
    one intra-op thread, keep every chunk in its core's cache and need no synchronisation until the
    end of the call. Results equal the serial loop's up to float rounding of the matmuls.
    """
    import os

    if device.type != "cpu" or n_chunks < 2:
        return 1
    fixed = os.environ.get(WORKERS_ENV, "").strip()
    n = int(fixed) if fixed.isdigit() and int(fixed) > 0 else torch.get_num_threads()
    if n > 1 and not can_toggle(torch.get_num_threads()):  # a worker could not set its own count
        return 1
    return max(1, min(n, n_chunks, MAX_WORKERS))


def _in_worker(fn: Callable, *args) -> None:
    """Run ``fn(*args)`` on a worker thread with one intra-op thread. With OpenMP, the count a thread
    sets is its own (OpenMP's and MKL's per-thread settings): the caller's thread keeps its count, and
    restores the process-wide count new threads start from afterwards."""
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    fn(*args)


@dataclass
class _Chunks:
    """Everything the chunk loop of one :func:`fused_attention` call reads (shared by its workers)."""

    module: torch.nn.Module
    query: torch.Tensor  # (B, H, Tq, D)
    k: torch.Tensor  # (B, Hkv, Tk, D), compute dtype, rounded
    v: torch.Tensor
    visible: torch.Tensor | None  # (1|B, 1|H, Tq|1, Tk)
    bias: torch.Tensor | None
    spans: RowSpans | None
    out: torch.Tensor  # (B, H, Tq, Dv), compute dtype; each chunk writes its rows
    step: int  # query rows per chunk
    scale: float
    recipe: Recipe
    observe: Observer | None
    softcap: float | None

    def run(self, starts: list[int]) -> None:
        """Compute the chunks starting at query rows ``starts`` (scratch buffers of their own)."""
        B, H, Tq, _ = self.query.shape
        Tk = self.k.shape[-2]
        cd, rnd, visible, bias = self.recipe.compute_dtype, self.recipe.round_to, self.visible, self.bias
        size = B * H * min(self.step, Tq) * Tk  # the largest chunk's scores
        buffers = [torch.empty(size, dtype=cd, device=self.query.device)
                   for _ in range(2 if self.observe is None else 3)]
        for lo in starts:
            hi = min(lo + self.step, Tq)
            per_row = visible is not None and visible.shape[-2] > 1
            vis = None if visible is None else (visible[..., lo:hi, :] if per_row else visible)
            a, b, full = (0, Tk, Tk) if self.spans is None else self.spans.chunk(*((lo, hi) if per_row else (0, 1)))
            q = _round(self.query[:, :, lo:hi].to(cd), rnd)
            shape = (B, H, hi - lo, b - a)
            views = [buf[:B * H * (hi - lo) * (b - a)].view(shape) for buf in buffers]  # contiguous, reused
            logits = gqa_scores(q * self.scale, self.k[:, :, a:b], dtype=cd, out=views[0])  # (B, H, c, b - a)
            logits = _round(logits, rnd)
            if self.softcap is not None:
                logits = torch.tanh(logits / self.softcap) * self.softcap
            if bias is not None:  # an additive float mask's biases on visible keys (sdpa adds them too)
                logits = logits + (bias[..., lo:hi, a:b] if bias.shape[-2] > 1 else bias[..., a:b]).to(cd)
            vis_ab = None if vis is None else vis[..., a:b]
            weights = softmax_chunk(logits, vis_ab, full - a, topk=self.recipe.topk, observe=self.observe,
                                    module=self.module, rows=(lo, hi), cols=slice(a, b), n_keys=Tk,
                                    out=views[1], scratch=views[2] if self.observe is not None else None)
            weights = _round(weights, rnd)
            self.out[:, :, lo:hi] = gqa_weighted(weights, self.v[:, :, a:b])  # (B, H, c, Dv)
