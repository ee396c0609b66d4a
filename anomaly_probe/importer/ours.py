"""Our own per-token log (``anomaly-probe export`` writes it, ``anomaly-probe import`` reads it).

Layout (docs/FORMATS.md, "Per-token log"): a CSV whose first line is
``# anomaly-probe per-token log v1 {json}`` (the JSON object describes the scored unit: label, method,
role, max_tokens, sample, model, trained_context, run_dir, key, ...), then the header and one row per
scored token::

    sample,position,nll,correct,query_pos,n_keys

``position`` is the index of the **scored** token in its sample (entry ``i`` of a run's token arrays
scores token ``i + 1``, so ``position = i + 1``; the first token, position 0, is never scored). ``nll``
is in nats, written with ``repr`` (exact round trip). ``correct`` (0/1), ``query_pos`` (the RoPE
position the query used: capped by an in-cache window) and ``n_keys`` (keys attended) are written when
the run has them; ``query_pos`` and ``n_keys`` are for the reader's information and are not imported.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from anomaly_probe import json_input
from anomaly_probe.errors import UserError
from anomaly_probe.importer.columns import resolve_columns
from anomaly_probe.importer.logs import TokenLog, assemble
from anomaly_probe.importer.rows import csv_rows, first_line

NAME = "ours"
MAGIC = "# anomaly-probe per-token log v"
VERSION = 1
REQUIRED = ("sample", "position", "nll")
_FIRST = re.compile(r"^# anomaly-probe per-token log v(\d+)\s*(\{.*\})?\s*$")


def looks_like(first_line: str) -> bool:
    """True when the file's first line is our header (any version)."""
    return first_line.startswith(MAGIC)


def header_line(meta: dict) -> str:
    """The first line of a v1 file; ``meta`` must be JSON-serialisable (written on one line)."""
    return f"{MAGIC}{VERSION} {json.dumps(meta, ensure_ascii=True, allow_nan=False)}"


def write_log(path: Path, meta: dict, sample_id: str, position: np.ndarray, nll: np.ndarray,
              extra: dict[str, np.ndarray] | None = None) -> None:
    """Write one scored unit.

    Parameters
    ----------
    position : np.ndarray
        Index of the scored token per entry, shape (n,), int.
    nll : np.ndarray
        NLL per entry, nats, shape (n,), float.
    extra : dict, optional
        Column -> array of shape (n,): ``correct`` (bool), ``query_pos``, ``n_keys`` (int).
    """
    extra = {k: v for k, v in (extra or {}).items() if v is not None}
    names = ["sample", "position", "nll", *extra]
    text_sid = str(sample_id)
    if any(c in text_sid for c in ',"\n\r'):
        raise ValueError(f"sample id {text_sid!r} holds a comma, quote or line break")
    cols = [[text_sid] * len(nll), [str(int(p)) for p in position], [repr(float(x)) for x in nll]]
    for name, arr in extra.items():
        cols.append([str(int(bool(x))) if name == "correct" else str(int(x)) for x in arr])
    lines = [header_line(meta), ",".join(names)] + [",".join(row) for row in zip(*cols)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_log(path: str, explicit: dict[str, str | None]) -> TokenLog:
    """Read (streamed) a file whose first line is our header.

    Raises
    ------
    UserError
        The first line is not our header, another version, malformed JSON, a required column missing,
        or any defect :func:`~anomaly_probe.importer.logs.assemble` finds.
    """
    m = _FIRST.match(first_line(path) or "")
    if m is None:
        raise UserError(f"{path!r} is not an anomaly-probe per-token log (its first line is not "
                        f"'{MAGIC}{VERSION} {{...}}'); pick another --format")
    if int(m.group(1)) != VERSION:
        raise UserError(f"{path!r} is an anomaly-probe per-token log v{m.group(1)}; this version reads v{VERSION}")
    try:
        meta = json_input.loads(m.group(2)) if m.group(2) else {}
    except json.JSONDecodeError as exc:
        raise UserError(f"{path!r} line 1: the header's JSON is not valid ({exc.msg})") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path!r} line 1: the header's JSON is not an object")
    rows = csv_rows(path, ",", skip_first=True)
    header = rows.header
    if rows.first is None:
        raise UserError(f"{path!r} is empty (no data rows)")
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise UserError(f"{path!r}: an anomaly-probe per-token log needs the column(s) {', '.join(missing)} "
                        f"(columns: {', '.join(header)})")
    defaults = {"sample": "sample", "position": "position", "nll": "nll",
                "correct": "correct" if "correct" in header else None}
    columns = resolve_columns(header, rows.first, {k: explicit.get(k) or defaults.get(k) for k in explicit},
                              repr(path))
    shift = -1 if columns["position"] == "position" else 0
    log = assemble(path, NAME, columns, rows, 1.0, position_shift=shift, running_clock=False)
    log.meta = meta
    what = ", ".join(f"{k} {meta[k]}" for k in ("label", "max_tokens", "trained_context") if meta.get(k) is not None)
    log.notes = [f"{path}: anomaly-probe per-token log v{VERSION}" + (f" ({what})" if what else "")
                 + "; position p scores token p (query position p-1)"]
    return log


def stated_trained_context(logs: list[TokenLog]) -> tuple[int, str] | None:
    """The trained context our logs state in their headers, when they agree: ``(tokens, source)``.

    Raises
    ------
    UserError
        Two logs state different trained contexts.
    """
    stated = [(log, log.meta.get("trained_context")) for log in logs]
    stated = [(log, v) for log, v in stated if isinstance(v, int) and not isinstance(v, bool) and v > 0]
    if not stated:
        return None
    if len({v for _, v in stated}) > 1:
        listing = ", ".join(f"{v} in {log.path!r}" for log, v in stated)
        raise UserError(f"the logs state different trained contexts ({listing}); pass --trained-context N")
    files = list(dict.fromkeys(s.path for log, _ in stated for s in log.samples))
    more = f" and {len(files) - 1} more file(s)" if len(files) > 1 else ""
    return stated[0][1], f"log header of {files[0]!r}{more}"
