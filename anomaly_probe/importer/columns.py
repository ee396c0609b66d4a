"""Which column holds what: common spellings, overridable by ``--nll-col`` and friends."""

from __future__ import annotations

from anomaly_probe.errors import UserError

SPELLINGS: dict[str, tuple[str, ...]] = {
    "nll": ("nll", "loss", "neg_log_likelihood", "negative_log_likelihood", "nll_nats", "token_nll", "token_loss"),
    "position": ("input_length", "position", "pos", "token_index", "token_idx", "step", "idx", "index", "t",
                 "token"),
    "sample": ("sample", "sample_id", "sample_idx", "doc", "doc_id", "document", "sequence", "sequence_id", "seq"),
    "memory": ("memory", "vram", "rss", "mem_bytes", "memory_bytes", "rss_bytes", "mem", "gpu_memory", "peak_memory"),
    "latency": ("latency", "time", "seconds", "latency_s", "step_seconds", "time_s", "duration"),
    "correct": ("correct", "is_correct", "top1", "top1_correct", "acc", "accuracy", "hit"),
}
"""Candidate names per field, in priority order; matched case-insensitively after stripping spaces."""

FLAGS = {"nll": "--nll-col", "position": "--pos-col", "sample": "--sample-col", "memory": "--memory-col",
         "latency": "--latency-col", "correct": "--correct-col"}
REQUIRED = ("nll",)


def resolve_columns(header: list[str], first_row: dict, explicit: dict[str, str | None],
                    where: str) -> dict[str, str | None]:
    """Map each field to a column of the file (or None when absent and optional).

    Parameters
    ----------
    header : list of str
        The file's column names.
    first_row : dict
        The first data row; an automatically found candidate whose value there is not a number is
        skipped (e.g. a ``token`` column holding the token's text), except for ``sample``.
    explicit : dict
        Field -> column named by a flag (None: find it).
    where : str
        The file, for messages.

    Raises
    ------
    UserError
        A flag names a column the file lacks, or no NLL column is found.
    """
    by_key = {name.strip().lower(): name for name in header}
    out: dict[str, str | None] = {}
    for field, names in SPELLINGS.items():
        flag_value = explicit.get(field)
        if flag_value:
            col = by_key.get(flag_value.strip().lower())
            if col is None:
                raise UserError(f"{where}: {FLAGS[field]} {flag_value!r} is not a column "
                                f"(columns: {', '.join(header)})")
            out[field] = col
            continue
        out[field] = next((by_key[n] for n in names if n in by_key
                           and (field == "sample" or _numeric(first_row.get(by_key[n])))), None)
    used = [c for c in out.values() if c is not None]
    if len(used) != len(set(used)):
        dup = next(c for c in used if used.count(c) > 1)
        raise UserError(f"{where}: column {dup!r} was picked for two fields; name them with --nll-col/--pos-col/...")
    for field in REQUIRED:
        if out[field] is None:
            raise UserError(f"{where}: no {field.upper()} column (looked for {', '.join(SPELLINGS[field])}; columns: "
                            f"{', '.join(header) or 'none'}); name it with {FLAGS[field]}")
    return out


def _numeric(value) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, (int, float)):
        return True
    try:
        float(str(value).strip())
        return True
    except (TypeError, ValueError):
        return False
