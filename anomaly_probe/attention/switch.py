"""Run a model with our own attention function for the duration of a block, and leave nothing behind.

:func:`attention_implementation` is the only way the package changes a model's attention:

1. checks the model can switch at all (a transformers model whose attention dispatches by name);
2. registers the attention function *and* a mask function under a free name (``name``, else
   ``name_2``, ``name_3``...), so nested or concurrent scopes never overwrite each other;
3. switches the model with ``set_attn_implementation`` and verifies that it took effect (some models
   ignore the request with a logged warning);
4. in ``finally`` (also when the body or a check raised) switches back to the previous implementation
   and unregisters what it registered.

Nested scopes work like a stack: the inner scope's "previous" is the outer scope's name, which stays
registered until the outer scope exits.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch

from anomaly_probe.attention import hf
from anomaly_probe.errors import UserError


def check_switchable(model: torch.nn.Module, purpose: str = "switch the attention of",
                     fallback: str = "") -> None:
    """Raise a one-line :class:`UserError` unless ``model``'s attention can be switched by name.

    Parameters
    ----------
    purpose : str
        Completes "cannot ... <ModelClass>", e.g. ``"attach the attention probe to"``.
    fallback : str
        What the user can do instead, appended after a semicolon (e.g. ``"use --probes cache,process"``).
    """
    cls = type(model).__name__
    tail = f"; {fallback}" if fallback else ""
    if not hf.is_switchable_model(model):
        raise UserError(f"cannot {purpose} {cls}: it is not a transformers model (no set_attn_implementation){tail}")
    if not hf.dispatches_by_name(model):
        kind = getattr(model.config, "model_type", "?")
        raise UserError(f"cannot {purpose} {cls} ({kind}): its attention does not dispatch through transformers' "
                        f"AttentionInterface{tail}")


def free_name(base: str) -> str:
    """``base``, or ``base_2``, ``base_3``... : the first name neither registry holds."""
    name, n = base, 1
    while hf.is_registered(name):
        n += 1
        name = f"{base}_{n}"
    return name


@contextmanager
def attention_implementation(model: torch.nn.Module, name: str, attention_fn: Callable,
                             mask_fn: Callable | str, *, purpose: str = "switch the attention of",
                             fallback: str = "") -> Iterator[str]:
    """Run ``model`` with ``attention_fn`` while the block runs; restore and unregister on exit.

    Parameters
    ----------
    model : torch.nn.Module
        A transformers model whose attention dispatches through ``AttentionInterface``.
    name : str
        Implementation name to register (a free variant is used if it is taken).
    attention_fn : callable
        ``fn(module, query, key, value, attention_mask, scaling=..., dropout=..., **kwargs)`` returning
        ``(output (B, Tq, H, Dv), weights or None)``; query (B, H, Tq, D), key and value (B, Hkv, Tk, D).
    mask_fn : callable or str
        The mask function for ``name``, or the name of a registered implementation whose mask
        function to reuse (``"sdpa"``: ``None`` or a boolean 4D mask; ``"eager"``: an additive one).
        Required: without one transformers passes no causal mask at all.
    purpose, fallback : str
        Wording of the errors (see :func:`check_switchable`).

    Yields
    ------
    str
        The name actually registered and switched to.

    Raises
    ------
    UserError
        The model cannot switch, or it ignored the switch; nothing is left registered.
    """
    check_switchable(model, purpose, fallback)
    tail = f"; {fallback}" if fallback else ""
    if isinstance(mask_fn, str):
        resolved = hf.mask_function(mask_fn)
        if resolved is None:
            raise UserError(f"cannot {purpose} {type(model).__name__}: attention implementation {mask_fn!r} has no "
                            f"mask function to reuse{tail}")
        mask_fn = resolved
    previous = hf.current_implementation(model)
    name = free_name(name)
    hf.register(name, attention_fn, mask_fn)
    try:
        hf.set_implementation(model, name)
        if hf.current_implementation(model) != name:
            raise UserError(f"cannot {purpose} {type(model).__name__}: it refused to switch its attention "
                            f"implementation from {previous!r} to {name!r}{tail}")
        yield name
    finally:
        try:
            if hf.current_implementation(model) != previous:
                hf.set_implementation(model, previous)
            if hf.current_implementation(model) != previous:
                raise RuntimeError(f"{type(model).__name__} did not switch its attention back to {previous!r}")
        finally:
            hf.unregister(name)
