"""A run folder as bytes: how a cell's files travel between machines without a shared filesystem."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from anomaly_probe.errors import UserError

LAST = "results.json"
"""Written last, so a folder cut short by a crash never looks complete."""


def pack(folder: Path) -> dict[str, bytes]:
    """Every regular file under ``folder`` (temp files aside), keyed by its POSIX path relative to it."""
    folder = Path(folder)
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink() and not path.name.endswith(".tmp"):
            out[path.relative_to(folder).as_posix()] = path.read_bytes()
    return out


def unpack(files: dict[str, bytes], folder: Path) -> None:
    """Write ``files`` (from :func:`pack`) under ``folder``; ``results.json`` last.

    Raises
    ------
    UserError
        A path that is absolute or leaves ``folder`` (``..``): the files did not come from :func:`pack`.
    """
    folder = Path(folder)
    for rel in sorted(files, key=lambda r: r == LAST):
        parts = PurePosixPath(rel).parts
        if not parts or PurePosixPath(rel).is_absolute() or ".." in parts:
            raise UserError(f"a cell returned the file path {rel!r}, which leaves its run folder")
        path = folder.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(files[rel])
        tmp.replace(path)
