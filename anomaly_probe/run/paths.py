"""Paths saved in a run's configuration: absolute, so that ``--resume`` works from any working directory."""

from __future__ import annotations

from pathlib import Path

BUILTIN_MODELS = ("tiny-neox", "smollm2-135m")  # names the loader resolves before any path


def local_path(value: str | None, kind: str) -> str | None:
    """``value`` made absolute where it names a local path, so that ``--resume`` finds it from any working
    directory; anything else as typed.

    ``kind``: ``out`` (always a path), ``text`` (when the file exists; else the error names it as typed),
    ``model`` (a local folder or ``.gguf`` file; a name the loader knows or a hub ID stays).
    """
    if value is None or not value.strip():
        return value
    path = Path(value).expanduser()
    if kind == "model" and (value in BUILTIN_MODELS
                            or not (path.is_dir() or (value.endswith(".gguf") and path.is_file()))):
        return value
    if kind == "text" and not path.exists():
        return value
    return str(path.resolve())
