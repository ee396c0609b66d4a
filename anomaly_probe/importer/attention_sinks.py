"""attention_sinks' benchmark CSVs (tomaarsen/attention_sinks ``benchmark/perplexity.py``), read as they are.

The script feeds one token at a time and appends a row per scored token to ``<experiment>.csv``
(``transformers.csv``, ``attention_sinks.csv``, ``windowed.csv``), rewritten every 10 tokens::

    input_length,nll,ppl,overall_ppl,cuda_vram_allocated,latency

* ``input_length`` = ``idx + 1``: the tokens fed so far, i.e. the index of the token this row's ``nll``
  scores. Our position is the query's index, so position = ``input_length - 1``.
* ``nll``: nats (``CrossEntropyLoss``). ``ppl`` (= exp(nll)) and ``overall_ppl`` (running PPL) are not
  NLL and are not read.
* ``cuda_vram_allocated``: ``torch.cuda.memory_allocated(0) / 1024 / 1024 / 1024`` ("in GB" in the
  script: binary gigabytes), converted to bytes x 2**30. Forks write ``hpu_ram_allocated`` (also GB).
* ``latency``: seconds for that token's forward (per token, not a running clock).
* Forks that score several samples add ``data_idx`` (the sample); the original scores one sample.
"""

from __future__ import annotations

import csv

from anomaly_probe.errors import UserError
from anomaly_probe.importer.columns import resolve_columns
from anomaly_probe.importer.logs import TokenLog, assemble, memory_scale
from anomaly_probe.importer.rows import csv_rows

NAME = "attention-sinks"
SIGNATURE = ("input_length", "nll", "overall_ppl")
"""Columns that together identify the layout (``overall_ppl`` is the script's own)."""
MEMORY_COLUMNS = ("cuda_vram_allocated", "hpu_ram_allocated")
MEMORY_UNIT = "GiB"


def header_of(first_line: str) -> list[str]:
    """The column names of a comma-separated first line (lower case, stripped)."""
    try:
        return [h.strip().lower() for h in next(csv.reader([first_line]))]
    except (csv.Error, StopIteration):
        return []


def looks_like(first_line: str) -> bool:
    """True when the first line is a header holding every column of :data:`SIGNATURE`."""
    header = header_of(first_line)
    return all(c in header for c in SIGNATURE)


def read_log(path: str, explicit: dict[str, str | None], memory_unit: str | None) -> TokenLog:
    """Read (streamed) a benchmark CSV; column flags override the layout's columns, ``memory_unit`` its GB.

    Raises
    ------
    UserError
        The header lacks the layout's columns, or any defect :func:`~anomaly_probe.importer.logs.assemble` finds.
    """
    rows = csv_rows(path, ",")
    header = rows.header
    lower = {h.lower(): h for h in header}
    missing = [c for c in SIGNATURE if c not in lower]
    if missing:
        raise UserError(f"{path!r} is not an attention_sinks benchmark CSV: no column(s) {', '.join(missing)} "
                        f"(columns: {', '.join(header)}); pick another --format")
    if rows.first is None:
        raise UserError(f"{path!r} is empty (no data rows)")
    mem = next((lower[c] for c in MEMORY_COLUMNS if c in lower), None)
    defaults = {"nll": lower["nll"], "position": lower["input_length"], "sample": lower.get("data_idx"),
                "memory": mem, "latency": lower.get("latency")}
    columns = resolve_columns(header, rows.first, {k: explicit.get(k) or defaults.get(k) for k in explicit},
                              repr(path))
    shift = -1 if columns["position"] == lower["input_length"] else 0
    unit = memory_unit if memory_unit is not None else (MEMORY_UNIT if columns["memory"] == mem else "B")
    log = assemble(path, NAME, columns, rows, memory_scale(unit), position_shift=shift, running_clock=False)
    notes = [f"{path}: attention_sinks benchmark CSV; input_length k scores token k (position k-1); ppl and "
             "overall_ppl not read"]
    if columns["memory"] is not None:
        notes.append(f"{path}: memory column {columns['memory']!r} read in {unit}"
                     + (" (the script divides torch.cuda.memory_allocated by 1024**3)" if unit == MEMORY_UNIT else ""))
    log.notes = notes + [n for n in log.notes if "no position column" not in n]
    return log
