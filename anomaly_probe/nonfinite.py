"""NaN/inf in a scored unit: a numerics finding, located to the first token and the first layer.

A model that emits NaN (an fp16 overflow, a broken kernel, a bad checkpoint) must not crash the run
nor be averaged silently. :func:`nonfinite_summary` counts the non-finite NLL entries of a unit and
finds the first one; only then (it costs one more forward up to that token) :func:`locate_layer`
re-runs the unit's engine on the tokens up to it with observe-only forward hooks on the decoder
layers and their attention modules and reports the first module whose output is non-finite.

The run record gets ``nonfinite = {"count", "first_token", "value", "first_layer", "first_module",
"note"}``: ``first_token`` is the query token index ``i`` (= entry ``i`` of the tokens npz, the
prediction of token ``i + 1``); ``first_layer`` the decoder layer index (None when the decoder layers
are finite: the embeddings or the output head); ``first_module`` the module's dotted name.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
import torch

ATTENTION_NAMES = ("attention", "self_attn", "attn", "self_attention")
"""Attribute names of a decoder layer's attention module (GPT-NeoX, Llama/Qwen, GPT-2, Falcon)."""


def nonfinite_summary(nll: np.ndarray) -> dict | None:
    """``{"count", "first_token", "value"}`` for per-token NLL with NaN/inf entries, else None.

    Parameters
    ----------
    nll : np.ndarray
        Per-token NLL of one unit, nats, shape (T-1,).
    """
    bad = ~np.isfinite(nll)
    if not bad.any():
        return None
    first = int(np.argmax(bad))
    return {"count": int(bad.sum()), "first_token": first, "value": "nan" if np.isnan(nll[first]) else "inf"}


def decoder_layers(model: torch.nn.Module) -> list[tuple[int, str, torch.nn.Module]]:
    """``(index, dotted name, module)`` of each decoder layer: the outermost ModuleList of
    ``config.num_hidden_layers`` modules (``gpt_neox.layers``, ``model.layers``, ``transformer.h``)."""
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) and (n is None or len(module) == n):
            return [(i, f"{name}.{i}", layer) for i, layer in enumerate(module)]
    return []


def locate_layer(model: torch.nn.Module, score_prefix: Callable[[], object], first_token: int) -> dict:
    """Re-run ``score_prefix`` (the unit's engine on its tokens up to ``first_token + 1``) with hooks.

    Returns
    -------
    dict
        ``first_layer`` (int or None), ``first_module`` (str or None) and ``note`` (one sentence).
    """
    found: dict = {}
    try:
        with _watch(model, found):
            scores = score_prefix()
    except Exception as exc:  # noqa: BLE001 - locating is a bonus; the finding itself is kept
        return {"first_layer": None, "first_module": None,
                "note": f"not located: re-running up to token {first_token} failed ({type(exc).__name__})"}
    nll = getattr(scores, "nll", None)
    reproduced = nll is not None and len(nll) > first_token and not np.isfinite(nll[first_token])
    if found:
        return {**found, "note": f"first non-finite output: {found['first_module']}"}
    if not reproduced:
        return {"first_layer": None, "first_module": None,
                "note": f"not reproduced when re-run up to token {first_token} (non-deterministic?)"}
    return {"first_layer": None, "first_module": None,
            "note": "the decoder layers' outputs are finite: it arises in the final norm or the output head"}


@contextmanager
def _watch(model: torch.nn.Module, found: dict) -> Iterator[None]:
    """Observe-only hooks; the first module whose output is non-finite is written into ``found``."""
    layers = decoder_layers(model)
    handles = []

    def check(index: int | None, name: str, value) -> None:
        t = value[0] if isinstance(value, (tuple, list)) and value else value
        if not found and isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            found.update(first_layer=index, first_module=name)

    try:
        for index, name, layer in layers:
            if index == 0:
                def pre(module, args, kwargs, name=name):
                    check(None, f"embeddings (input of {name})", args[0] if args else kwargs.get("hidden_states"))
                handles.append(layer.register_forward_pre_hook(pre, with_kwargs=True))
            for attr in ATTENTION_NAMES:
                attn = getattr(layer, attr, None)
                if isinstance(attn, torch.nn.Module):
                    handles.append(attn.register_forward_hook(
                        lambda m, a, out, i=index, n=f"{name}.{attr}": check(i, n, out)))
                    break
            handles.append(layer.register_forward_hook(lambda m, a, out, i=index, n=name: check(i, n, out)))
        yield
    finally:
        for h in handles:
            h.remove()


def describe(finding: dict) -> str:
    """One phrase, e.g. ``NaN NLL at 12 tokens from token 150 (first non-finite output: gpt_neox.layers.1)``."""
    value = "NaN" if finding.get("value") == "nan" else "inf"
    where = f"; {finding['note']}" if finding.get("note") else ""
    return f"{value} NLL at {finding.get('count')} token(s) from token {finding.get('first_token')}{where}"
