"""The one grouped-query (GQA/MQA) score path: every query head against its shared key head, no copies.

With H query heads and Hkv key/value heads (H a multiple of Hkv, G = H // Hkv), query head ``h`` reads
key/value head ``h // G`` (transformers' ``repeat_kv`` order). Instead of repeating keys and values G
times, the G query heads of a group are stacked as extra rows of one matmul per key head:
``(B, Hkv, G*n, D) @ (B, Hkv, D, m)``. MHA is G = 1, MQA is Hkv = 1.
"""

from __future__ import annotations

import torch


def gqa_scores(query: torch.Tensor, key: torch.Tensor, dtype: torch.dtype = torch.float32,
               out: torch.Tensor | None = None) -> torch.Tensor:
    """``query @ key^T`` per head in ``dtype`` (unscaled: scale the query or the result as needed).

    Parameters
    ----------
    query : torch.Tensor
        Shape (B, H, n, D).
    key : torch.Tensor
        Shape (B, Hkv, m, D), H a multiple of Hkv.
    dtype : torch.dtype
        Dtype of the matmul (float32 by default; both inputs are converted, without a copy when they
        already have it).
    out : torch.Tensor, optional
        Where to write, shape (B, H, n, m) in ``dtype``, viewable as (B, Hkv, G*n, m) (e.g. the last
        dim contiguous and the head and query dims mergeable).

    Returns
    -------
    torch.Tensor
        Scores, shape (B, H, n, m), ``dtype`` (``out`` when given).
    """
    B, H, n, D = query.shape
    Hkv, m = key.shape[1], key.shape[2]
    if H % Hkv:
        raise ValueError(f"{H} query heads cannot share {Hkv} key heads")
    qg = query.to(dtype).reshape(B, Hkv, (H // Hkv) * n, D)  # (B, Hkv, G*n, D); head h uses kv head h // G
    kt = key.to(dtype).transpose(-1, -2)  # (B, Hkv, D, m)
    if out is None:
        return (qg @ kt).view(B, H, n, m)
    torch.matmul(qg, kt, out=out.view(B, Hkv, (H // Hkv) * n, m))  # (B, Hkv, G*n, m)
    return out


def gqa_weighted(probs: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``probs @ value`` per head without repeating value heads.

    Parameters
    ----------
    probs : torch.Tensor
        Attention weights, shape (B, H, n, m).
    value : torch.Tensor
        Shape (B, Hkv, m, Dv), same dtype as ``probs``.

    Returns
    -------
    torch.Tensor
        Shape (B, H, n, Dv).
    """
    B, H, n, m = probs.shape
    Hkv = value.shape[1]
    return (probs.reshape(B, Hkv, (H // Hkv) * n, m) @ value).view(B, H, n, value.shape[-1])  # (B, H, n, Dv)
