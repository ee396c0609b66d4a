"""Plan every hypothesis' units, then judge them from the saved arrays and write the headline.

Everything here reads a :class:`ScoredRuns` view (built by :meth:`Session.scored
<anomaly_probe.run.session.Session.scored>`), never the session itself: judging is a function of the
recorded per-token arrays and run records, so it can be tested on hand-made ones.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from anomaly_probe.hypotheses import ALL, ExperimentSettings, JudgeInput, PlanContext
from anomaly_probe.hypotheses.region import AnalysisRegion, find_region
from anomaly_probe.hypotheses.share import gap_stats
from anomaly_probe.methods.base import CacheMethod
from anomaly_probe.ranking import RUN, Gap, rank
from anomaly_probe.ranking import headline as headline_sentence
from anomaly_probe.rundir import RoleEntry
from anomaly_probe.run.units import Unit, make_unit, pair_units
from anomaly_probe.stats.thresholds import Thresholds
from anomaly_probe.verdict import Verdict

RoleTable = dict[tuple[str, int], dict[str, list[Unit]]]
"""``table[(hypothesis, max_tokens)][role]`` is the list (one per sample) of units."""


@dataclass(frozen=True)
class ScoredRuns:
    """What the planner and the judges see of a run: its setup and the saved units by key.

    Attributes
    ----------
    method : CacheMethod
        The method under test.
    trained_context : int
        The model's trained context (tokens).
    dtype : str
        Model dtype name (``float32``...).
    environment : dict
        The environment record (results.json ``environment``).
    lengths : tuple of int
        ``--max-tokens``.
    num_samples : int
        Samples per length.
    engine : str
        ``--engine`` as configured (``auto`` allowed).
    arrays : mapping
        Unit key -> ``{"nll": (T-1,) float64 nats, "correct": (T-1,) bool, "query_pos", "n_keys"}``.
    records : mapping
        Unit key -> its results.json ``runs`` entry.
    """

    method: CacheMethod
    trained_context: int
    dtype: str
    environment: dict
    lengths: tuple[int, ...]
    num_samples: int
    engine: str
    arrays: Mapping[str, dict[str, np.ndarray]]
    records: Mapping[str, dict]

    def pair(self, max_tokens: int, sample: int) -> tuple[Unit, Unit]:
        """The baseline and method units at one length and sample."""
        return pair_units(max_tokens, sample, self.method, self.engine)

    def pairs(self) -> list[Unit]:
        """Baseline and method of every length and sample, in scoring order."""
        return [u for L in self.lengths for s in range(self.num_samples) for u in self.pair(L, s)]

    def gaps(self, max_tokens: int) -> list[np.ndarray]:
        """Per sample, the finite per-token gap NLL(baseline) - NLL(method) over all scored entries.

        Raises KeyError when a baseline or method unit has no arrays (it did not finish).
        """
        from anomaly_probe.finite_prefix import common_cut

        out = []
        for s in range(self.num_samples):
            base, meth = self.pair(max_tokens, s)
            b, m = self.arrays[base.key]["nll"], self.arrays[meth.key]["nll"]
            n = common_cut([b, m])  # the same non-finite rule as the comparisons and verdicts
            out.append((b - m)[:n])
        return out


def plan(view: ScoredRuns, names: list[str], settings: ExperimentSettings) -> tuple[list[Unit], RoleTable,
                                                                                      list[Verdict]]:
    """Units for every hypothesis, length and sample.

    Returns
    -------
    units : list of Unit
        Baseline and method first, then every hypothesis' units (duplicates are scored once).
    roles : RoleTable
        Which unit plays which role, per hypothesis and length (baseline and method included).
    errors : list of Verdict
        ERROR verdicts for hypotheses whose planning failed.
    """
    units = view.pairs()
    roles: RoleTable = {}
    errors: list[Verdict] = []
    for name in names:
        hyp = ALL[name]
        for L in view.lengths:
            ctx = PlanContext(method=view.method, trained_context=view.trained_context, dtype=view.dtype,
                              max_tokens=L, engine=view.engine, settings=settings)
            try:
                specs = hyp.roles(ctx)
                if specs is None:  # does not apply to this method (e.g. a policy that declares no ablation)
                    continue
                table: dict[str, list[Unit]] = {"baseline": [], "method": []}
                for s in range(view.num_samples):
                    base, meth = view.pair(L, s)
                    table["baseline"].append(base)
                    table["method"].append(meth)
                    for role, spec in specs.items():
                        table.setdefault(role, []).append(
                            make_unit(L, s, spec.method, spec.engine, spec.intervention, spec.prefix, spec.windows))
            except Exception as exc:  # noqa: BLE001 - one hypothesis' failure must not stop the others
                errors.append(_error(name, L, exc))
                continue
            roles[(name, L)] = table
            for us in table.values():
                units.extend(us)
    return units, roles, errors


def role_entries(view: ScoredRuns, roles: RoleTable) -> list[RoleEntry]:
    """The role table as saved in results.json: the baseline/method pair of every length (hypothesis
    ``none``), then every planned hypothesis' roles."""
    out = []
    for L in view.lengths:
        pairs = [view.pair(L, s) for s in range(view.num_samples)]
        for i, role in enumerate(("baseline", "method")):
            out.append(RoleEntry("none", L, role, [p[i].key for p in pairs]))
    for (name, L), table in roles.items():
        out.extend(RoleEntry(name, L, role, [u.key for u in us]) for role, us in table.items())
    return out


def regions(view: ScoredRuns, lengths, thresholds: Thresholds, strict: bool = False) -> dict[int, AnalysisRegion]:
    """The analysis region of every length whose baseline and method units finished (see ``region.py``).

    With ``strict``, a missing baseline or method unit raises KeyError instead of skipping the length.
    """
    out = {}
    for L in lengths:
        try:
            gaps = view.gaps(L)
        except KeyError:  # a baseline or method unit did not finish
            if strict:
                raise
            continue
        out[L] = find_region(gaps, L, view.trained_context, thresholds)
    return out


def _error(name: str, L: int, exc: BaseException) -> Verdict:
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    loc = f" at {where.filename.rsplit('/', 1)[-1]}:{where.lineno}" if where else ""
    return Verdict(name, "error", message=f"{type(exc).__name__}: {str(exc)[:300]}{loc}", max_tokens=L)


def judge(view: ScoredRuns, roles: RoleTable, thresholds: Thresholds, failed: dict[str, str] | None = None,
          where: dict[int, AnalysisRegion] | None = None) -> list[Verdict]:
    """Judge every planned hypothesis from the saved arrays.

    ``failed`` maps keys of units that crashed to the error message; hypotheses needing them get ERROR.
    Non-finite NLL: every unit of an affected sample is cut at the first NaN/inf of any of them
    (:func:`anomaly_probe.finite_prefix.cut_judge_input`), and the verdict says so; when too little is
    left, or the judge fails on what is left, the verdict is INCONCLUSIVE with the finding.
    """
    from anomaly_probe.finite_prefix import cut_judge_input

    failed = failed or {}
    verdicts = []
    if where is None:
        where = regions(view, sorted({L for _, L in roles}), thresholds)
    for (name, L), table in roles.items():
        missing = [u.key for us in table.values() for u in us if u.key not in view.arrays]
        if missing:
            why = next((f"{k}: {failed[k]}" for k in missing if k in failed), missing[0])
            verdicts.append(Verdict(name, "error", max_tokens=L,
                                    message=f"{len(missing)} run(s) it needs did not finish ({why})."))
            continue
        data = JudgeInput(
            hypothesis=name, max_tokens=L, trained_context=view.trained_context, dtype=view.dtype,
            method=view.method,
            nll={role: [view.arrays[u.key]["nll"] for u in us] for role, us in table.items()},
            correct={role: [view.arrays[u.key]["correct"] for u in us] for role, us in table.items()},
            runs={role: [view.records[u.key] for u in us] for role, us in table.items()},
            thresholds=thresholds, environment=view.environment,
            analysis_start=where[L].start if L in where else 0, analysis_region=where.get(L),
        )
        notes, summary, too_short = cut_judge_input(data)
        try:
            v = (Verdict(name, "inconclusive", message="Too few finite tokens left to judge.") if too_short
                 else ALL[name].judge(data))
        except Exception as exc:  # noqa: BLE001
            v = _error(name, L, exc)
            if notes:
                v.status, v.message = "inconclusive", f"Cannot judge the finite tokens ({v.message})."
        if notes:
            v.message += " " + summary
            v.evidence["nonfinite"] = notes
        v.max_tokens = L
        verdicts.append(v)
    return verdicts


def headline(view: ScoredRuns, verdicts: list[Verdict], thresholds: Thresholds,
             where: dict[int, AnalysisRegion] | None = None) -> str:
    """The headline of a run: at the longest length with an anomaly (else the longest), on its analysis region.

    ``where``: the analysis regions the verdicts used (computed here when not given). Raises KeyError
    when a length's baseline or method unit is missing.
    """
    if not verdicts:
        return ""
    lengths = sorted({v.max_tokens for v in verdicts if v.max_tokens}, reverse=True)
    if where is None or any(L not in where for L in lengths):
        where = regions(view, lengths, thresholds, strict=True)
    gaps = {}
    for L in where:
        gap = [g[where[L].start:] for g in view.gaps(L)]
        if sum(g.size for g in gap):
            stats = gap_stats(gap, thresholds)
            gaps[L] = Gap(stats["mean"], stats["ci_low"], stats["ci_high"])
    lengths = [L for L in lengths if L in gaps]
    if not lengths:
        return ("No finite baseline and method tokens are left in the analysed region (non-finite NLL); "
                + "; ".join(f"{v.hypothesis} {v.status}" for v in rank(verdicts)) + ".")
    anomalous = [L for L in lengths if gaps[L].anomaly]
    L = anomalous[0] if anomalous else lengths[0]
    region = where[L]
    on = "" if region.basis == "all" else f" on {region.text()}"
    titles = {name: hyp.title for name, hyp in ALL.items()}
    return headline_sentence(f"At {L} tokens{on} {view.method.label()}", gaps[L],
                             [v for v in verdicts if v.max_tokens == L], titles, RUN)
