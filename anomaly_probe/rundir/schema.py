"""``results.json``: the stable, versioned interface every other tool reads.

Schema (version 1), every top-level key::

    schema_version      int, :data:`SCHEMA_VERSION`
    status              "running" | "interrupted" (Ctrl-C / SIGTERM; resume with ``run --resume``) |
                        "failed" (an internal error) | "complete"
    environment         run: python, torch, transformers, device, device_name, dtype, attn_implementation,
                        cpu_count, total_memory_bytes, platform, argv; import: source, python, numpy,
                        platform, device, dtype, files, notes, argv
    config              run: the resolved RunConfig; import: ``command: "import"``, the files, columns and
                        model facts it was given
    model               spec, source, arch, trained_context (the full-attention layers'), num_layers,
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

A run with NaN/inf NLL gets ``nonfinite`` (see :mod:`anomaly_probe.nonfinite`); its ``nll_mean`` and
``ppl`` are then null. The file is rewritten atomically after every finished unit, so it is always
valid JSON. Keys this version does not know are kept (``extra``) and written back unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from anomaly_probe.rundir.comparison import Comparison
from anomaly_probe.rundir.records import Failure, RoleEntry, UnitRecord
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
