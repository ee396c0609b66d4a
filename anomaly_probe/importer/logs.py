"""Read one per-token log (CSV, TSV or JSONL) into per-sample arrays, with a clear error for every defect."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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
    """

    sample_id: str
    position: np.ndarray
    nll: np.ndarray
    memory: np.ndarray | None = None
    latency: np.ndarray | None = None
    correct: np.ndarray | None = None


@dataclass
class TokenLog:
    """One file: its samples in order of first appearance, the columns used and notes for the report."""

    path: str
    format: str
    columns: dict[str, str | None]
    samples: list[SampleLog]
    rows: int
    notes: list[str] = field(default_factory=list)


def read_log(path: str, explicit: dict[str, str | None], memory_unit: str = "B") -> TokenLog:
    """Read ``path``.

    Parameters
    ----------
    explicit : dict
        Field -> column name from the flags (None: recognise common spellings).
    memory_unit : str
        Unit of the memory column (B, KiB, MiB, GiB, KB, MB, GB); values are converted to bytes.

    Raises
    ------
    UserError
        Missing or unreadable file, unknown extension, empty file, missing columns, non-numeric or
        non-finite values, negative NLL, duplicate positions.
    """
    p = Path(path).expanduser()
    kind = EXTENSIONS.get(p.suffix.lower())
    if kind is None:
        raise UserError(f"{path!r}: unknown extension {p.suffix or '(none)'!r}; use .csv, .tsv or .jsonl")
    if not p.is_file():
        raise UserError(f"{path!r}: no such file")
    scale = MEMORY_UNITS.get(memory_unit.upper())
    if scale is None:
        raise UserError(f"--memory-unit {memory_unit!r}: use one of B, KiB, MiB, GiB, KB, MB, GB")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path!r}: cannot read it as UTF-8 text ({type(exc).__name__})") from None
    header, rows = _rows_jsonl(text, path) if kind == "jsonl" else _rows_csv(text, path, "\t" if kind == "tsv" else ",")
    if not rows:
        raise UserError(f"{path!r} is empty (no data rows)")
    columns = resolve_columns(header, rows[0][1], explicit, repr(path))
    return _assemble(path, kind, columns, rows, scale)


def _rows_csv(text: str, path: str, delimiter: str) -> tuple[list[str], list[tuple[int, dict]]]:
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
            line = reader.line_num
            if len(values) != len(header):
                raise UserError(f"{path!r} line {line}: {len(values)} fields, the header has {len(header)}")
            rows.append((line, dict(zip(header, values))))
    except csv.Error as exc:
        raise UserError(f"{path!r}: not valid CSV ({exc})") from None
    return header, rows


def _rows_jsonl(text: str, path: str) -> tuple[list[str], list[tuple[int, dict]]]:
    rows, header = [], []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path!r} line {n}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise UserError(f"{path!r} line {n}: expected a JSON object per line, got {type(obj).__name__}")
        for k in obj:
            if k not in header:
                header.append(k)
        rows.append((n, obj))
    return header, rows


def _assemble(path: str, kind: str, columns: dict, rows: list[tuple[int, dict]], memory_scale: float) -> TokenLog:
    groups: dict[str, dict[str, list]] = {}
    notes = []
    for i, (line, row) in enumerate(rows):
        sid = "0" if columns["sample"] is None else _text(row.get(columns["sample"]), path, line, columns["sample"])
        g = groups.setdefault(sid, {"position": [], "nll": [], "memory": [], "latency": [], "correct": []})
        pos = i if columns["position"] is None else _number(row, columns["position"], path, line, required=True)
        if pos != int(pos) or pos < 0:
            raise UserError(f"{path!r} line {line}: position {columns['position']!r} = {pos!r} is not a whole "
                            "number >= 0")
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
            raise UserError(f"{path!r}: sample {sid!r} has position {int(pos[dup[0]])} twice; one row per scored "
                            f"token{hint}")
        arrays = {k: np.asarray(g[k], dtype=np.float64)[order] if g[k] else None
                  for k in ("memory", "latency", "correct")}
        if arrays["memory"] is not None:
            arrays["memory"] = arrays["memory"] * memory_scale
        if arrays["latency"] is not None and _cumulative(arrays["latency"]):
            arrays["latency"] = np.concatenate([[np.nan], np.diff(arrays["latency"])])
            notes.append(f"{path}: latency column {columns['latency']!r} never decreases in sample {sid!r}: read as a "
                         "running clock, per-token latency = difference between rows")
        correct = arrays["correct"]
        samples.append(SampleLog(sid, pos, np.asarray(g["nll"], dtype=np.float64)[order], arrays["memory"],
                                 arrays["latency"], None if correct is None else np.nan_to_num(correct) > 0.5))
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


__all__ = ["EXTENSIONS", "FLAGS", "MEMORY_UNITS", "SampleLog", "TokenLog", "read_log"]
