"""Resolve ``--model`` to a loaded model, tokenizer and trained context.

Accepted specs: ``smollm2-135m`` (default), ``tiny-neox`` (or a size variant
``tiny-neox:hidden=64,layers=2,ctx=128``), a ``.gguf`` file, a local folder, or a hub ID
(works when the weights are cached or reachable).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from anomaly_probe.errors import UserError

BUILTIN_MODELS = ("smollm2-135m", "tiny-neox", "tiny-llama", "tiny-mistral", "tiny-gemma3", "tiny-bloom")
"""``--model`` names built in: the default model and the seeded tiny test models, one per family
(:mod:`anomaly_probe.models.tiny_families`)."""


@dataclass
class LoadedModel:
    """A model ready to score.

    Attributes
    ----------
    model : torch.nn.Module
        HF causal LM in eval mode, on its device and dtype.
    tokenizer : Any
        Callable ``tokenizer(text) -> {"input_ids": [...]}``.
    spec : str
        What the user asked for.
    source : str
        Where the weights came from (file, folder, hub ID).
    trained_context : int
        Positions seen in training (config, or ``--trained-context``).
    """

    model: torch.nn.Module
    tokenizer: Any
    spec: str
    source: str
    trained_context: int

    @property
    def arch(self) -> str:
        return self.model.config.model_type

    @property
    def num_layers(self) -> int:
        return self.model.config.num_hidden_layers

    @property
    def num_parameters(self) -> int:
        """Parameters of the model (tied weights counted once): the model size a sweep regresses on."""
        return int(sum(p.numel() for p in self.model.parameters()))

    @property
    def position_schemes(self) -> list[dict]:
        """How each layer encodes positions (``results.json`` ``position_schemes``)."""
        from anomaly_probe.models.positions import describe_schemes, layer_schemes

        return describe_schemes(layer_schemes(self.model))

    @property
    def sliding_window(self) -> int | None:
        """The smallest sliding window of the model's layers, ``None`` when every layer attends fully."""
        windows = [s["window"] for s in self.position_schemes if s.get("window")]
        return min(windows) if windows else None


def load_model(spec: str, *, device: torch.device, dtype: torch.dtype, trained_context: int | None = None,
               seed: int = 0) -> LoadedModel:
    """Load ``spec`` onto ``device`` in ``dtype``.

    Raises
    ------
    UserError
        Unknown spec, weights not available offline, or no trained context found.
    """
    model, tokenizer, source = _load(spec, dtype, seed)
    model = model.to(device=device, dtype=dtype).eval()
    model.requires_grad_(False)
    ctx = trained_context or _trained_context(model.config)
    if ctx is None:
        raise UserError(f"cannot read the trained context of {spec!r} from its config; pass --trained-context N")
    return LoadedModel(model=model, tokenizer=tokenizer, spec=spec, source=source, trained_context=int(ctx))


def _load(spec: str, dtype: torch.dtype, seed: int):
    if spec.startswith("tiny-neox"):
        from anomaly_probe.models.tiny_neox import build_tiny_neox, is_tiny_neox, parse_size

        if is_tiny_neox(spec):  # the plain spec keeps the one-argument call (tests replace the builder)
            sized = {} if spec == "tiny-neox" else {"size": parse_size(spec)}
            model, tok = build_tiny_neox(seed=seed, **sized)
            return model, tok, "random GPT-NeoX built in code (seeded)"
    if spec.startswith("tiny-") and spec in BUILTIN_MODELS:
        from anomaly_probe.models.tiny_families import build_tiny

        model, tok = build_tiny(spec, seed=seed)
        return model, tok, f"random {type(model).__name__} built in code (seeded)"
    if spec == "smollm2-135m":
        from anomaly_probe.models.gguf_cache import load_gguf
        from anomaly_probe.models.smollm2 import find_gguf

        path = find_gguf()
        model, tok = load_gguf(path, dtype)
        return model, tok, str(path)
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise UserError(f"GGUF file {spec!r} not found")
        from anomaly_probe.models.gguf_cache import load_gguf

        model, tok = load_gguf(path, dtype)
        return model, tok, str(path.resolve())
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"--model {spec!r}: the folder has no config.json; give a model folder (with config.json "
                            "and weights), a .gguf file or a hub ID")
        return (*_from_pretrained(str(path), dtype, spec), str(path.resolve()))
    if path.exists():
        raise UserError(f"--model {spec!r} is a file; give a folder with config.json, a .gguf file or a hub ID")
    if "/" not in spec or spec.startswith((".", "/", "~")):
        import difflib

        close = difflib.get_close_matches(spec, BUILTIN_MODELS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UserError(
            f"Unknown model {spec!r}.{hint} Available: {', '.join(BUILTIN_MODELS)}, a hub ID (org/name), "
            "a local folder or a .gguf file"
        )
    return (*_from_pretrained(spec, dtype, spec), f"hub:{spec}")


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the HF hub answers at all (avoids huggingface_hub's long retry loop when offline)."""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _from_pretrained(where: str, dtype: torch.dtype, spec: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    is_hub = not Path(where).is_dir()
    local_only = is_hub and not _hub_reachable()
    try:
        tok = AutoTokenizer.from_pretrained(where, local_files_only=local_only)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, local_files_only=local_only)
    except (OSError, ValueError) as exc:  # missing files, no network, not a causal LM
        if local_only:
            raise UserError(f"hub weights for {spec!r} are not cached and the hub is unreachable (offline); "
                            "download them on a connected machine or pass a local folder") from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"cannot load {spec!r} ({first[:160]}); for a hub ID the weights must be cached or reachable "
            "(download them first, or pass a local folder)"
        ) from None
    return model, tok


def _trained_context(config) -> int | None:
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
