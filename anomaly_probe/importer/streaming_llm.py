"""streaming-llm's ``log.txt`` (mit-han-lab/streaming-llm ``examples/eval_long_ppl.py``), read as it is.

The script feeds one token at a time and prints each scored token's NLL (nats, ``CrossEntropyLoss``)
on its own line of ``<output_dir>/log.txt``: no header, no other column. Line ``k`` (from 0) scores
token ``k + 1`` after the query at position ``k``, so our position is the line index.

Several samples (``--num_samples``) are concatenated without a marker, and the script keeps the
KV cache (``past_key_values``) across them: the line index is then still the position of the query
in the one running stream the model saw (each sample's last token is never fed). The file is read
as one sample, ``"0"``, and a note says so.
"""

from __future__ import annotations

from typing import Iterator

from anomaly_probe.errors import UserError
from anomaly_probe.importer.logs import TokenLog, assemble
from anomaly_probe.importer.rows import Rows, lines

NAME = "streaming-llm"
SUFFIXES = (".txt", ".log", "")
"""Extensions a log.txt may have when the format is recognised from its content."""


def first_bad_line(path: str) -> tuple[int, str] | None:
    """``(line number, text)`` of the first non-empty line of the file that is not one number; None when all
    are (streamed)."""
    for n, line in lines(path):
        s = line.strip()
        if not s:
            continue
        try:
            float(s)
        except ValueError:
            return n, s
    return None


def read_log(path: str, explicit: dict[str, str | None]) -> TokenLog:
    """Read (streamed) a log.txt: one NLL per line, position = line index among the non-empty lines.

    Raises
    ------
    UserError
        A line that is not one number, a column flag (the file has no columns), or any defect
        :func:`~anomaly_probe.importer.logs.assemble` finds (non-finite or negative NLL).
    """
    flags = [f for f, v in explicit.items() if v]
    if flags:
        raise UserError(f"{path!r} is a streaming-llm log.txt (one NLL per line, no columns): column flags "
                        f"({', '.join('--' + f for f in flags)} ...) do not apply; drop them or pick another --format")
    bad = first_bad_line(path)
    if bad is not None:
        raise UserError(f"{path!r} is not a streaming-llm log.txt (one NLL per line): line {bad[0]} {bad[1][:40]!r} is "
                        "not one number; pick another --format")
    columns = {"nll": "nll", "position": None, "sample": None, "memory": None, "latency": None, "correct": None}
    log = assemble(path, NAME, columns, Rows(["nll"], None, lambda names: _values(path)), 1.0, running_clock=False)
    rows = log.rows
    log.columns = {k: ("line" if k == "nll" else None) for k in columns}
    log.notes = [f"{path}: streaming-llm log.txt, {rows} NLL line(s); line k scores token k+1 (position k); "
                 "no sample boundaries are recorded, so the file is one sample (eval_long_ppl.py keeps the KV cache "
                 "across samples: the line index is the position in the stream the model saw)"]
    return log



def _values(path: str) -> Iterator[tuple[int, list]]:
    """``(line, [NLL text])`` per non-empty line; the position is the line's index among them."""
    for n, line in lines(path):
        if line.strip():
            yield n, [line]
