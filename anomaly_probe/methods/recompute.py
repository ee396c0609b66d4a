"""The recompute oracle: strided sliding-window re-computation (HF's fixed-length perplexity recipe).

No cache is carried: each window of at most ``window`` tokens goes through the model afresh at
positions ``0..window-1``, and only its last ``stride`` queries are scored (the first window scores all
of its queries). No query ever sees a position past ``window``, so with ``window`` <= the trained
context this is the baseline that never leaves the trained positions.

Window ``k >= 1`` starts at token ``k * stride``; it scores queries ``t`` in
``[window + (k - 1) * stride, window + k * stride)``, so query ``t`` sees keys ``[k * stride, t]``
(between ``window - stride + 1`` and ``window`` of them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from anomaly_probe.errors import UserError
from anomaly_probe.methods.base import CacheMethod


@dataclass(frozen=True, init=False)
class RecomputeOracle(CacheMethod):
    """Strided sliding-window recomputation; scored only by the ``recompute`` engine.

    Parameters
    ----------
    window : int
        Tokens per forward (give the model's trained context for the position baseline).
    stride : int, optional
        Queries scored per window after the first; default ``window // 2``.
    """

    name: ClassVar[str] = "recompute"
    window: int = field(default=0)
    stride: int = field(default=0)

    def __init__(self, window: int, stride: int | None = None) -> None:
        object.__setattr__(self, "window", int(window))
        object.__setattr__(self, "stride", int(window) // 2 if stride is None else int(stride))
        object.__setattr__(self, "sink_size", 0)
        object.__setattr__(self, "recent_size", 0)
        object.__setattr__(self, "position_mode", "in-cache")  # positions are window slots 0..window-1
        self.__post_init__()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.window < 1:
            raise UserError(f"recompute window must be >= 1 token (got {self.window})")
        if not 1 <= self.stride <= self.window:
            raise UserError(f"recompute stride must be between 1 and the window {self.window} (got {self.stride})")

    @property
    def capacity(self) -> int:
        return self.window

    def label(self) -> str:
        return f"recompute(W={self.window}, S={self.stride})"

    def describe(self) -> dict:
        return {
            "method": self.name,
            "window": self.window,
            "stride": self.stride,
            "sink_size": 0,
            "recent_size": None,
            "position_mode": "window-slots",
            "capacity": self.capacity,
        }

    # ----------------------------------------------------------------------------- rules
    def window_start(self, t: torch.Tensor) -> torch.Tensor:
        """First token of the window that scores query ``t`` (absolute index), shape like ``t``."""
        k = torch.div(t - self.window, self.stride, rounding_mode="floor") + 1  # window number
        return torch.where(t < self.window, torch.zeros_like(t), k * self.stride)

    def keep(self, n_cached: int) -> torch.Tensor | None:
        raise UserError("the recompute oracle keeps no cache; score it with --engine recompute")

    def visible(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Keys ``[window_start(t), t]`` for each query ``t``, shape (Tq, Tk)."""
        q, k = q[:, None], k[None, :]
        return (k <= q) & (k >= self.window_start(q))

    def query_position(self, t: torch.Tensor) -> torch.Tensor:
        return t - self.window_start(t)

    def key_position(self, t: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        t, j = torch.broadcast_tensors(t, j)
        return j - self.window_start(t)
