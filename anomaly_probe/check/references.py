"""Reference series that are signatures of target bugs, from the full cache's own logits."""

from __future__ import annotations

import numpy as np
import torch

CHUNK = 512  # queries per forward: logits of (CHUNK, vocab) at a time


@torch.no_grad()
def target_variants(model: torch.nn.Module, ids: torch.Tensor, n: int | None = None) -> dict[str, np.ndarray]:
    """NLL of the token just fed and of the token two ahead, full cache, from step ``i``'s logits.

    Parameters
    ----------
    model : torch.nn.Module
        HF causal LM (eval mode).
    ids : torch.Tensor
        One sample, shape (T,).
    n : int, optional
        Compute only the first ``n`` steps (a compressed cache equals the full cache until its first
        eviction, so its target bugs show on that prefix). Default: all ``T - 1`` steps.

    Returns
    -------
    dict
        ``same_token``: shape (n,), ``-log p_i(ids[i])``; ``two_ahead``: shape (min(n, T-2),),
        ``-log p_i(ids[i + 2])``. Nats, float64.
    """
    from transformers import DynamicCache

    T = ids.numel()
    n = T - 1 if n is None else min(n, T - 1)
    device = next(model.parameters()).device
    ids = ids.to(device)
    cache = DynamicCache(config=model.config)
    same, ahead = [], []
    for lo in range(0, n, CHUNK):
        hi = min(lo + CHUNK, n)
        pos = torch.arange(lo, hi, device=device)
        logits = model(input_ids=ids[lo:hi][None], cache=cache, position_ids=pos[None], use_cache=True).logits[0]
        logp = torch.log_softmax(logits.float(), dim=-1)  # (hi - lo, V)
        same.append(-logp.gather(-1, ids[lo:hi, None]).squeeze(-1))
        k = min(hi, T - 2) - lo  # steps whose token two ahead exists
        if k > 0:
            ahead.append(-logp[:k].gather(-1, ids[lo + 2:lo + 2 + k, None]).squeeze(-1))
    cat = lambda parts: torch.cat(parts).double().cpu().numpy() if parts else np.zeros(0)  # noqa: E731
    return {"same_token": cat(same), "two_ahead": cat(ahead)}
