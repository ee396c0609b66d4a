"""Which layout a log has, and reading one role's log file(s) in it.

Detection (``--format auto``), first rule that fits wins:

1. first line ``# anomaly-probe per-token log v...``: ``ours`` (written by ``anomaly-probe export``);
2. first line a comma-separated header holding ``input_length``, ``nll`` and ``overall_ppl``:
   ``attention-sinks`` (its benchmark CSVs);
3. extension ``.csv``, ``.tsv``, ``.jsonl`` / ``.ndjson``: the generic table of that kind (columns
   recognised by name, :mod:`~anomaly_probe.importer.columns`);
4. extension ``.txt``, ``.log`` or none, every non-empty line one number: ``streaming-llm`` (its log.txt).

``--format NAME`` skips detection; a file that does not fit the forced layout is a UserError.
Detection reads the first line (rule 4: every line, streamed); no file is read whole.
"""

from __future__ import annotations

from pathlib import Path

from anomaly_probe.errors import UserError
from anomaly_probe.importer import attention_sinks, ours, streaming_llm
from anomaly_probe.importer.logs import EXTENSIONS, TokenLog, memory_scale, read_table
from anomaly_probe.importer.rows import first_line

GENERIC = ("csv", "tsv", "jsonl")
FORMATS = (ours.NAME, attention_sinks.NAME, streaming_llm.NAME, *GENERIC)
FORMAT_CHOICES = ("auto", *FORMATS)


def detect(path: str) -> str:
    """The layout of the file ``path`` by the rules in the module docstring.

    Raises
    ------
    UserError
        An empty file, or one no rule recognises.
    """
    first = first_line(path)
    if first is None:
        raise UserError(f"{path!r} is empty")
    suffix = Path(path).suffix.lower()
    if ours.looks_like(first):
        return ours.NAME
    if suffix not in (".jsonl", ".ndjson") and attention_sinks.looks_like(first):
        return attention_sinks.NAME
    if suffix in EXTENSIONS:
        return EXTENSIONS[suffix]
    if suffix in streaming_llm.SUFFIXES:
        bad = streaming_llm.first_bad_line(path)
        if bad is None:
            return streaming_llm.NAME
        raise UserError(f"{path!r}: not a streaming-llm log.txt (line {bad[0]} {bad[1][:40]!r} is not one number) "
                        "and not a table with a known extension; use .csv/.tsv/.jsonl or --format")
    raise UserError(f"{path!r}: unknown extension {suffix!r} and no known header; use .csv, .tsv, .jsonl, a "
                    f"streaming-llm log.txt, or --format ({', '.join(FORMATS)})")


def read_one(path: str, fmt: str, explicit: dict[str, str | None], memory_unit: str | None) -> TokenLog:
    """Read one file in layout ``fmt`` (``auto``: detected).

    Parameters
    ----------
    fmt : str
        One of :data:`FORMAT_CHOICES`.
    explicit : dict
        Field -> column named by a flag (None: the layout's, or found by name).
    memory_unit : str or None
        ``--memory-unit`` (None: the layout's unit; bytes for a generic table).
    """
    if fmt not in FORMAT_CHOICES:
        raise UserError(f"--format {fmt!r}: use one of {', '.join(FORMAT_CHOICES)}")
    memory_scale(memory_unit)  # a bad unit is an error whatever the layout
    if first_line(path) is None:
        raise UserError(f"{path!r} is empty")
    kind = detect(path) if fmt == "auto" else fmt
    if kind == ours.NAME:
        return ours.read_log(path, explicit)
    if kind == attention_sinks.NAME:
        return attention_sinks.read_log(path, explicit, memory_unit)
    if kind == streaming_llm.NAME:
        return streaming_llm.read_log(path, explicit)
    return read_table(path, kind, explicit, memory_scale(memory_unit))


def read_role(paths: list[str], fmt: str, explicit: dict[str, str | None], memory_unit: str | None) -> TokenLog:
    """One role's log: one file, or several files whose samples are put together.

    Files without a sample column hold one sample, ``"0"``; when several are given, the k-th file
    (from 0) becomes sample ``"k"``, so the k-th baseline file pairs with the k-th method file.

    Raises
    ------
    UserError
        A sample id in two of the files.
    """
    logs = [read_one(p, fmt, explicit, memory_unit) for p in paths]
    if len(logs) == 1:
        return logs[0]
    seen: dict[str, str] = {}
    samples, notes = [], []
    for k, log in enumerate(logs):
        if log.columns.get("sample") is None and [s.sample_id for s in log.samples] == ["0"]:
            log.samples[0].sample_id = str(k)
            notes.append(f"{log.path}: no sample column; sample '{k}' (its place among the files)")
        for s in log.samples:
            if s.sample_id in seen:
                raise UserError(f"sample {s.sample_id!r} is in both {seen[s.sample_id]!r} and {log.path!r}; give "
                                "each file its own sample ids, or pass the files of one sample length only")
            seen[s.sample_id] = log.path
            samples.append(s)
        notes += log.notes
    return TokenLog(path=", ".join(log.path for log in logs), format=", ".join(dict.fromkeys(g.format for g in logs)),
                    columns=logs[0].columns, samples=samples, rows=sum(g.rows for g in logs), notes=notes,
                    meta=_common_meta(logs))


def _common_meta(logs: list[TokenLog]) -> dict:
    """The header facts every file states alike (e.g. the label and trained context of exported units)."""
    stated = {g.meta.get("trained_context") for g in logs} - {None}
    if len(stated) > 1:
        raise UserError(f"the files {', '.join(repr(g.path) for g in logs)} state different trained contexts "
                        f"({', '.join(map(str, sorted(stated, key=str)))}); pass --trained-context N")
    keys = set.intersection(*(set(g.meta) for g in logs))
    return {k: logs[0].meta[k] for k in sorted(keys) if all(g.meta[k] == logs[0].meta[k] for g in logs)}
