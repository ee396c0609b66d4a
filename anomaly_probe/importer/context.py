"""The model's trained context for imported logs: ``--trained-context``, else a config.json read offline."""

from __future__ import annotations

import json
from pathlib import Path

from anomaly_probe import json_input
from anomaly_probe.errors import UserError

CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


def trained_context(flag: int | None, config: str | None) -> tuple[int | None, str]:
    """``(tokens, where it came from)``; ``(None, "unknown")`` without a flag or a config.

    The flag wins over the config (as ``--trained-context`` does for ``run``). ``config`` is a
    ``config.json``, a folder holding one, or a hub ID whose config is already in the local cache
    (nothing is downloaded).

    Raises
    ------
    UserError
        A bad flag value, a config that cannot be found or read, or one without a context length.
    """
    if flag is not None:
        if flag < 1:
            raise UserError(f"--trained-context {flag}: must be >= 1")
        return int(flag), "--trained-context"
    if not config:
        return None, "unknown"
    path = _config_path(config)
    try:
        data = json_input.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"--model-config {config!r}: cannot read {str(path)!r} as JSON "
                        f"({type(exc).__name__})") from None
    value = _context_from(data)
    if value is None:
        raise UserError(f"--model-config {config!r}: {str(path)!r} has none of {', '.join(CONTEXT_KEYS)}; pass "
                        "--trained-context N")
    return value, str(path)


def _config_path(config: str) -> Path:
    p = Path(config).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise UserError(f"--model-config {config!r}: the folder has no config.json")
        return p / "config.json"
    if p.is_file():
        return p
    if "/" in config and not config.startswith((".", "/", "~")):
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(config, "config.json")
        except Exception:  # noqa: BLE001 - huggingface_hub missing or a malformed ID: treat as not cached
            cached = None
        if isinstance(cached, str):
            return Path(cached)
        raise UserError(f"--model-config {config!r}: not a file or folder, and no config.json for that hub ID is in "
                        "the local cache; pass --trained-context N")
    raise UserError(f"--model-config {config!r}: no such file or folder")


def _context_from(data) -> int | None:
    if not isinstance(data, dict):
        return None
    for key in CONTEXT_KEYS:
        value = data.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    for nested in ("text_config", "llm_config", "language_config"):
        value = _context_from(data.get(nested))
        if value is not None:
            return value
    return None
