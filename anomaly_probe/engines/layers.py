"""Layer-type-aware cache rules: which keys each group of decoder layers keeps, sees and where.

Most models treat every layer alike, and the engines' single cache rule (the method) is enough
(:attr:`Layout.uniform`). Sliding-window and hybrid models (Mistral, Gemma 2/3, Cohere2, GPT-OSS, Qwen2
with its sliding option) are not: a sliding layer already bounds its own cache, so the layers are split
into :class:`LayerGroup` s of equal window and layer type, each with its own rule:

* full-attention layers follow the method (the policy under test);
* sliding layers keep what transformers' sliding cache keeps (the last ``window - 1`` tokens), unless
  the policy applies to them too (``--policy-on-sliding``, or a model with no full-attention layer at
  all, such as Mistral v0.1, where the policy has nowhere else to act): then a key is kept only when the
  policy keeps it *and* it lies within the window (:class:`WindowedPolicy`). The window always bounds a
  sliding layer, so a cache that never evicts still equals the full cache.

Positions. Every layer of a forward shares one ``position_ids`` (the query's position, set by the
method's position mode), so a group whose rule places the query elsewhere gets its keys placed to
match: in ``in-cache`` mode a key of group ``g`` sits at
``q_pos(t) - (rule_g.query_position(t) - rule_g.key_position(t, j))``, i.e. at the group's own in-cache
distance below the shared query (a sliding layer keeps true distances ``t - j``). In ``absolute`` mode
keys keep their true positions and in ``naive`` mode they stay where they were stored (positions derived
from the full layers' cache length). ALiBi models use the same distances as a bias instead of a rotation.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator

import torch

from anomaly_probe.errors import UserError
from anomaly_probe.methods.base import CacheMethod
from anomaly_probe.methods.window import WindowCache
from anomaly_probe.models.positions import LayerScheme, layer_schemes, rope_for_mode


@dataclass(frozen=True)
class LayerGroup:
    """Decoder layers with the same window and layer type, and the cache rule they follow.

    Attributes
    ----------
    layers : tuple of int
        Decoder layer indices.
    window : int or None
        Sliding window (keys a query sees, itself included); ``None``: full attention.
    layer_type : str or None
        The config's layer type (the key of the model's per-type mask dict).
    rule : CacheMethod
        What the group's cache keeps (``keep``), shows (``visible``) and where (positions).
    policy : bool
        Whether the user's policy acts on this group.
    scheme : LayerScheme
        Positions of the group's layers (the same for all of them).
    """

    layers: tuple[int, ...]
    window: int | None
    layer_type: str | None
    rule: CacheMethod
    policy: bool
    scheme: LayerScheme

    def key_positions(self, position_rule: CacheMethod, t: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """In-cache position of key ``j`` for query ``t`` in this group's layers (broadcasting): the group's
        own in-cache distance below the shared query position ``position_rule.query_position(t)``."""
        t, j = torch.broadcast_tensors(t, j)
        return position_rule.query_position(t) - self.rule.query_position(t) + self.rule.key_position(t, j)


@dataclass(frozen=True)
class Layout:
    """The cache groups of one model under one method.

    Attributes
    ----------
    groups : tuple of LayerGroup
        Ordered by first layer.
    position_rule : CacheMethod
        The rule whose ``query_position`` every layer shares (the method, or the sliding rule of a
        model without full layers).
    schemes : tuple of LayerScheme
        One per decoder layer.
    mask_by_type : bool
        Whether the model takes a dict of masks keyed by layer type (hybrid models).
    """

    groups: tuple[LayerGroup, ...]
    position_rule: CacheMethod
    schemes: tuple[LayerScheme, ...]
    mask_by_type: bool

    @property
    def uniform(self) -> bool:
        """One group of full-attention RoPE (or position-free) layers following the method: the engines'
        plain path, unchanged."""
        return len(self.groups) == 1 and self.groups[0].window is None and not self.alibi

    @property
    def alibi(self) -> bool:
        return any(s.kind == "alibi" for s in self.schemes)

    def layered_steps(self, mode: str) -> bool:
        """Whether one-token steps need the per-group path: anything but uniform layers, except ALiBi
        outside ``absolute`` mode (the model's own slot-based bias is the compressed distance)."""
        if self.uniform:
            return False
        return not (self.alibi and len(self.groups) == 1 and self.groups[0].window is None and mode != "absolute")



POLICY_ON_SLIDING: ContextVar[bool] = ContextVar("anomaly_probe_policy_on_sliding", default=False)
"""Whether the policy also applies to sliding layers (``--policy-on-sliding``); set with :func:`sliding_policy`."""


@contextmanager
def sliding_policy(on: bool) -> Iterator[None]:
    """Within the block, the engines apply the policy to sliding layers too when ``on``."""
    token = POLICY_ON_SLIDING.set(bool(on))
    try:
        yield
    finally:
        POLICY_ON_SLIDING.reset(token)


def model_layout(model: torch.nn.Module, method: CacheMethod) -> Layout:
    """:func:`layout` under the :data:`POLICY_ON_SLIDING` in force."""
    return layout(model, method, POLICY_ON_SLIDING.get())


def layout(model: torch.nn.Module, method: CacheMethod, policy_on_sliding: bool = False) -> Layout:
    """Split ``model``'s layers into cache groups for ``method`` (see the module docstring).

    Raises
    ------
    UserError
        A position mode the layers cannot follow; a hybrid model without per-type layer names; a policy
        that cannot be applied to sliding layers.
    """
    schemes = layer_schemes(model)
    mode = "absolute" if method.is_full else method.position_mode
    rope_for_mode(schemes, mode, model.config.model_type)
    keys: list[tuple[int | None, str | None]] = []
    for s in schemes:
        if (s.window, s.layer_type) not in keys:
            keys.append((s.window, s.layer_type))
    has_full = any(w is None for w, _ in keys)
    on_sliding = policy_on_sliding or not has_full
    groups = []
    for window, layer_type in keys:
        layers = tuple(i for i, s in enumerate(schemes) if (s.window, s.layer_type) == (window, layer_type))
        if len({(s.kind, s.rope_type, s.base) for s in (schemes[i] for i in layers)}) > 1:
            raise UserError(f"layers {layers} share a window and layer type but not their positions; unsupported")
        policy = window is None or on_sliding
        rule = method if window is None else _sliding_rule(method, window, policy, mode)
        groups.append(LayerGroup(layers, window, layer_type, rule, policy, schemes[layers[0]]))
    if len(groups) > 1 and any(g.layer_type is None for g in groups):
        raise UserError(f"model type {model.config.model_type!r} mixes sliding and full layers without naming "
                        "them (config.layer_types); unsupported (closest supported family: Gemma 3)")
    position_rule = method if has_full else groups[0].rule
    return Layout(tuple(groups), position_rule, tuple(schemes), mask_by_type=len(groups) > 1)


def _sliding_rule(method: CacheMethod, window: int, policy: bool, mode: str):
    """The rule of a sliding group: its window alone, or the policy inside the window."""
    if window < 2:
        raise UserError(f"a sliding window of {window} token(s) is not supported (need >= 2)")
    if not policy or method.is_full:
        return WindowCache(recent_size=window - 1, position_mode=mode)
    return WindowedPolicy(method, window)


class WindowedPolicy:
    """The policy applied inside a sliding window: a key is kept and seen only when the policy keeps it
    *and* it lies within the window (``t - j < window``). Positions are the policy's.

    Parameters
    ----------
    method : CacheMethod
        The policy under test.
    window : int
        The layers' sliding window.
    """

    def __init__(self, method: CacheMethod, window: int) -> None:
        self.method, self.window = method, window
        self.sink_size = method.sink_size
        self.is_full = False

    def visible(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Shape (Tq, Tk): the policy's visible keys within the window."""
        return self.method.visible(q, k) & (q[:, None] - k[None, :] < self.window)

    def query_position(self, t: torch.Tensor) -> torch.Tensor:
        return self.method.query_position(t)

    def key_position(self, t: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        return self.method.key_position(t, j)


def keep_for_next(rule, slots: torch.Tensor, next_query: int) -> torch.Tensor | None:
    """Slots a group keeps for query ``next_query``: ``rule.keep`` for a cache method, else (a
    :class:`WindowedPolicy`) the slots it will see; ``None``: keep all."""
    if isinstance(rule, CacheMethod):
        return rule.keep(slots.numel())
    keep = rule.visible(torch.tensor([next_query]), slots)[0].nonzero().flatten()
    return None if keep.numel() == slots.numel() else keep


def group_masks(layout: Layout, visible: list[torch.Tensor], dtype: torch.dtype, device: torch.device,
                boolean: bool = False):
    """The ``attention_mask`` argument for one forward from each group's ``visible`` (shape (Tq, Tk_g),
    bool, in the order of ``layout.groups``): one 4D mask per group, shape (1, 1, Tq, Tk_g).

    Additive (0 visible, the dtype's minimum masked) unless ``boolean``; a dict keyed by layer type for
    hybrid models, else the single group's tensor.
    """
    def one(v: torch.Tensor) -> torch.Tensor:
        v = v.to(device)[None, None]
        if boolean:
            return v
        return torch.zeros(v.shape, dtype=dtype, device=device).masked_fill(~v, torch.finfo(dtype).min)

    if not layout.mask_by_type:
        return one(visible[0])
    return {g.layer_type: one(v) for g, v in zip(layout.groups, visible)}


class CacheView:
    """Some layers of a ``DynamicCache`` (``.layers`` only): lets the single-rule cache helpers
    (eviction, re-rotation) act on one group."""

    def __init__(self, cache, layers: tuple[int, ...]) -> None:
        self._cache, self._idx = cache, layers

    @property
    def layers(self) -> list:
        return [self._cache.layers[i] for i in self._idx]
