"""Typed records of ``results.json``: a scored unit, a failure and a row of the role table.

Each record is a dataclass whose fields are the JSON keys, in the order they are written. ``to_dict``
gives the JSON object (optional fields only when set); ``from_dict`` reads one back. Keys a record
does not know (written by a newer anomaly-probe) are kept in ``extra`` and written back unchanged, so
reading and re-writing a folder never loses them. A new key is added as a field here, nowhere else.

Types are checked on reading (:func:`check_types`): a field's value must fit the field's annotation
(``int``: a whole number 0 <= n < 2**62, never a bool; ``float``: any number but a bool; ``str``,
``dict``, ``list``, ``list[str]``; ``| None`` allows null), else ValueError naming the field. A
hand-edited or corrupt file is thus refused in one line instead of failing deep in a report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

INT_LIMIT = 2**62
"""Whole numbers in results.json (lengths, counts, sizes) are below this (numpy int64 holds them)."""


def check_types(cls, data: dict, where: str) -> None:
    """Check every field of dataclass ``cls`` that ``data`` holds against the field's annotation.

    Parameters
    ----------
    cls : type
        A dataclass whose annotations are strings such as ``"int | None"`` or ``"list[str]"``.
    data : dict
        The JSON object read for it.
    where : str
        The object's place in results.json for the message, e.g. ``runs[3]``.

    Raises
    ------
    ValueError
        ``where.field is a str ('x'); expected a whole number >= 0 or null``.
    """
    for f in fields(cls):
        if f.name == "extra" or f.name not in data:
            continue
        options = [a.strip() for a in str(f.type).split("|")]
        value = data[f.name]
        if not any(_fits(option, value) for option in options):
            wanted = " or ".join(_WORDS.get(o, o) for o in options)
            raise ValueError(f"{where}.{f.name} is {describe(value)}; expected {wanted}")


_WORDS = {"int": "a whole number >= 0", "float": "a number", "str": "a string", "dict": "an object",
          "list": "a list", "list[str]": "a list of strings", "list[dict]": "a list of objects", "None": "null",
          "bool": "true/false"}


def _fits(option: str, value: Any) -> bool:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    checks = {
        "None": lambda: value is None,
        "Any": lambda: True,
        "bool": lambda: isinstance(value, bool),
        "int": lambda: number and isinstance(value, int) and 0 <= value < INT_LIMIT,
        "float": lambda: number and not (isinstance(value, float) and math.isinf(value)),
        "str": lambda: isinstance(value, str),
        "dict": lambda: isinstance(value, dict),
        "list": lambda: isinstance(value, list),
        "list[str]": lambda: isinstance(value, list) and all(isinstance(v, str) for v in value),
        "list[dict]": lambda: isinstance(value, list) and all(isinstance(v, dict) for v in value),
    }
    return checks[option]() if option in checks else True


def describe(value: Any) -> str:
    """A value's JSON type and a short excerpt, for messages: ``a str ('x')``, ``null``."""
    if value is None:
        return "null"
    kind = {bool: "a bool", int: "a whole number", float: "a number", str: "a string", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)
    return f"{kind} ({str(value)[:30] if not isinstance(value, str) else repr(value[:30])})"


class Record:
    """``to_dict``/``from_dict`` for a dataclass with an ``extra`` dict of unknown keys.

    ``OPTIONAL`` names the fields left out of the JSON while they are None; ``REQUIRED`` the keys
    ``from_dict`` insists on (ValueError when one is missing).
    """

    OPTIONAL: ClassVar[frozenset[str]] = frozenset()
    REQUIRED: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is None and f.name in self.OPTIONAL:
                continue
            out[f.name] = value
        out.update(self.extra)  # type: ignore[attr-defined]
        return out

    @classmethod
    def from_dict(cls, data: Any):
        """The record in ``data`` (a JSON object).

        Raises
        ------
        ValueError
            ``data`` is not an object, misses a required key, or a field has the wrong type
            (:func:`check_types`).
        """
        if not isinstance(data, dict):
            raise ValueError(f"{cls.__name__}: expected an object, got {type(data).__name__}")
        missing = [k for k in cls.REQUIRED if data.get(k) is None]
        if missing:
            raise ValueError(f"{cls.__name__}: no {', '.join(missing)}")
        check_types(cls, data, cls.__name__)
        known = {f.name for f in fields(cls) if f.name != "extra"}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in known},  # type: ignore[call-arg]
                   extra={k: v for k, v in data.items() if k not in known})


@dataclass
class UnitRecord(Record):
    """One scored unit (a ``runs[]`` entry): what was scored, how, and its summary numbers.

    Attributes
    ----------
    key : str
        The unit key, also the stem of ``tokens/<key>.npz`` (see :class:`anomaly_probe.run.units.Unit`).
    method, sink_size, recent_size, position_mode, capacity : str, int or None
        The KV-cache policy (``CacheMethod.describe()``); ``window``/``stride`` for the recompute oracle.
    label : str
        The method's display name, e.g. ``streaming_llm(4+252, in-cache)``.
    engine : str
        Resolved engine (``imported`` for ``anomaly-probe import``).
    intervention : str
        ``none`` for a plain run, else the experiment's change (docs/FORMATS.md "Interventions").
    intervention_info : dict
        What the intervention reported (e.g. ballast bytes held).
    prefix : int or None
        Only the first ``prefix`` tokens of the sample were scored.
    windows : list of [start, stop] or None
        Entry ranges scored one query per forward by the eval-bias ``spot`` engine (only then).
    dtype : str
        Model dtype (``unknown`` for imported logs).
    max_tokens, sample : int
        Sample length (tokens) and sample index.
    sample_id, source_file : str or None
        Imported logs: the sample's id in the log and the log file.
    tokens_scored : int
        Entries of the token arrays (max_tokens - 1 for a whole sample).
    nll_mean, ppl, acc : float or None
        Mean NLL (nats/token), exp(nll_mean), top-1 accuracy; null when the NLL has NaN/inf.
    tok_per_s, seconds : float or None
        Scoring speed and wall time of the engine's loop (seconds).
    unit_seconds : float or None
        Wall time of the whole unit (seconds): the intervention's setup, scoring with its probes,
        assembling and writing the probe trace, locating a NaN, saving the tokens; what the unit cost
        the run (the console summary's ``time (s)``).
    trace_seconds : float or None
        Of which assembling and writing the probe trace (with probes).
    peak_rss_bytes : int or float or None
        Peak resident memory (bytes).
    tokens_file : str
        ``tokens/<key>.npz`` (relative to the run folder).
    trace_file, trace_bytes_per_step : str, float or None
        The probe trace and its stored bytes per row (with probes).
    nonfinite : dict or None
        Where the NLL first became NaN/inf (:mod:`anomaly_probe.nonfinite`); only then.
    """

    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"window", "stride", "windows", "sample_id", "source_file", "trace_file",
                                                     "trace_bytes_per_step", "nonfinite", "unit_seconds",
                                                     "trace_seconds"})
    REQUIRED: ClassVar[tuple[str, ...]] = ("key",)

    key: str
    method: str = ""
    window: int | None = None
    stride: int | None = None
    sink_size: int | None = None
    recent_size: int | None = None
    position_mode: str | None = None
    capacity: int | None = None
    label: str = ""
    engine: str = ""
    intervention: str = "none"
    intervention_info: dict = field(default_factory=dict)
    prefix: int | None = None
    windows: list | None = None
    dtype: str = "unknown"
    max_tokens: int = 0
    sample: int = 0
    sample_id: str | None = None
    source_file: str | None = None
    tokens_scored: int = 0
    nll_mean: float | None = None
    ppl: float | None = None
    acc: float | None = None
    tok_per_s: float | None = None
    seconds: float | None = None
    unit_seconds: float | None = None
    trace_seconds: float | None = None
    peak_rss_bytes: int | float | None = None
    tokens_file: str = ""
    trace_file: str | None = None
    trace_bytes_per_step: float | None = None
    nonfinite: dict | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class Failure(Record):
    """A unit that crashed (a ``failures[]`` entry): its key and one line saying what to change."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("key",)

    key: str
    error: str = ""
    extra: dict = field(default_factory=dict)


@dataclass
class RoleEntry(Record):
    """One row of the planner's role table (a ``roles[]`` entry).

    Attributes
    ----------
    hypothesis : str
        The hypothesis that asked for the units, or ``none`` for the run's own baseline/method pair
        (the pair every comparison uses).
    max_tokens : int
        Sample length.
    role : str
        ``baseline``, ``method`` or the hypothesis' own role (``oracle``, ``stepwise``, ``topk``...).
    units : list of str
        Unit keys, one per sample (index = sample).
    """

    REQUIRED: ClassVar[tuple[str, ...]] = ("hypothesis", "role")

    hypothesis: str
    max_tokens: int = 0
    role: str = ""
    units: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
