"""The KV-cache method contract shared by every method and both engines.

A method answers three questions, all in absolute token indices ``t`` (the query) and ``j`` (a key):

* :meth:`CacheMethod.keep` -- after a step, which cached entries survive eviction (stepwise engine);
* :meth:`CacheMethod.visible` -- which keys query ``t`` attends to (parallel engine, and tests);
* :meth:`CacheMethod.query_position` / :meth:`CacheMethod.key_position` -- the RoPE positions the
  method's position mode assigns.

Semantics follow the StreamingLLM evaluation loop: the new token is appended, attention runs over
the cache plus the new token, and *then* the cache is evicted down to ``sink_size + recent_size``.
So query ``t`` sees keys ``j <= t`` with ``j < sink_size`` or ``j >= t - recent_size``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from anomaly_probe.errors import UserError

POSITION_MODES = ("in-cache", "absolute", "naive")
"""How a compressed cache assigns RoPE positions.

``in-cache``: keys are re-rotated to their slot 0..n-1 after every eviction and the query takes the
next slot (StreamingLLM paper). ``absolute``: keys keep their original positions and the query uses
its true position. ``naive``: HF's post-RoPE cache is evicted as is, and transformers derives every
new position from the cache length, so new tokens stop advancing once the cache is full.
"""


@dataclass(frozen=True)
class CacheMethod:
    """Base class: a full cache unless a subclass bounds it.

    Parameters
    ----------
    sink_size : int
        Number of leading tokens always kept (attention sinks).
    recent_size : int
        Number of most recent tokens kept after each step.
    position_mode : str
        One of :data:`POSITION_MODES`; irrelevant for a full cache (always absolute).
    """

    name: ClassVar[str] = "base"
    sink_size: int = 0
    recent_size: int = 0
    position_mode: str = "absolute"

    def __post_init__(self) -> None:
        if self.position_mode not in POSITION_MODES:
            raise UserError(
                f"Unknown position mode {self.position_mode!r}. Available: {', '.join(POSITION_MODES)}"
            )
        if self.sink_size < 0 or self.recent_size < 0:
            raise UserError(
                f"--sink-size and --recent-size must be >= 0 (got {self.sink_size} and {self.recent_size})"
            )

    # ----------------------------------------------------------------------------- sizes
    @property
    def capacity(self) -> int | None:
        """Cached tokens kept between steps, or ``None`` for an unbounded cache."""
        return None

    @property
    def is_full(self) -> bool:
        return self.capacity is None

    def label(self) -> str:
        """Short human label, e.g. ``streaming_llm(4+252, in-cache)``."""
        return self.name

    def describe(self) -> dict:
        """Plain-data description saved in ``results.json``."""
        return {
            "method": self.name,
            "sink_size": self.sink_size,
            "recent_size": self.recent_size,
            "position_mode": None if self.is_full else self.position_mode,
            "capacity": self.capacity,
        }

    # ----------------------------------------------------------------------------- eviction
    def keep(self, n_cached: int) -> torch.Tensor | None:
        """Slots to keep in a cache holding ``n_cached`` tokens, after a step.

        Returns
        -------
        torch.Tensor or None
            Sorted slot indices, shape (n_kept,), or ``None`` when nothing is evicted.
        """
        cap = self.capacity
        if cap is None or n_cached <= cap:
            return None
        sinks = torch.arange(min(self.sink_size, n_cached))
        recent = torch.arange(n_cached - self.recent_size, n_cached)
        return torch.cat([sinks, recent])

    def visible(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Which keys each query attends to, in absolute indices.

        Parameters
        ----------
        q : torch.Tensor
            Query indices, shape (Tq,).
        k : torch.Tensor
            Key indices, shape (Tk,).

        Returns
        -------
        torch.Tensor
            Boolean mask, shape (Tq, Tk).
        """
        q = q[:, None]
        k = k[None, :]
        causal = k <= q
        if self.capacity is None:
            return causal
        return causal & ((k < self.sink_size) | (k >= q - self.recent_size))

    # ----------------------------------------------------------------------------- positions
    def query_position(self, t: torch.Tensor) -> torch.Tensor:
        """RoPE position of query ``t`` (absolute index), shape like ``t``."""
        if self.capacity is None or self.position_mode == "absolute":
            return t
        # in-cache and naive: the query takes the next slot, i.e. the number of cached tokens.
        return torch.clamp(t, max=self.capacity)

    def key_position(self, t: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """RoPE position of key ``j`` as seen by query ``t`` (broadcasting), for visible pairs."""
        t, j = torch.broadcast_tensors(t, j)
        if self.capacity is None or self.position_mode == "absolute":
            return j
        if self.position_mode == "naive":
            # Rotated once, at insertion, with the cache length at that time.
            return torch.clamp(j, max=self.capacity)
        # in-cache: sinks keep slots 0..s-1; a recent key sits at distance t - j below the query.
        recent = self.query_position(t) - (t - j)
        return torch.where(j < self.sink_size, j, recent)
