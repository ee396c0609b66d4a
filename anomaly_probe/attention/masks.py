"""The one converter from the mask an attention function receives to "which keys each query attends to".

transformers hands an attention function one of three things:

* ``None``: no masking needed. sdpa's mask function returns it for a plain causal forward (and a
  single query sees every key), so several queries are causal, aligned to the last key.
* a boolean 4D tensor (sdpa's masks, and the parallel engine's prepared mask): True = attend.
* a float 4D tensor (eager's masks): additive; masked keys hold the dtype's minimum (or ``-inf``).

The float threshold is ``finfo(dtype).min / 2``, not ``finfo(dtype).min``: transformers writes exactly
the minimum, but a mask that was combined with another one or with a bias can land anywhere between
``-inf`` and a little above the minimum (in float16 the minimum plus 100 is representable and is
``> min``). Any additive score at or below ``min / 2`` gets softmax weight ``exp(min / 2 - max)``, which
is exactly 0 in every float dtype, so "masked" is what the attention itself does with such keys. What
is above it is visible, and its value is a real additive bias that the scores carry (``bias``).
"""

from __future__ import annotations

import torch


def causal_visible(n_queries: int, n_keys: int, device: torch.device, lo: int = 0,
                   tq: int | None = None) -> torch.Tensor:
    """Causal mask of query rows ``lo:lo+tq`` when the ``n_queries`` queries are the last of ``n_keys`` keys.

    Returns
    -------
    torch.Tensor
        Boolean, shape (1, 1, tq, n_keys); row ``r`` sees keys ``0 .. n_keys - n_queries + lo + r``.
    """
    tq = n_queries - lo if tq is None else tq
    q = torch.arange(lo, lo + tq, device=device) + (n_keys - n_queries)  # (tq,) key index of each query
    return (torch.arange(n_keys, device=device)[None, :] <= q[:, None])[None, None]  # (1, 1, tq, Tk)


def visible_from_mask(mask: torch.Tensor | None, lo: int, tq: int, n_queries: int, n_keys: int,
                      device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Which keys query rows ``lo:lo+tq`` attend to, from the mask the attention function received.

    Parameters
    ----------
    mask : torch.Tensor or None
        ``None``: all keys for one query, causal (aligned to the last key) for several. Boolean 4D
        (1|B, 1|H, Tq|1, Tk): True = attend (sdpa). Float 4D: additive; at or below
        ``finfo(dtype).min / 2`` = masked (eager; see the module docstring for the threshold).
    lo, tq : int
        First query row and number of rows wanted.
    n_queries, n_keys : int
        Tq and Tk of the forward.
    device : torch.device
        Where a mask built from ``None`` lives.

    Returns
    -------
    tuple
        ``visible``: bool, (1|B, 1|H, tq, Tk) (a mask with one row is returned as is, broadcastable), or
        ``None`` for all keys; and ``bias``: float32 additive scores on visible keys (0 on masked ones),
        same shape, from a float mask, or ``None``.

    Raises
    ------
    TypeError
        A mask that is neither ``None`` nor a 4D tensor (flex's block masks, flash's padding masks).
    """
    if mask is None:
        if n_queries == 1:
            return None, None
        return causal_visible(n_queries, n_keys, device, lo, tq), None
    if not isinstance(mask, torch.Tensor) or mask.dim() != 4:
        raise TypeError(f"unsupported attention mask {type(mask).__name__} {tuple(getattr(mask, 'shape', ()))}; "
                        "expected None or a 4D tensor")
    rows = mask[..., lo:lo + tq, :] if mask.shape[-2] > 1 else mask
    if rows.dtype == torch.bool:
        return rows, None
    visible = rows > torch.finfo(rows.dtype).min / 2
    return visible, rows.float().masked_fill(~visible, 0.0)
