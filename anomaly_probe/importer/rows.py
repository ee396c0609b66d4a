"""A log file's rows, streamed: one row at a time from the open file, never the whole file in memory.

A :class:`Rows` source knows the file's header (column names) and its first data row (which
:func:`~anomaly_probe.importer.columns.resolve_columns` looks at) before any other row is read;
``values(names)`` then yields ``(line number, [value of each named column])`` for every data row.
:func:`~anomaly_probe.importer.logs.assemble` turns those into compact arrays as they come.

Sources: delimited tables (:func:`csv_rows`, the ``csv`` module over the open file) and JSON lines
(:func:`jsonl_rows`: a first pass collects the keys, a second yields the values). Every defect is a
:class:`~anomaly_probe.errors.UserError` naming the file and line.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from anomaly_probe import json_input
from anomaly_probe.errors import UserError


@dataclass
class Rows:
    """A streamed table.

    Attributes
    ----------
    header : list of str
        Column names (a JSONL file: every key any line has, in order of first appearance).
    first : dict or None
        The first data row, column -> value (None: no data rows).
    values : callable
        ``values(names)`` -> iterator of ``(line, [value per name])``; a missing JSONL key is None.
    """

    header: list[str]
    first: dict | None
    values: Callable[[list[str]], Iterator[tuple[int, list]]]


def checked_path(path: str) -> Path:
    """``path`` as a Path after checking it is a file (UserError: a folder, or no such file)."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise UserError(f"{path!r} is a folder; give a per-token log file")
    if not p.is_file():
        raise UserError(f"{path!r}: no such file")
    return p


def lines(path: str) -> Iterator[tuple[int, str]]:
    """``(line number from 1, line)`` of a UTF-8 text file (byte-order mark dropped, line ends kept), streamed.

    Raises
    ------
    UserError
        No such file, a folder, unreadable, or not UTF-8 (naming the line).
    """
    p = checked_path(path)
    n = 0
    try:
        with p.open(encoding="utf-8-sig", newline="") as f:
            for n, line in enumerate(f, 1):
                yield n, line
    except UnicodeDecodeError:
        raise UserError(f"{path!r} line {n + 1}: cannot read it as UTF-8 text (UnicodeDecodeError)") from None
    except OSError as exc:
        raise UserError(f"{path!r}: cannot read it ({exc.strerror or type(exc).__name__})") from None


def first_line(path: str) -> str | None:
    """The first non-empty line, stripped (None: the file is empty or blank)."""
    return next((line.strip() for _, line in lines(path) if line.strip()), None)


def csv_rows(path: str, delimiter: str, skip_first: bool = False) -> Rows:
    """A delimited table, streamed through the ``csv`` module.

    Parameters
    ----------
    delimiter : str
        ``,`` or a tab.
    skip_first : bool
        Skip the first non-empty line (our per-token log's ``# anomaly-probe ...`` line).

    Raises
    ------
    UserError
        No header, an empty or duplicated column name, invalid CSV, or a row whose field count
        differs from the header's (naming the line).
    """
    source = lines(path)
    offset = 0
    if skip_first:
        for offset, line in source:
            if line.strip():
                break
    reader = csv.reader((line for _, line in source), delimiter=delimiter)

    def where() -> int:
        return reader.line_num + offset

    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise UserError(f"{path!r} is empty (no header row)") from None
    except csv.Error as exc:
        raise UserError(f"{path!r}: not valid CSV ({exc})") from None
    if not any(header):
        raise UserError(f"{path!r}: the first line is not a header of column names")
    _no_duplicates(header, path)
    first = _next_row(reader, path, len(header), where)

    def values(names: list[str]) -> Iterator[tuple[int, list]]:
        idx = [header.index(n) for n in names]
        row = first
        while row is not None:
            yield row[0], [row[1][i] for i in idx]
            row = _next_row(reader, path, len(header), where)

    return Rows(header, None if first is None else dict(zip(header, first[1])), values)


def _next_row(reader, path: str, width: int, where) -> tuple[int, list[str]] | None:
    """The next non-blank row ``(line, fields)``; None at the end."""
    try:
        for fields in reader:
            if not any(v.strip() for v in fields):
                continue
            if len(fields) != width:
                raise UserError(f"{path!r} line {where()}: {len(fields)} fields, the header has {width}")
            return where(), fields
    except csv.Error as exc:
        raise UserError(f"{path!r} line {where()}: not valid CSV ({exc})") from None
    return None


def _no_duplicates(header: list[str], path: str) -> None:
    """Refuse a header naming a column twice (compared as columns are matched: case-insensitive, stripped)."""
    seen: dict[str, int] = {}
    for i, name in enumerate(header, 1):
        key = name.lower()
        if key and key in seen:
            raise UserError(f"{path!r}: column {name!r} appears twice in the header (columns {seen[key]} and {i}); "
                            "rename one")
        seen[key] = i


def jsonl_rows(path: str) -> Rows:
    """JSON lines, one object per line: a first pass checks every line and collects the keys, a second
    yields the values.

    Raises
    ------
    UserError
        A line that is not valid JSON, not an object, or names a key twice.
    """
    header: dict[str, None] = {}
    first = None
    for n, obj in _objects(path):
        header.update(dict.fromkeys(obj))
        first = obj if first is None else first

    def values(names: list[str]) -> Iterator[tuple[int, list]]:
        for n, obj in _objects(path):
            yield n, [obj.get(k) for k in names]

    return Rows(list(header), first, values)


def _objects(path: str) -> Iterator[tuple[int, dict]]:
    for n, line in lines(path):
        if not line.strip():
            continue
        try:
            obj = json_input.loads(line, object_pairs_hook=_unique_keys)  # nesting bounded
        except _DuplicateKey as exc:
            raise UserError(f"{path!r} line {n}: key {exc.args[0]!r} appears twice in the object") from None
        except (json.JSONDecodeError, RecursionError) as exc:
            why = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
            raise UserError(f"{path!r} line {n}: not valid JSON ({why})") from None
        if not isinstance(obj, dict):
            raise UserError(f"{path!r} line {n}: expected a JSON object per line, got {type(obj).__name__}")
        yield n, obj


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return out
