"""Scaled attention scores in float32, recomputed from a layer's query and key (shared GQA path)."""

from __future__ import annotations

from typing import Iterator

import torch

from anomaly_probe.attention import gqa_scores

CHUNK_ELEMENTS = 1 << 22  # float32 scores per query chunk (16 MiB): never a T x T map


def scaled_scores(query: torch.Tensor, key: torch.Tensor, scaling: float,
                  softcap: float | None = None) -> torch.Tensor:
    """``(q * scaling) k^T`` in float32, GQA keys shared rather than repeated.

    Parameters
    ----------
    query : torch.Tensor
        Shape (B, H, Tq, D).
    key : torch.Tensor
        Shape (B, Hkv, Tk, D), H a multiple of Hkv; query head h reads KV head h // (H // Hkv)
        (transformers' ``repeat_kv`` order).
    scaling : float
        Score scale (usually D ** -0.5).
    softcap : float, optional
        Gemma-style cap: ``tanh(s / softcap) * softcap``.

    Returns
    -------
    torch.Tensor
        Shape (B, H, Tq, Tk), float32.
    """
    s = gqa_scores(query.float() * scaling, key)  # (B, H, Tq, Tk)
    if softcap is not None:
        s = torch.tanh(s / softcap) * softcap
    return s


def scores_into(out: torch.Tensor, query: torch.Tensor, key: torch.Tensor, scaling: float,
                softcap: float | None = None, bias: torch.Tensor | None = None) -> None:
    """Write :func:`scaled_scores` (plus ``bias``) into a preallocated view, without a temporary.

    Parameters
    ----------
    out : torch.Tensor
        float32 view of shape (H, Tq, Tk) whose last dim is contiguous (a row of a
        :class:`~anomaly_probe.probes.stat_batch.StatBatch`).
    query, key, scaling, softcap
        As in :func:`scaled_scores`, batch size 1.
    bias : torch.Tensor, optional
        Additive scores broadcastable to (1, H, Tq, Tk).
    """
    gqa_scores(query.float() * scaling, key, out=out[None])  # (1, H, Tq, Tk) written in place
    if softcap is not None:
        out.copy_(torch.tanh(out / softcap) * softcap)
    if bias is not None:
        out.add_(bias[0])


def scores_in_chunks(query: torch.Tensor, key: torch.Tensor, scaling: float, softcap: float | None = None,
                     max_elements: int = CHUNK_ELEMENTS) -> Iterator[tuple[int, torch.Tensor]]:
    """:func:`scaled_scores` of consecutive query chunks of at most ``max_elements`` scores.

    Yields
    ------
    tuple of (int, torch.Tensor)
        First query row of the chunk and its scores, shape (B, H, tq, Tk).
    """
    B, H, Tq, _ = query.shape
    rows = max(1, max_elements // max(1, B * H * key.shape[2]))
    for lo in range(0, Tq, rows):
        yield lo, scaled_scores(query[:, :, lo:lo + rows], key, scaling, softcap)
