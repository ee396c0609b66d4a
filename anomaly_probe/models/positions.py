"""How each decoder layer of a model encodes positions, found the way the model itself does.

A model may have one rotary embedding for every layer (Llama, GPT-NeoX), one per layer type (Gemma 3:
a local base for its sliding layers, a global one for its full layers), partial rotary dims (Pythia,
Phi), scaled frequencies (linear, dynamic NTK, YaRN, llama3), ALiBi instead of RoPE (BLOOM), and
layers that slide over a window. :func:`layer_schemes` reads all of it from the model (its rotary
modules' ``inv_freq`` buffers, per layer type where the model keeps them so) and the cache layers
transformers builds for its config, and returns one :class:`LayerScheme` per decoder layer. The
engines re-rotate keys with each layer's own :class:`~anomaly_probe.models.rope.RopeSpec`; the run
records :func:`describe_schemes` in ``results.json`` (``position_schemes``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from anomaly_probe.errors import UserError
from anomaly_probe.models.rope import RopeSpec

ALIBI_TYPES = ("bloom", "mpt", "falcon", "baichuan", "btlm")
"""Model types with ALiBi (``falcon`` only with ``alibi=True``); the engines support BLOOM's layout."""


@dataclass(frozen=True)
class LayerScheme:
    """Positions and attention span of one decoder layer.

    Attributes
    ----------
    kind : str
        ``"rope"``, ``"alibi"`` or ``"none"`` (learned absolute embeddings, or none found).
    window : int or None
        Sliding window (keys a query sees, itself included); ``None``: full attention.
    layer_type : str or None
        The config's layer type name (``config.layer_types``), e.g. ``"sliding_attention"``.
    rope : RopeSpec or None
        The layer's rotary frequencies (``kind == "rope"``).
    rope_type : str or None
        Scaling: ``default``, ``linear``, ``dynamic``, ``yarn``, ``llama3``, ...
    base : float or None
        RoPE base (``rope_theta``) when the config states it.
    """

    kind: str
    window: int | None = None
    layer_type: str | None = None
    rope: RopeSpec | None = None
    rope_type: str | None = None
    base: float | None = None

    def describe(self) -> dict:
        """Plain data for ``results.json``."""
        out: dict = {"position": self.kind, "attention": "sliding" if self.window else "full",
                     "window": self.window, "layer_type": self.layer_type}
        if self.rope is not None:
            out.update(rope_type=self.rope_type, base=self.base, rotary_dims=self.rope.rotary_ndims,
                       head_dim=self.rope.head_dim)
        return out

    def label(self) -> str:
        """Short text, e.g. ``RoPE base 1e+06 (default), 16/16 dims, full``."""
        if self.kind == "rope":
            base = f" base {self.base:g}" if self.base else ""
            pos = f"RoPE{base} ({self.rope_type}), {self.rope.rotary_ndims}/{self.rope.head_dim} dims"
        else:
            pos = {"alibi": "ALiBi", "none": "no RoPE/ALiBi (learned or none)"}[self.kind]
        return f"{pos}, {'sliding ' + str(self.window) if self.window else 'full'}"


def layer_schemes(model: torch.nn.Module) -> list[LayerScheme]:
    """One :class:`LayerScheme` per decoder layer of ``model`` (a HF causal LM)."""
    from anomaly_probe.attention.hf import layer_windows

    config = model.config
    n = config.num_hidden_layers
    windows = layer_windows(config) if _has_cache_config(config) else [None] * n
    windows = (windows + [None] * n)[:n]
    types = list(getattr(config, "layer_types", None) or [None] * n)
    if is_alibi(config):
        return [LayerScheme("alibi", w, t) for w, t in zip(windows, types)]
    ropes = _rotary_buffers(model)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    out = []
    for w, t in zip(windows, types):
        found = ropes.get(t) or ropes.get(None)
        if found is None:
            out.append(LayerScheme("none", w, t))
            continue
        inv_freq, rope_type = found
        out.append(LayerScheme("rope", w, t, RopeSpec(inv_freq=inv_freq, head_dim=head_dim), rope_type,
                               _rope_base(config, t)))
    return out


def describe_schemes(schemes: list[LayerScheme]) -> list[dict]:
    """``results.json``'s ``position_schemes``: one entry per run of equal layers, with their indices."""
    out: list[dict] = []
    for i, s in enumerate(schemes):
        d = s.describe()
        if out and {k: v for k, v in out[-1].items() if k != "layers"} == d:
            out[-1]["layers"].append(i)
        else:
            out.append({"layers": [i], **d})
    return out


def is_alibi(config) -> bool:
    """Whether ``config`` describes an ALiBi model."""
    mt = getattr(config, "model_type", "")
    if mt == "falcon":
        return bool(getattr(config, "alibi", False))
    if mt == "mpt":
        return bool(getattr(getattr(config, "attn_config", None), "alibi", True))
    return mt in ALIBI_TYPES


def rope_for_mode(schemes: list[LayerScheme], mode: str, model_type: str) -> None:
    """Refuse a position mode the layers cannot follow, with one line naming what is missing.

    ``in-cache`` moves keys to new positions: every layer needs a fixed RoPE (not ``dynamic``, whose
    frequencies change with the length) or ALiBi (distances are recomputed from cache slots).
    """
    if mode != "in-cache":
        return
    for i, s in enumerate(schemes):
        if s.kind == "none":
            raise UserError(
                f"model type {model_type!r}: layer {i} has neither a rotary embedding nor ALiBi (learned absolute "
                "positions?), so 'in-cache' cannot move its keys; use --position-mode absolute or naive "
                "(closest supported families: Llama/Mistral/Gemma (RoPE), BLOOM (ALiBi))")
        if s.kind == "rope" and s.rope_type == "dynamic":
            raise UserError(
                f"model type {model_type!r}: layer {i} uses dynamic NTK RoPE, whose frequencies change with the length, "
                "so 'in-cache' cannot re-rotate its keys exactly; use --position-mode absolute or naive "
                "(fixed scalings are supported: default, linear, yarn, llama3)")


def _has_cache_config(config) -> bool:
    return getattr(config, "num_hidden_layers", None) is not None


def _rotary_buffers(model: torch.nn.Module) -> dict[str | None, tuple[torch.Tensor, str]]:
    """``{layer_type or None: (inv_freq, rope_type)}`` from the model's rotary modules.

    ``inv_freq`` is shared by every layer; ``<layer_type>_inv_freq`` (Gemma 3) belongs to one type.
    """
    found: dict[str | None, tuple[torch.Tensor, str]] = {}
    for _name, module in model.named_modules():
        rope_type = getattr(module, "rope_type", "default")
        for bname, buf in module.named_buffers(recurse=False):
            if not bname.endswith("inv_freq") or "original" in bname:
                continue
            layer_type = None if bname == "inv_freq" else bname[: -len("_inv_freq")]
            rt = rope_type.get(layer_type, "default") if isinstance(rope_type, dict) else rope_type
            found.setdefault(layer_type, (buf.detach().float().cpu(), str(rt)))
    return found


def _rope_base(config, layer_type: str | None) -> float | None:
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict) and layer_type in params and isinstance(params[layer_type], dict):
        params = params[layer_type]
    for source, key in ((params, "rope_theta"), (config, "rope_theta"), (config, "rotary_emb_base")):
        value = source.get(key) if isinstance(source, dict) else getattr(source, key, None)
        if isinstance(value, (int, float)):
            return float(value)
    return None
