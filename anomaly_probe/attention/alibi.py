"""ALiBi biases chosen by the engine: scoped hooks that hand each block the bias (and mask) to use.

ALiBi adds ``-slope_h * distance`` to the attention logits instead of rotating keys. BLOOM builds the
bias from cache slots (``slope_h * slot``, equal up to a per-row constant), so an evicted cache already
gets compressed, slot-based distances: the ``in-cache`` (and ``naive``) positions. The other modes and
the parallel engine need other distances: :func:`alibi_override` registers a forward pre-hook on every
block that replaces the ``alibi`` argument (and, when given, the attention mask) with the ones in
:data:`CURRENT_ALIBI`, and removes the hooks on exit. The model's own attention runs unchanged.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator

import torch

from anomaly_probe.attention import hf
from anomaly_probe.errors import UserError


@dataclass
class AlibiStep:
    """The distances and mask of one forward.

    Attributes
    ----------
    distance : torch.Tensor
        Query-to-key distance per (query, key), shape (Tq, Tk), float or int; masked pairs are ignored.
    mask : torch.Tensor or None
        Additive 4D mask (1, 1, Tq, Tk) in the model's dtype; ``None``: keep the model's own.
    """

    distance: torch.Tensor
    mask: torch.Tensor | None = None


CURRENT_ALIBI: ContextVar[AlibiStep | None] = ContextVar("anomaly_probe_alibi", default=None)


def alibi_bias(slopes: torch.Tensor, distance: torch.Tensor, batch: int, dtype: torch.dtype,
               device: torch.device) -> torch.Tensor:
    """``-slope_h * distance`` as BLOOM takes it: shape (batch * H, Tq, Tk)."""
    bias = -slopes.to(device)[:, None, None] * distance.to(device=device, dtype=torch.float32)[None]  # (H, Tq, Tk)
    return bias.repeat(batch, 1, 1).to(dtype)


@contextmanager
def alibi_override(model: torch.nn.Module) -> Iterator[None]:
    """Within the block, every forward of ``model`` takes its ALiBi bias from :data:`CURRENT_ALIBI`.

    Raises
    ------
    UserError
        When ``model`` is not an ALiBi model whose blocks take the bias as an argument (BLOOM).
    """
    blocks = hf.alibi_blocks(model)
    if blocks is None:
        raise UserError(f"model type {model.config.model_type!r}: its ALiBi bias cannot be set per step; only "
                        "BLOOM-style ALiBi is supported (closest supported family: BLOOM)")
    slopes = hf.alibi_slopes(model)

    def pre_hook(_module, args, kwargs):
        step = CURRENT_ALIBI.get()
        if step is None:
            return None
        hidden = args[0] if args else kwargs["hidden_states"]
        kwargs[hf.ALIBI_KWARG] = alibi_bias(slopes, step.distance, hidden.shape[0], hidden.dtype, hidden.device)
        if step.mask is not None:
            kwargs["attention_mask"] = step.mask
        return args, kwargs

    handles = [b.register_forward_pre_hook(pre_hook, with_kwargs=True) for b in blocks]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
