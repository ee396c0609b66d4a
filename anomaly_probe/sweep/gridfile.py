"""Reading a sweep grid from the command line or from a TOML file, with one-line errors.

TOML layout (every key optional; top-level keys apply to every row, ``[[row]]`` tables add rows)::

    model = ["tiny-neox:hidden=32", "tiny-neox:hidden=64"]   # a list is an axis, crossed with the others
    max_tokens = [256, 512]
    num_samples = 2
    hypotheses = ["none"]
    cpus = 1                                                   # per cell, for --executor ray

    [[row]]                     # without rows the top level is the one row
    method = "streaming_llm"
    recent_size = [28, 60]

    [[row]]
    method = "window"

Keys: the :data:`~anomaly_probe.sweep.grid.KEYS` (``hypothesis`` is accepted for ``hypotheses``,
``trained_context = "auto"`` means the model config's). Here only the types are checked; whether a value
suits a run is checked per cell (a bad row fails its own cells, the others still run).
"""

from __future__ import annotations

from pathlib import Path

from anomaly_probe.errors import UserError
from anomaly_probe.sweep.grid import CONTEXT_AXIS, INT_AXES, KEYS, RESOURCES, Grid

ALIASES = {"hypothesis": "hypotheses"}


def grid_from_toml(path: str) -> Grid:
    """Read ``--grid FILE``.

    Raises
    ------
    UserError
        A missing or unreadable file, invalid TOML, an unknown key, a value of the wrong type, an empty
        axis, or ``row`` that is not a list of tables.
    """
    import tomllib

    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"--grid {path!r}: no such file (give a TOML file; see `anomaly-probe sweep --help`)")
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"--grid {path!r} is not valid TOML ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--grid {path!r}: cannot read it ({exc})") from None
    rows = data.pop("row", [{}])
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise UserError(f"--grid {path!r}: 'row' must be one or more [[row]] tables")
    top = check_row(data, f"--grid {path!r}")
    return Grid([top | check_row(r, f"--grid {path!r} [[row]] {i + 1}") for i, r in enumerate(rows)])


def grid_from_flags(given: dict) -> Grid:
    """One row from the sweep flags the user typed (destination -> value; lists are axes)."""
    row = {}
    for dest, value in given.items():
        key = ALIASES.get(dest, dest)
        if key == CONTEXT_AXIS:
            value = [v if v == "auto" else _int_or_text(v) for v in value]
        row[key] = value
    return Grid([check_row(row, "flags")])


def _int_or_text(text: str):
    try:
        return int(text)
    except ValueError:
        return text  # check_row says what is wrong with it


def check_row(row: dict, where: str) -> dict:
    """A row's keys and value types, checked; ``hypothesis`` renamed and ``all`` expanded."""
    from anomaly_probe.hypotheses.catalog import resolve_hypotheses

    out = {}
    for raw_key, value in row.items():
        key = ALIASES.get(raw_key, raw_key)
        if key not in KEYS:
            import difflib

            close = difflib.get_close_matches(key, KEYS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UserError(f"{where}: unknown grid key {raw_key!r}.{hint} Keys: {', '.join(KEYS)}")
        if key in out:
            raise UserError(f"{where}: {key} given twice")
        if key == "hypotheses":
            names = value if isinstance(value, list) else [value]
            if not names or not all(isinstance(n, str) for n in names):
                raise UserError(f"{where}: hypotheses = {value!r}: give a list of hypothesis names")
            out[key] = resolve_hypotheses(names)
        elif key in RESOURCES:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e6:
                raise UserError(f"{where}: {key} = {value!r}: give one number >= 0 (per cell, for --executor ray)")
            out[key] = value
        else:
            out[key] = _axis(key, value, where)
    return out


def _axis(key: str, value, where: str):
    values = value if isinstance(value, list) else [value]
    if not values:
        raise UserError(f"{where}: {key} = []: an axis needs at least one value")
    for v in values:
        if key in INT_AXES:
            ok, want = isinstance(v, int) and not isinstance(v, bool), "whole numbers"
        elif key == CONTEXT_AXIS:
            ok, want = (isinstance(v, int) and not isinstance(v, bool)) or v == "auto", "whole numbers or \"auto\""
        else:  # STR_AXES
            ok, want = isinstance(v, str), "strings"
        if not ok:
            raise UserError(f"{where}: {key} = {v!r}: expected {want}")
    return value
