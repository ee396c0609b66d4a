"""Evaluation text: the default corpus, user files, and non-overlapping samples."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from anomaly_probe import json_input
from anomaly_probe.errors import UserError


def default_text() -> str:
    """CPython's ``pydoc_data.topics`` help text (~113k SmolLM2 tokens; in every Python)."""
    import pydoc_data.topics as topics

    data = topics.topics
    return "\n\n".join(data[k] for k in sorted(data)) if isinstance(data, dict) else str(data)


def read_text(path: str | None) -> str:
    """Read ``--text FILE``: ``.txt`` (whole file) or ``.jsonl`` (``text`` field of each line, joined).

    Raises
    ------
    UserError
        Missing, unreadable, empty or malformed file.
    """
    if path is None:
        return default_text()
    p = Path(path).expanduser()
    if p.is_dir():
        raise UserError(f"--text {path!r} is a folder; give a .txt or .jsonl file")
    if not p.is_file():
        raise UserError(f"--text {path!r}: no such file")
    try:
        raw = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--text {path!r}: cannot read it as UTF-8 text ({exc.__class__.__name__})") from None
    if p.suffix.lower() == ".jsonl":
        parts = []
        for n, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json_input.loads(line)
            except json.JSONDecodeError:
                raise UserError(f"--text {path!r}: line {n} is not valid JSON") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise UserError(f"--text {path!r}: line {n} has no string 'text' field")
            parts.append(obj["text"])
        raw = "\n\n".join(parts)
    if not raw.strip():
        raise UserError(f"--text {path!r} is empty")
    return raw


def tokenize(tokenizer, text: str) -> torch.Tensor:
    """Token ids of the whole text, shape (N,), int64."""
    ids = tokenizer(text)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def samples(ids: torch.Tensor, max_tokens: int, num_samples: int) -> list[torch.Tensor]:
    """Non-overlapping windows ``ids[s*L:(s+1)*L]`` for ``s < num_samples``.

    Raises
    ------
    UserError
        When the text holds fewer than ``max_tokens * num_samples`` tokens.
    """
    need = max_tokens * num_samples
    if ids.numel() < need:
        raise UserError(
            f"the text has {ids.numel()} tokens, fewer than --max-tokens {max_tokens} x --num-samples "
            f"{num_samples} = {need}; use a longer --text, fewer samples or fewer tokens"
        )
    return [ids[s * max_tokens:(s + 1) * max_tokens] for s in range(num_samples)]
