"""Read one generic per-token table (CSV, TSV or JSONL) into per-sample arrays, with a clear error for every defect.

The pieces (:func:`read_text`, :func:`rows_csv`, :func:`assemble`) are shared by the readers of known
tools' layouts (:mod:`~anomaly_probe.importer.attention_sinks`, :mod:`~anomaly_probe.importer.streaming_llm`,
:mod:`~anomaly_probe.importer.ours`); :mod:`~anomaly_probe.importer.formats` picks the reader.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anomaly_probe import json_input
from anomaly_probe.errors import UserError
from anomaly_probe.importer.columns import FLAGS, resolve_columns

EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
MEMORY_UNITS = {"B": 1, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "KB": 10**3, "MB": 10**6, "GB": 10**9}
NEGATIVE_NLL_SLACK = 1e-3  # nats: rounding may give -1e-7; a log-probability column gives -3


@dataclass
class SampleLog:
    """One sample of one log, sorted by position.

    Attributes
    ----------
    sample_id : str
        The sample column's value ("0" without one).
    position : np.ndarray
        Token index per row, shape (n,), int64, strictly increasing.
    nll : np.ndarray
        NLL per row, nats, shape (n,), float64.
    memory, latency : np.ndarray or None
        Bytes and seconds per row, shape (n,), float64 (NaN where a row left it empty).
    correct : np.ndarray or None
        Top-1 correctness per row, shape (n,), bool.
    path : str
        The file the sample was read from (for messages and the alignment record).

    ``position`` is the index ``i`` of the query: the entry scores token ``i + 1`` (as ``query_pos``
    of a run's token arrays for the full cache).
    """

    sample_id: str
    position: np.ndarray
    nll: np.ndarray
    memory: np.ndarray | None = None
    latency: np.ndarray | None = None
    correct: np.ndarray | None = None
    path: str = ""


@dataclass
class TokenLog:
    """One file: its samples in order of first appearance, the columns used and notes for the report.

    ``meta`` holds what the file says about itself (our own per-token log's header: label, trained
    context, ...); empty for other formats.
    """

    path: str
    format: str
    columns: dict[str, str | None]
    samples: list[SampleLog]
    rows: int
    notes: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)


def read_text(path: str) -> str:
    """The file's text (UTF-8, a byte-order mark dropped).

    Raises
    ------
    UserError
        No such file, a folder, or not UTF-8 text.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        raise UserError(f"{path!r} is a folder; give a per-token log file")
    if not p.is_file():
        raise UserError(f"{path!r}: no such file")
    try:
        return p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path!r}: cannot read it as UTF-8 text ({type(exc).__name__})") from None


def memory_scale(memory_unit: str | None, default: str = "B") -> float:
    """Bytes per unit of ``--memory-unit`` (None: ``default``)."""
    scale = MEMORY_UNITS.get((memory_unit if memory_unit is not None else default).upper())
    if scale is None:
        raise UserError(f"--memory-unit {memory_unit!r}: use one of B, KiB, MiB, GiB, KB, MB, GB")
    return scale


def read_table(path: str, text: str, kind: str, explicit: dict[str, str | None], scale: float) -> TokenLog:
    """A generic table already read as ``text``: ``kind`` is ``csv``, ``tsv`` or ``jsonl``."""
    header, rows = rows_jsonl(text, path) if kind == "jsonl" else rows_csv(text, path, "\t" if kind == "tsv" else ",")
    if not rows:
        raise UserError(f"{path!r} is empty (no data rows)")
    columns = resolve_columns(header, rows[0][1], explicit, repr(path))
    return assemble(path, kind, columns, rows, scale)


def rows_csv(text: str, path: str, delimiter: str, first_line: int = 1) -> tuple[list[str], list[tuple[int, dict]]]:
    """Header and ``(line number, row)`` pairs of a delimited table; ``first_line``: the line ``text`` starts at."""
    reader = csv.reader(text.splitlines(), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise UserError(f"{path!r} is empty (no header row)") from None
    except csv.Error as exc:
        raise UserError(f"{path!r}: not valid CSV ({exc})") from None
    header = [h.strip() for h in header]
    if not any(header):
        raise UserError(f"{path!r}: the first line is not a header of column names")
    rows = []
    try:
        for values in reader:
            if not any(v.strip() for v in values):
                continue
            line = reader.line_num + first_line - 1
            if len(values) != len(header):
                raise UserError(f"{path!r} line {line}: {len(values)} fields, the header has {len(header)}")
            rows.append((line, dict(zip(header, values))))
    except csv.Error as exc:
        raise UserError(f"{path!r}: not valid CSV ({exc})") from None
    return header, rows


def rows_jsonl(text: str, path: str) -> tuple[list[str], list[tuple[int, dict]]]:
    rows, header = [], []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json_input.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path!r} line {n}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise UserError(f"{path!r} line {n}: expected a JSON object per line, got {type(obj).__name__}")
        for k in obj:
            if k not in header:
                header.append(k)
        rows.append((n, obj))
    return header, rows


MAX_POSITION = 2**53
"""Positions must be below this: they are read as float64, which holds every integer up to 2**53 exactly
(and an int64 array cannot hold 2**63 at all)."""


def assemble(path: str, kind: str, columns: dict, rows: list[tuple[int, dict]], memory_scale: float,
             position_shift: int = 0, running_clock: bool = True) -> TokenLog:
    """Group checked rows by sample and sort them by position.

    Parameters
    ----------
    columns : dict
        Field -> column of ``rows`` (see :func:`~anomaly_probe.importer.columns.resolve_columns`).
    memory_scale : float
        Bytes per unit of the memory column.
    position_shift : int
        Added to the position column's value (-1 where the column counts the scored token, ``i + 1``).
    running_clock : bool
        Read a never-decreasing latency column as a running clock (False where the layout says it is
        seconds per token).
    """
    groups: dict[str, dict[str, list]] = {}
    notes = []
    for i, (line, row) in enumerate(rows):
        sid = "0" if columns["sample"] is None else _text(row.get(columns["sample"]), path, line, columns["sample"])
        g = groups.setdefault(sid, {"position": [], "nll": [], "memory": [], "latency": [], "correct": []})
        pos = i if columns["position"] is None else _number(row, columns["position"], path, line, required=True)
        if pos != int(pos) or pos + position_shift < 0:
            raise UserError(f"{path!r} line {line}: position {columns['position']!r} = {pos!r} is not a whole "
                            f"number >= {-position_shift}")
        pos += position_shift
        if pos >= MAX_POSITION:
            typed = str(row.get(columns["position"]))[:40]
            raise UserError(f"{path!r} line {line}: position {columns['position']!r} = {typed} is not a token index "
                            f"(at least 2**53 = {MAX_POSITION})")
        nll = _number(row, columns["nll"], path, line, required=True)
        if nll < -NEGATIVE_NLL_SLACK:
            raise UserError(f"{path!r} line {line}: NLL {nll} < 0; an NLL is -log p >= 0 nats (a log-probability "
                            "column must be negated)")
        g["position"].append(int(pos))
        g["nll"].append(nll)
        for name in ("memory", "latency", "correct"):
            if columns[name] is not None:
                g[name].append(_number(row, columns[name], path, line, required=False))
    if columns["position"] is None:
        notes.append(f"{path}: no position column; row order within each sample is the token index")
    samples = []
    for sid, g in groups.items():
        order = np.argsort(np.asarray(g["position"]), kind="stable")
        pos = np.asarray(g["position"], dtype=np.int64)[order]
        if pos.size > 1 and (dup := np.flatnonzero(np.diff(pos) == 0)).size:
            hint = " (several samples? name the sample column with --sample-col)" if columns["sample"] is None else ""
            value = int(pos[dup[0]])
            what = f"position {value}" if not position_shift else f"{columns['position']} {value - position_shift}"
            raise UserError(f"{path!r}: sample {sid!r} has {what} twice; one row per scored token{hint}")
        arrays = {k: np.asarray(g[k], dtype=np.float64)[order] if g[k] else None
                  for k in ("memory", "latency", "correct")}
        if arrays["memory"] is not None:
            arrays["memory"] = arrays["memory"] * memory_scale
        if arrays["latency"] is not None and running_clock and _cumulative(arrays["latency"]):
            arrays["latency"] = np.concatenate([[np.nan], np.diff(arrays["latency"])])
            notes.append(f"{path}: latency column {columns['latency']!r} never decreases in sample {sid!r}: read as a "
                         "running clock, per-token latency = difference between rows")
        correct = arrays["correct"]
        samples.append(SampleLog(sid, pos, np.asarray(g["nll"], dtype=np.float64)[order], arrays["memory"],
                                 arrays["latency"], None if correct is None else np.nan_to_num(correct) > 0.5, path))
    return TokenLog(path=path, format=kind, columns=columns, samples=samples, rows=len(rows), notes=notes)


def _cumulative(x: np.ndarray) -> bool:
    """A running clock: never decreasing and rising on (almost) every row; per-token latencies jitter."""
    ok = x[np.isfinite(x)]
    if ok.size < 16:
        return False
    d = np.diff(ok)
    return bool(np.all(d >= 0) and (d > 0).mean() >= 0.9)


def _text(value, path: str, line: int, col: str) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise UserError(f"{path!r} line {line}: sample column {col!r} is empty")
    return str(value).strip()


def _number(row: dict, col: str, path: str, line: int, required: bool) -> float:
    """The value of ``col`` in ``row`` as a finite float (NaN for an empty optional cell)."""
    value = row.get(col)
    empty = value is None or (isinstance(value, str) and not value.strip())
    if empty:
        if required:
            raise UserError(f"{path!r} line {line}: column {col!r} is empty")
        return math.nan
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        x = float(value)
    else:
        text = str(value).strip()
        if text.lower() in ("true", "false"):
            return float(text.lower() == "true")
        try:
            x = float(text)
        except ValueError:
            raise UserError(f"{path!r} line {line}: column {col!r} = {text[:40]!r} is not a number") from None
    if not math.isfinite(x):
        if required:
            raise UserError(f"{path!r} line {line}: column {col!r} = {value!r} is not finite")
        return math.nan
    return x


__all__ = ["EXTENSIONS", "FLAGS", "MEMORY_UNITS", "SampleLog", "TokenLog", "assemble", "memory_scale", "read_table",
           "read_text", "rows_csv", "rows_jsonl"]
