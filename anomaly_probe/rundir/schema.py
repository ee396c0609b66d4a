"""``results.json``: the stable, versioned interface every other tool reads.

Schema (version 1), every top-level key::

    schema_version      int, :data:`SCHEMA_VERSION`
    status              "running" | "interrupted" (Ctrl-C / SIGTERM; resume with ``run --resume``) |
                        "failed" (the folder could not be written, or an internal error; resumable) |
                        "partial" (finished with failed units; ``run --retry-failed``) | "complete"
    environment         run: python, torch, transformers, device, device_name, dtype, attn_implementation,
                        cpu_count, total_memory_bytes, platform, argv; import: source, python, numpy,
                        platform, device, dtype, files, notes, argv
    config              run: the resolved RunConfig; import: ``command: "import"``, the files, columns and
                        model facts it was given
    model               spec, source, arch, trained_context (the full-attention layers'), num_layers,
                        num_parameters (run),
                        sliding_window (the sliding layers' window, or null)
    position_schemes[]  run only: how each decoder layer encodes positions, one entry per run of equal layers
                        (layers, position rope/alibi/none, attention full/sliding, window, layer_type, and for
                        RoPE rope_type, base, rotary_dims, head_dim; ``models.positions.describe_schemes``)
    method              the method under test: CacheMethod.describe() plus ``label``
    runs[]              :class:`~anomaly_probe.rundir.records.UnitRecord`, one per scored unit
                        (tokens/<key>.npz holds nll, correct, query_pos, n_keys)
    comparisons[]       :class:`~anomaly_probe.rundir.comparison.Comparison`, baseline vs method per length
    verdicts[]          :class:`~anomaly_probe.verdict.Verdict`, ranked (:mod:`anomaly_probe.ranking`)
    headline            one sentence (:func:`anomaly_probe.ranking.headline`)
    failures[]          :class:`~anomaly_probe.rundir.records.Failure`: units that crashed
    inputs              run only: text_tokens, samples_sha256 (a resumed run checks its samples are unchanged)
    thresholds          the decision thresholds (``Thresholds.to_dict()``)
    experiment_settings run: ``ExperimentSettings`` fields; import: source, max_tokens
    analysis_regions[]  runs with hypotheses: the tokens every judge of a length used (``AnalysisRegion.to_dict()``)
    roles[]             :class:`~anomaly_probe.rundir.records.RoleEntry`: which unit plays which role, per
                        hypothesis, length and sample (hypothesis ``none``: the baseline/method pair)
    alignment           import only: how the logs were aligned on their shared (sample, position) pairs
                        (tokens_kept, tokens_total, samples_kept, dropped[], samples_only_in, note)

:func:`validate` checks the types of all of it (``report`` refuses a file that fails, naming the field);
:meth:`Results.from_dict` is lenient (``run --resume`` drops a bad ``runs[]`` entry and scores it again).

A run with NaN/inf NLL gets ``nonfinite`` (see :mod:`anomaly_probe.nonfinite`); its ``nll_mean`` and
``ppl`` are then null. The file is rewritten atomically after every finished unit, so it is always
valid JSON. Keys this version does not know are kept (``extra``) and written back unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from anomaly_probe.rundir.comparison import Comparison
from anomaly_probe.rundir.records import Failure, RoleEntry, UnitRecord, check_types, describe
from anomaly_probe.stats.thresholds import Thresholds
from anomaly_probe.verdict import Verdict

SCHEMA_VERSION = 1

_OPTIONAL = ("inputs", "thresholds", "experiment_settings", "analysis_regions", "alignment", "position_schemes")
"""Top-level keys left out while None (an import has no inputs; a run without hypotheses no regions)."""


@dataclass
class Results:
    """The whole ``results.json``; ``to_dict`` writes it in the documented key order."""

    status: str = "running"
    environment: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    method: dict = field(default_factory=dict)
    runs: list[UnitRecord] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    headline: str = ""
    failures: list[Failure] = field(default_factory=list)
    inputs: dict | None = None
    thresholds: dict | None = None
    experiment_settings: dict | None = None
    analysis_regions: list[dict] | None = None
    roles: list[RoleEntry] = field(default_factory=list)
    alignment: dict | None = None
    position_schemes: list[dict] | None = None
    extra: dict = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema_version": self.schema_version, "status": self.status, "environment": self.environment,
            "config": self.config, "model": self.model, "method": self.method,
            "runs": [r.to_dict() for r in self.runs], "comparisons": [c.to_dict() for c in self.comparisons],
            "verdicts": [v.to_dict() for v in self.verdicts], "headline": self.headline,
            "failures": [f.to_dict() for f in self.failures],
        }
        for key in _OPTIONAL:
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out["roles"] = [r.to_dict() for r in self.roles]
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "Results":
        """Read a parsed results.json leniently: a section of the wrong type reads as empty, and a list
        entry that is not a valid record is dropped (a resumed run scores that unit again)."""
        def obj(key: str) -> dict:
            value = data.get(key)
            return value if isinstance(value, dict) else {}

        def listing(key: str, record) -> list:
            out = []
            for item in data.get(key) if isinstance(data.get(key), list) else []:
                try:
                    if record is Verdict and isinstance(item, dict):
                        check_types(Verdict, item, "Verdict")
                    out.append(record.from_dict(item))
                except (TypeError, ValueError):
                    continue
            return out

        regions = data.get("analysis_regions")
        known = {"schema_version", "status", "environment", "config", "model", "method", "runs", "comparisons",
                 "verdicts", "headline", "failures", "roles", *_OPTIONAL}
        return cls(
            status=str(data.get("status")), environment=obj("environment"), config=obj("config"), model=obj("model"),
            method=obj("method"), runs=listing("runs", UnitRecord), comparisons=listing("comparisons", Comparison),
            verdicts=listing("verdicts", Verdict),
            headline=data.get("headline") if isinstance(data.get("headline"), str) else "",
            failures=listing("failures", Failure),
            inputs=data.get("inputs") if isinstance(data.get("inputs"), dict) else None,
            thresholds=data.get("thresholds") if isinstance(data.get("thresholds"), dict) else None,
            experiment_settings=(data.get("experiment_settings") if isinstance(data.get("experiment_settings"), dict)
                                 else None),
            analysis_regions=[r for r in regions if isinstance(r, dict)] if isinstance(regions, list) else None,
            roles=listing("roles", RoleEntry),
            alignment=data.get("alignment") if isinstance(data.get("alignment"), dict) else None,
            position_schemes=([p for p in data["position_schemes"] if isinstance(p, dict)]
                              if isinstance(data.get("position_schemes"), list) else None), extra={k: v for k, v in data.items() if k not in known},
            schema_version=data.get("schema_version", SCHEMA_VERSION),
        )


_SECTIONS = {"environment": dict, "config": dict, "model": dict, "method": dict, "inputs": dict, "thresholds": dict,
             "experiment_settings": dict, "alignment": dict, "status": str, "headline": str}
_RECORDS = {"runs": UnitRecord, "comparisons": Comparison, "verdicts": Verdict, "failures": Failure, "roles": RoleEntry}
_UNIT_INTERVAL = ("ci_level", "region_alpha")
"""Thresholds that are probabilities, strictly between 0 and 1."""


def validate(data: dict) -> None:
    """Check the types of a parsed results.json (every record field, every section, the thresholds).

    Keys this version does not know are not checked (they are kept as they are); optional sections may
    be null.

    Raises
    ------
    ValueError
        The first problem, naming its place: ``runs[0].max_tokens is a number (2.5); expected a whole
        number >= 0``.
    """
    for key, kind in _SECTIONS.items():
        value = data.get(key)
        if value is not None and not isinstance(value, kind):
            raise ValueError(f"{key} is {describe(value)}; expected {'an object' if kind is dict else 'a string'}")
    for key, record in _RECORDS.items():
        items = data.get(key)
        if items is None:
            continue
        if not isinstance(items, list):
            raise ValueError(f"{key} is {describe(items)}; expected a list")
        for i, item in enumerate(items):
            where = f"{key}[{i}]"
            if not isinstance(item, dict):
                raise ValueError(f"{where} is {describe(item)}; expected an object")
            required = ("hypothesis", "status") if record is Verdict else record.REQUIRED
            missing = [k for k in required if item.get(k) is None]
            if missing:
                raise ValueError(f"{where} has no {', '.join(missing)}")
            check_types(record, item, where)
    regions = data.get("analysis_regions")
    if regions is not None and not (isinstance(regions, list) and all(isinstance(r, dict) for r in regions)):
        raise ValueError(f"analysis_regions is {describe(regions)}; expected a list of objects")
    if isinstance(data.get("thresholds"), dict):
        _validate_thresholds(data["thresholds"])


def _validate_thresholds(saved: dict) -> None:
    """The decision thresholds: numbers of the field's kind, counts >= 1, probabilities in (0, 1)."""
    check_types(Thresholds, {k: v for k, v in saved.items() if k != "tolerance_nats"}, "thresholds")
    for name, value in saved.items():
        if name in _UNIT_INTERVAL and isinstance(value, (int, float)) and not 0 < value < 1:
            raise ValueError(f"thresholds.{name} is {value!r}; expected a number between 0 and 1")
        if isinstance(value, int) and not isinstance(value, bool) and value < 1 and name in _COUNTS:
            raise ValueError(f"thresholds.{name} is {value!r}; expected a whole number >= 1")
    tol = saved.get("tolerance_nats")
    if tol is not None and not (isinstance(tol, dict) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in tol.values())):
        raise ValueError(f"thresholds.tolerance_nats is {describe(tol)}; expected an object of dtype -> nats >= 0")


_COUNTS = ("block_tokens", "n_boot", "min_tokens", "min_blocks", "region_permutations")
