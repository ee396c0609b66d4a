"""The one place that touches transformers' attention and cache internals.

transformers dispatches attention by name: ``model.config._attn_implementation`` selects a function
in the global ``AttentionInterface`` registry and a mask function in ``AttentionMaskInterface``
(``masking_utils``); without a mask function registered for the name the causal mask silently becomes
``None``. Eager attention is the exception: each modeling file has its own ``eager_attention_forward``.
Everything here names these internals (private attributes, registries, module paths) so that a
transformers upgrade breaks this file and nothing else; ``tests/test_attention.py`` fails if any other
module of the package names them. Public ``DynamicCache`` and the ``Auto*``/config classes are used
where they are needed.

Nothing is imported from transformers at import time.
"""

from __future__ import annotations

import sys
from typing import Callable

import torch


# ---------------------------------------------------------------------------- the model's switch
def is_switchable_model(model: torch.nn.Module) -> bool:
    """Whether ``model`` is a transformers model with a runtime attention switch (and a config)."""
    return hasattr(model, "set_attn_implementation") and getattr(model, "config", None) is not None


def dispatches_by_name(model: torch.nn.Module) -> bool:
    """Whether ``model``'s class calls attention through the registry (so that switching works).

    transformers inspects the modeling file's source for this; models that call their attention
    directly (e.g. GPT-Neo) ignore ``set_attn_implementation``. Unknown (older transformers): True.
    """
    can_set = getattr(type(model), "_can_set_attn_implementation", None)
    return True if can_set is None else bool(can_set())


def current_implementation(model: torch.nn.Module) -> str:
    """The name of the attention implementation ``model`` runs now (``"sdpa"``, ``"eager"``, ...)."""
    return model.config._attn_implementation


def set_implementation(model: torch.nn.Module, name: str) -> None:
    """Ask ``model`` to run attention implementation ``name`` (it may ignore the request; check)."""
    model.set_attn_implementation(name)


# ---------------------------------------------------------------------------- the registries
def register(name: str, attention_fn: Callable, mask_fn: Callable) -> None:
    """Register ``attention_fn`` and ``mask_fn`` under ``name`` in transformers' global registries."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(name, attention_fn)
    AttentionMaskInterface.register(name, mask_fn)


def unregister(name: str) -> None:
    """Remove ``name`` from both registries (no error if absent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface._global_mapping.pop(name, None)
    AttentionMaskInterface._global_mapping.pop(name, None)


def is_registered(name: str) -> bool:
    """Whether ``name`` is taken in either registry."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    return name in AttentionInterface._global_mapping or name in AttentionMaskInterface._global_mapping


def registered_names() -> set[str]:
    """Every name in either registry (built-in and registered)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    return {*AttentionInterface._global_mapping, *AttentionMaskInterface._global_mapping}


def attention_function(model: torch.nn.Module, implementation: str) -> Callable | None:
    """The function ``model`` calls for ``implementation``, or ``None`` when there is none.

    ``"eager"`` is the model's own ``eager_attention_forward`` (every modeling file has one);
    any other name is looked up in the global registry.
    """
    if implementation == "eager":
        return getattr(sys.modules.get(type(model).__module__), "eager_attention_forward", None)
    from transformers import AttentionInterface

    return AttentionInterface._global_mapping.get(implementation)


def mask_function(implementation: str) -> Callable | None:
    """The mask function registered for ``implementation``, or ``None``."""
    from transformers.masking_utils import AttentionMaskInterface

    return AttentionMaskInterface._global_mapping.get(implementation)


def has_tensor_mask(implementation: str) -> bool:
    """Whether ``implementation``'s masks are ``None`` or a 4D tensor (sdpa's boolean or eager's additive).

    Flash (padding-only) and flex (block masks) are not; neither is an unknown mask function.
    """
    if implementation == "eager":
        return True
    from transformers.masking_utils import eager_mask, sdpa_mask

    return mask_function(implementation) in (sdpa_mask, eager_mask)


# ---------------------------------------------------------------------------- the cache
def is_plain_cache_layer(layer) -> bool:
    """Whether a ``DynamicCache`` layer is a plain full-attention ``DynamicLayer`` (not sliding, quantised,
    offloaded): one whose ``keys``/``values`` (B, Hkv, n, D) may be edited in place."""
    from transformers.cache_utils import DynamicLayer

    return type(layer) is DynamicLayer


def layer_windows(config) -> list[int | None]:
    """The sliding window of each decoder layer as transformers' ``DynamicCache`` builds it for ``config``
    (keys a query sees, itself included), ``None`` for a full-attention layer."""
    from transformers import DynamicCache

    layers = DynamicCache(config=config).layers
    return [int(layer.sliding_window) if getattr(layer, "is_sliding", False) else None for layer in layers]


def plain_cache():
    """A ``DynamicCache`` of plain full-attention layers whatever the model: the engines that bound
    sliding layers themselves (and pass explicit masks) use it."""
    from transformers import DynamicCache

    return DynamicCache()


ALIBI_KWARG = "alibi"
"""The keyword argument under which BLOOM's model hands each block its ALiBi bias, shape (B*H, 1 or Tq, Tk)."""


def alibi_blocks(model: torch.nn.Module) -> list[torch.nn.Module] | None:
    """The decoder blocks that take an ALiBi bias argument (BLOOM), or ``None`` when the model has none."""
    base = getattr(model, "transformer", None)
    blocks = getattr(base, "h", None)
    if getattr(model.config, "model_type", None) != "bloom" or blocks is None:
        return None
    return list(blocks)


def alibi_slopes(model: torch.nn.Module) -> torch.Tensor:
    """BLOOM's ALiBi slope per head, shape (H,), float32."""
    from transformers.models.bloom.modeling_bloom import _get_alibi_slopes

    return _get_alibi_slopes(model.config.n_head, torch.device("cpu")).float()
