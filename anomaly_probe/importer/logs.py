"""Read one generic per-token table (CSV, TSV or JSONL) into per-sample arrays, with a clear error for every defect.

The pieces (:mod:`~anomaly_probe.importer.rows` to stream a file's rows, :func:`assemble` to turn them
into arrays) are shared by the readers of known tools' layouts (:mod:`~anomaly_probe.importer.attention_sinks`,
:mod:`~anomaly_probe.importer.streaming_llm`, :mod:`~anomaly_probe.importer.ours`);
:mod:`~anomaly_probe.importer.formats` picks the reader.

Streaming: rows are read one at a time from the open file and their values appended to compact typed
buffers (``array``: 8 bytes per number, 4 per sample id), so a file is never held as text or as a
dict per row; peak memory stays within about 3x the final arrays (buffers, sort order, per-sample copies).

Plausibility (every value is checked where it is read, the message names the file and line):

* NLL: a finite number of nats in ``[-1e-3, 50]``. Above :data:`NLL_BOUND_NATS` no real token is
  scored (50 nats is p = 2e-22; a uniform guess over a 10**6-token vocabulary costs 13.8 nats): the
  column is more likely a sum over tokens, a perplexity or in bits. Below zero (past rounding's
  :data:`NEGATIVE_NLL_SLACK`) it is a log-probability. NaN/inf NLL is refused (an import reads
  finished logs; a run records NaN/inf itself as a numerics finding).
* true/false (JSON or text) is a number only in the ``correct`` column.
* Position: a whole number with ``0 <= position < 2**53`` (:data:`MAX_POSITION`: exact in float64,
  which the judges and figures use).
* Memory and latency: a non-finite or empty cell is read as missing (NaN); otherwise memory is in
  ``[0, 2**64)`` bytes and latency in ``[0, 1e13)`` seconds (:data:`OPTIONAL_BOUNDS`).
* A column named twice in a header (or a key twice in a JSON object) is refused.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field

import numpy as np

from anomaly_probe.errors import UserError
from anomaly_probe.importer.columns import FLAGS, resolve_columns
from anomaly_probe.importer.rows import Rows, csv_rows, jsonl_rows

EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
MEMORY_UNITS = {"B": 1, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "KB": 10**3, "MB": 10**6, "GB": 10**9}
NEGATIVE_NLL_SLACK = 1e-3  # nats: rounding may give -1e-7; a log-probability column gives -3
NLL_BOUND_NATS = 50.0
"""Largest plausible per-token NLL, nats (p = 2e-22); see the module docstring."""
MAX_POSITION = 2**53
"""Positions are below this (exact in float64)."""
FIELDS = ("sample", "position", "nll", "memory", "latency", "correct")
OPTIONAL_BOUNDS = {"memory": (0.0, 2.0**64, "bytes"), "latency": (0.0, 1e13, "seconds")}
"""Plausible ranges ``[low, high)`` of the optional columns (memory after ``--memory-unit``). Latency is
wide because a running clock may be a Unix time stamp (1.7e9 s, 1.7e12 when written in ms); the bound
keeps absurd values (1e300) out of the statistics, whose squares would overflow."""


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


def memory_scale(memory_unit: str | None, default: str = "B") -> float:
    """Bytes per unit of ``--memory-unit`` (None: ``default``)."""
    scale = MEMORY_UNITS.get((memory_unit if memory_unit is not None else default).upper())
    if scale is None:
        raise UserError(f"--memory-unit {memory_unit!r}: use one of B, KiB, MiB, GiB, KB, MB, GB")
    return scale


def read_table(path: str, kind: str, explicit: dict[str, str | None], scale: float) -> TokenLog:
    """A generic table, streamed from ``path``: ``kind`` is ``csv``, ``tsv`` or ``jsonl``."""
    rows = jsonl_rows(path) if kind == "jsonl" else csv_rows(path, "\t" if kind == "tsv" else ",")
    if rows.first is None:
        raise UserError(f"{path!r} is empty (no data rows)")
    columns = resolve_columns(rows.header, rows.first, explicit, repr(path))
    return assemble(path, kind, columns, rows, scale)


def assemble(path: str, kind: str, columns: dict, rows: Rows, memory_scale: float,
             position_shift: int = 0, running_clock: bool = True) -> TokenLog:
    """Read the rows into compact buffers as they stream, then group them by sample and sort by position.

    Parameters
    ----------
    columns : dict
        Field -> column of ``rows`` (see :func:`~anomaly_probe.importer.columns.resolve_columns`).
    rows : Rows
        The streamed table (:mod:`~anomaly_probe.importer.rows`).
    memory_scale : float
        Bytes per unit of the memory column.
    position_shift : int
        Added to the position column's value (-1 where the column counts the scored token, ``i + 1``).
    running_clock : bool
        Read a never-decreasing latency column as a running clock (False where the layout says it is
        seconds per token).
    """
    fields = [f for f in FIELDS if columns[f] is not None]
    at = {f: i for i, f in enumerate(fields)}
    ids: dict[str, int] = {}
    buf = {"sample": array("i"), "position": array("q"), "nll": array("d")}
    optional = [f for f in ("memory", "latency", "correct") if f in at]
    buf.update({f: array("d") for f in optional})
    pos_col, nll_col = columns["position"], columns["nll"]
    n = 0
    for n, (line, values) in enumerate(rows.values([columns[f] for f in fields]), 1):
        if "sample" in at:
            sid = _text(values[at["sample"]], path, line, columns["sample"])
            buf["sample"].append(ids.setdefault(sid, len(ids)))
        pos = n - 1 if pos_col is None else _position(values[at["position"]], pos_col, path, line, position_shift)
        buf["position"].append(pos)
        buf["nll"].append(_nll(values[at["nll"]], nll_col, path, line))
        for f in optional:
            x = _number(values[at[f]], columns[f], path, line, required=False, truth=f == "correct")
            if f in OPTIONAL_BOUNDS:
                _in_bounds(x * (memory_scale if f == "memory" else 1.0), f, columns[f], path, line)
            buf[f].append(x)
    if not n:
        raise UserError(f"{path!r} is empty (no data rows)")
    notes = [f"{path}: no position column; row order within each sample is the token index"] if pos_col is None else []
    samples = _by_sample(path, columns, buf, ids or {"0": 0}, memory_scale, position_shift, running_clock, notes)
    return TokenLog(path=path, format=kind, columns=columns, samples=samples, rows=n, notes=notes)


def _by_sample(path: str, columns: dict, buf: dict, ids: dict[str, int], memory_scale: float, position_shift: int,
               running_clock: bool, notes: list[str]) -> list[SampleLog]:
    """The buffers split by sample (in order of first appearance), each sorted by position."""
    pos = np.frombuffer(buf["position"], dtype=np.int64)  # (N,), no copy
    if len(ids) > 1:
        code = np.frombuffer(buf["sample"], dtype=np.int32)  # (N,)
        order = np.lexsort((pos, code))  # (N,): by sample code (= first appearance), then position
        bounds = np.searchsorted(code[order], np.arange(len(ids) + 1))
        del code
    elif pos.size < 2 or bool(np.all(pos[1:] > pos[:-1])):  # one sample, already in order: no copy at all
        order = slice(None)
        bounds = np.array([0, 1])
    else:
        order = np.argsort(pos, kind="stable")
        bounds = np.array([0, pos.size])
    samples = []
    for (sid, k) in ids.items():
        idx = order if isinstance(order, slice) else order[bounds[k]:bounds[k + 1]]
        p = pos[idx]
        if p.size > 1 and (dup := np.flatnonzero(np.diff(p) == 0)).size:
            hint = " (several samples? name the sample column with --sample-col)" if columns["sample"] is None else ""
            value = int(p[dup[0]])
            what = f"position {value}" if not position_shift else f"{columns['position']} {value - position_shift}"
            raise UserError(f"{path!r}: sample {sid!r} has {what} twice; one row per scored token{hint}")
        arrays = {f: np.frombuffer(buf[f], dtype=np.float64)[idx] if f in buf else None
                  for f in ("nll", "memory", "latency", "correct")}
        if arrays["memory"] is not None:
            arrays["memory"] = arrays["memory"] * memory_scale
        if arrays["latency"] is not None and running_clock and _cumulative(arrays["latency"]):
            arrays["latency"] = np.concatenate([[np.nan], np.diff(arrays["latency"])])
            notes.append(f"{path}: latency column {columns['latency']!r} never decreases in sample {sid!r}: read as a "
                         "running clock, per-token latency = difference between rows")
        correct = arrays["correct"]
        samples.append(SampleLog(sid, p, arrays["nll"], arrays["memory"], arrays["latency"],
                                 None if correct is None else np.nan_to_num(correct) > 0.5, path))
    return samples


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


def _nll(value, col: str, path: str, line: int) -> float:
    """A required NLL within the plausibility bounds (module docstring)."""
    nll = _number(value, col, path, line, required=True)
    if nll < -NEGATIVE_NLL_SLACK:
        raise UserError(f"{path!r} line {line}: NLL {nll} < 0; an NLL is -log p >= 0 nats (a log-probability "
                        "column must be negated)")
    if nll > NLL_BOUND_NATS:
        raise UserError(f"{path!r} line {line}: NLL {nll:g} nats in column {col!r} is above the plausibility bound "
                        f"of {NLL_BOUND_NATS:g} nats per token (p = 2e-22); is the column a sum over tokens, a "
                        "perplexity, or in bits?")
    return nll


def _in_bounds(x: float, field: str, col: str, path: str, line: int) -> None:
    """``x`` (NaN: missing, allowed) within :data:`OPTIONAL_BOUNDS` of ``field``."""
    low, high, unit = OPTIONAL_BOUNDS[field]
    if not (math.isnan(x) or low <= x < high):
        raise UserError(f"{path!r} line {line}: {field} column {col!r} gives {x:g} {unit}, outside the plausible "
                        f"range {low:g}..{high:g} {unit}" + (" (check --memory-unit)" if field == "memory" else ""))


def _position(value, col: str, path: str, line: int, shift: int) -> int:
    """A whole-number position, shifted, in ``0 <= position < MAX_POSITION``."""
    pos = None
    if isinstance(value, int) and not isinstance(value, bool):
        pos = value
    elif isinstance(value, (str, float)) and not isinstance(value, bool):
        text = value.strip() if isinstance(value, str) else value
        try:
            pos = int(text)
        except (ValueError, OverflowError):
            try:
                x = float(text)
            except ValueError:
                x = math.nan
            pos = int(x) if math.isfinite(x) and x == int(x) else None
    if pos is None or not 0 <= pos + shift < MAX_POSITION:
        shown = value.strip()[:40] if isinstance(value, str) else value
        raise UserError(f"{path!r} line {line}: position {col!r} = {shown!r} is not a token index "
                        f"(not a whole number in {-shift}..{MAX_POSITION - 1 - shift} = 2**53 - 1)")
    return pos + shift


def _number(value, col: str, path: str, line: int, required: bool, truth: bool = False) -> float:
    """The value of ``col`` as a finite float (NaN for an empty optional cell).

    ``truth``: the column is a correctness flag, where true/false (JSON or text) read as 1/0; elsewhere
    they are refused.
    """
    empty = value is None or (isinstance(value, str) and not value.strip())
    if empty:
        if required:
            raise UserError(f"{path!r} line {line}: column {col!r} is empty")
        return math.nan
    if isinstance(value, bool) or (isinstance(value, str) and value.strip().lower() in ("true", "false")):
        if truth:
            return float(value is True or (isinstance(value, str) and value.strip().lower() == "true"))
        raise UserError(f"{path!r} line {line}: column {col!r} = {str(value).strip().lower()} is a true/false value, "
                        "not a number")
    if isinstance(value, (int, float)):
        try:
            x = float(value)
        except OverflowError:  # a JSON integer beyond float64
            x = math.inf
    else:
        text = str(value).strip()
        try:
            x = float(text)
        except ValueError:
            raise UserError(f"{path!r} line {line}: column {col!r} = {text[:40]!r} is not a number") from None
    if not math.isfinite(x):
        if required:
            raise UserError(f"{path!r} line {line}: column {col!r} = {value!r} is not finite")
        return math.nan
    return x


__all__ = ["EXTENSIONS", "FLAGS", "MAX_POSITION", "MEMORY_UNITS", "NLL_BOUND_NATS", "SampleLog", "TokenLog", "assemble",
           "memory_scale", "read_table"]
