"""The KV-cache policy contract shared by every method and every engine.

A method answers, in absolute token indices ``t`` (the query) and ``j`` (a key):

* :meth:`CacheMethod.keep_heads` -- at an eviction step, which slots of one layer each KV head keeps,
  given a :class:`LayerView` (that layer's keys/values, the absolute position of every slot, and, when
  the policy sets ``needs_attention``, the last query's attention weights and the attention each key
  has accumulated). Head-wise kept sets are the norm (kvpress keeps its top-k per KV head). The default
  is :meth:`CacheMethod.keep`, the sinks + recent-window rule, the same for every head and layer;
* :meth:`CacheMethod.quantize` -- how stored keys/values are rounded (``None``: not at all);
* :meth:`CacheMethod.visible` -- which keys query ``t`` attends to (parallel engine, and tests; only
  for the sinks + recent-window rule);
* :meth:`CacheMethod.query_position` / :meth:`CacheMethod.key_position` -- the RoPE positions the
  method's position mode assigns (sinks + recent-window rule; the policy engines derive them from the
  cache for every other policy: in-cache positions are per head, each key at its slot in its head);
* :meth:`CacheMethod.ablations` -- the method-side checks the policy declares (runs that remove one
  ingredient of it), judged by the ``ablation`` hypothesis;
* :func:`record_decision` -- how a :meth:`~CacheMethod.quantize` reports its discrete choices (the
  integer levels it rounded to) to the engines' decision trace; kept sets are traced by the engine.

Semantics follow the StreamingLLM evaluation loop: the new token is appended, attention runs over
the cache plus the new token, and *then* the cache is evicted down to its capacity. With
``compress_every`` C > 1 the cache is evicted only after steps ``t`` with ``(t + 1) % C == 0`` (kvpress's
compression interval), so between evictions it grows to capacity + C - 1. With C = 1 query ``t`` of
the sinks + recent rule sees keys ``j <= t`` with ``j < sink_size`` or ``j >= t - recent_size``.
Sinks and a recent window are options of every policy (``sink_size``, ``recent_size``).
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Callable, ClassVar, NamedTuple

import torch

from anomaly_probe.errors import UserError

POSITION_MODES = ("in-cache", "absolute", "naive")
"""How a compressed cache assigns RoPE positions.

``in-cache``: keys are re-rotated to their slot 0..n-1 after every eviction and the query takes the
next slot (StreamingLLM paper). ``absolute``: keys keep their original positions and the query uses
its true position. ``naive``: HF's post-RoPE cache is evicted as is, and transformers derives every
new position from the cache length, so new tokens stop advancing once the cache is full.
"""


DECISIONS: ContextVar[Callable[[str, torch.Tensor], None] | None] = ContextVar("anomaly_probe_decisions",
                                                                            default=None)
"""``sink(kind, integers)``: set by a policy engine around :meth:`CacheMethod.quantize` while it traces
decisions (:mod:`anomaly_probe.engines.decision_trace`); ``None`` otherwise."""


def record_decision(kind: str, choice: torch.Tensor) -> None:
    """Report a discrete choice (e.g. the integer levels of a rounded group) to the engine's decision trace.

    Two engines that take the same choices must give the same NLL; a choice that a float rounding
    difference flips (a value on a rounding boundary) explains where they part. Observe-only: does
    nothing unless an engine traces decisions.

    Parameters
    ----------
    kind : str
        What was decided, e.g. ``"K levels"``.
    choice : torch.Tensor
        The choice as integers, any shape (compared exactly).
    """
    sink = DECISIONS.get()
    if sink is not None:
        sink(kind, choice)


@dataclass
class LayerView:
    """What a policy sees of one layer at an eviction step (one sample, batch dimension dropped).

    Attributes
    ----------
    layer : int
        Decoder layer index.
    keys, values : torch.Tensor
        The cached keys and values as stored (keys rotated by RoPE at their cache position), shape
        (Hkv, n, D), the model's dtype. Slots of each head are sorted by absolute position.
    positions : torch.Tensor
        Absolute token index of every slot, shape (Hkv, n), int64, on the keys' device.
    last_attention : torch.Tensor or None
        Attention weights of the last query (the newest token) on every slot, per query head, shape
        (H, n), float32; only when the policy sets ``needs_attention``.
    accumulated : torch.Tensor or None
        Sum over every query since the key entered the cache of its weight on the key, averaged over
        the query heads sharing each KV head, shape (Hkv, n), float32; only with ``needs_attention``.
    module : torch.nn.Module or None
        The layer's attention module (for kvpress-style scorers).
    """

    layer: int
    keys: torch.Tensor
    values: torch.Tensor
    positions: torch.Tensor
    last_attention: torch.Tensor | None = None
    accumulated: torch.Tensor | None = None
    module: object = None

    @property
    def n(self) -> int:
        return int(self.keys.shape[-2])


class Ablation(NamedTuple):
    """A method-side check a policy declares: the same cache without one of its ingredients.

    ``role`` names the run (``window``, ``unquantised``...), ``method`` is the ablated cache, ``what``
    says what the ablation does, completing "... removes N of the gap", e.g. ``"replacing h2o's choice
    of keys by a recent-only window of the same capacity (256)"``.
    """

    role: str
    method: "CacheMethod"
    what: str


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
    compress_every : int
        Evict every this many tokens (``--compress-every``; 1: after every token).
    """

    name: ClassVar[str] = "base"
    needs_attention: ClassVar[bool] = False
    """True when :meth:`keep_heads` reads ``last_attention``/``accumulated`` (the engines then compute them)."""
    sink_size: int = 0
    recent_size: int = 0
    position_mode: str = "absolute"
    compress_every: int = 1

    def __post_init__(self) -> None:
        if self.position_mode not in POSITION_MODES:
            raise UserError(
                f"Unknown position mode {self.position_mode!r}. Available: {', '.join(POSITION_MODES)}"
            )
        if self.sink_size < 0 or self.recent_size < 0:
            raise UserError(
                f"--sink-size and --recent-size must be >= 0 (got {self.sink_size} and {self.recent_size})"
            )
        if not isinstance(self.compress_every, int) or self.compress_every < 1:
            raise UserError(f"--compress-every {self.compress_every}: must be a whole number >= 1")

    # ----------------------------------------------------------------------------- sizes
    @property
    def capacity(self) -> int | None:
        """Cached tokens kept between steps, or ``None`` for an unbounded cache."""
        return None

    @property
    def is_full(self) -> bool:
        return self.capacity is None

    @property
    def uses_base_rule(self) -> bool:
        """True when eviction and positions are the sinks + recent-window rule of this class, applied
        after every token, with nothing rounded (what the parallel engine scores exactly)."""
        rules = ("keep", "keep_heads", "visible", "query_position", "key_position", "quantize")
        return (all(getattr(type(self), r) is getattr(CacheMethod, r) for r in rules)
                and not self.needs_attention and self.compress_every == 1)

    def label(self) -> str:
        """Short human label, e.g. ``streaming_llm(4+252, in-cache)``."""
        return self.name

    def every_suffix(self) -> str:
        """``", every 64"`` when ``compress_every`` > 1 (appended inside labels), else ``""``."""
        return f", every {self.compress_every}" if self.compress_every > 1 else ""

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

    def keep_heads(self, view: LayerView) -> torch.Tensor | None:
        """Slots each KV head of one layer keeps at an eviction step.

        Parameters
        ----------
        view : LayerView
            The layer's cache (``view.n`` slots per head) and, with ``needs_attention``, its attention.

        Returns
        -------
        torch.Tensor or None
            Sorted slot indices per head, shape (Hkv, n_kept), int64 (the same ``n_kept`` for every
            head and layer), or ``None`` when nothing is evicted. Default: :meth:`keep` for every head.
        """
        keep = self.keep(view.n)
        if keep is None:
            return None
        return keep.to(view.keys.device)[None].expand(view.keys.shape[0], -1)  # (Hkv, n_kept)

    def quantize(self, keys: torch.Tensor, values: torch.Tensor, positions: torch.Tensor,
                 seen_before: int, seen: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Round stored keys/values after a forward; ``None`` (the default): stored as computed.

        Parameters
        ----------
        keys, values : torch.Tensor
            One layer's stored keys (before any in-cache re-rotation) and values, shape (Hkv, n, D).
        positions : torch.Tensor
            Absolute token index of every slot, shape (Hkv, n).
        seen_before, seen : int
            Tokens the model had consumed before and after this forward.

        A policy that rounds should report its integer levels with :func:`record_decision`, so that
        ``check`` can say where a float rounding flip made two engines part.
        """
        return None

    def ablations(self) -> tuple[Ablation, ...]:
        """Method-side checks this policy declares (see :class:`Ablation`).

        Default: none for the full cache and the sinks + recent rule (the ``sinks`` check covers
        StreamingLLM); for any other bounded policy, the generic one: a recent-only window of the same
        capacity and position mode (does the policy's choice of keys matter?).
        """
        rules = ("keep", "keep_heads", "quantize")
        sinks_recent = all(getattr(type(self), r) is getattr(CacheMethod, r) for r in rules) and not self.needs_attention
        if self.capacity is None or sinks_recent:  # at any --compress-every
            return ()
        from anomaly_probe.methods.window import WindowCache

        window = WindowCache(recent_size=self.capacity, position_mode=self.position_mode,
                             compress_every=self.compress_every)
        return (Ablation("window", window, f"replacing {self.name}'s choice of keys by a recent-only window of the "
                                           f"same capacity ({self.capacity})"),)

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
