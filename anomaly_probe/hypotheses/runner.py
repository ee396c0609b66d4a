"""Plan every hypothesis' runs, score each distinct run once, judge, rank and write the headline."""

from __future__ import annotations

import math
import traceback

from anomaly_probe.hypotheses import ALL, ExperimentSettings, JudgeInput, PlanContext
from anomaly_probe.hypotheses.region import AnalysisRegion, find_region
from anomaly_probe.hypotheses.share import gap_stats
from anomaly_probe.stats.thresholds import Thresholds
from anomaly_probe.units import Unit
from anomaly_probe.verdict import Verdict


def plan(session, names: list[str], settings: ExperimentSettings) -> tuple[list[Unit], dict, list[Verdict]]:
    """Units for every hypothesis, length and sample.

    Returns
    -------
    units : list of Unit
        Baseline and method first, then every hypothesis' runs (duplicates are scored once).
    roles : dict
        ``roles[(name, L)][role]`` is the list (per sample) of units.
    errors : list of Verdict
        ERROR verdicts for hypotheses whose planning failed.
    """
    units = session.baseline_and_method_units()
    roles: dict = {}
    errors: list[Verdict] = []
    for name in names:
        hyp = ALL[name]
        for L in session.config.max_tokens:
            ctx = PlanContext(method=session.method, trained_context=session.loaded.trained_context,
                              dtype=session.environment["dtype"], max_tokens=L, engine=session.config.engine,
                              settings=settings)
            try:
                specs = hyp.roles(ctx)
                table = {"baseline": [], "method": []}
                for s in range(session.config.num_samples):
                    table["baseline"].append(session.unit(L, s, _full(), session.config.engine))
                    table["method"].append(session.unit(L, s, session.method, session.config.engine))
                    for role, spec in specs.items():
                        table.setdefault(role, []).append(
                            session.unit(L, s, spec.method, spec.engine, spec.intervention, spec.prefix, spec.windows))
            except Exception as exc:  # noqa: BLE001 - one hypothesis' failure must not stop the others
                errors.append(_error(name, L, exc))
                continue
            roles[(name, L)] = table
            for role, us in table.items():
                units.extend(us)
    return units, roles, errors


def _full():
    from anomaly_probe.methods import FullCache

    return FullCache()


def _gaps(session, L: int) -> list:
    """Per sample, the finite per-token gap NLL(baseline) - NLL(method) over all scored entries."""
    from anomaly_probe.finite_prefix import common_cut

    out = []
    for s in range(session.config.num_samples):
        b = session.arrays[session.unit(L, s, _full(), session.config.engine).key]["nll"]
        m = session.arrays[session.unit(L, s, session.method, session.config.engine).key]["nll"]
        n = common_cut([b, m])  # the same non-finite rule as the comparisons and verdicts
        out.append((b - m)[:n])
    return out


def regions(session, lengths, thresholds: Thresholds, strict: bool = False) -> dict[int, AnalysisRegion]:
    """The analysis region of every length whose baseline and method runs finished (see ``region.py``).

    With ``strict``, a missing baseline or method run raises KeyError instead of skipping the length.
    """
    out = {}
    for L in lengths:
        try:
            gaps = _gaps(session, L)
        except KeyError:  # a baseline or method run did not finish
            if strict:
                raise
            continue
        out[L] = find_region(gaps, L, session.loaded.trained_context, thresholds)
    return out


def _error(name: str, L: int, exc: BaseException) -> Verdict:
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    loc = f" at {where.filename.rsplit('/', 1)[-1]}:{where.lineno}" if where else ""
    return Verdict(name, "error", message=f"{type(exc).__name__}: {str(exc)[:300]}{loc}", max_tokens=L)


def judge(session, roles: dict, thresholds: Thresholds, failed: dict[str, str] | None = None,
          where: dict[int, AnalysisRegion] | None = None) -> list[Verdict]:
    """Judge every planned hypothesis from the session's saved arrays.

    ``failed`` maps unit keys whose run crashed to the error message; hypotheses needing them get ERROR.
    Non-finite NLL: every run of an affected sample is cut at the first NaN/inf of any of them
    (:func:`anomaly_probe.finite_prefix.cut_judge_input`), and the verdict says so; when too little is
    left, or the judge fails on what is left, the verdict is INCONCLUSIVE with the finding.
    """
    from anomaly_probe.finite_prefix import cut_judge_input

    failed = failed or {}
    verdicts = []
    by_key = {r["key"]: r for r in session.runs}
    if where is None:
        where = regions(session, sorted({L for _, L in roles}), thresholds)
    for (name, L), table in roles.items():
        missing = [u.key for us in table.values() for u in us if u.key not in session.arrays]
        if missing:
            why = next((f"{k}: {failed[k]}" for k in missing if k in failed), missing[0])
            verdicts.append(Verdict(name, "error", max_tokens=L,
                                    message=f"{len(missing)} run(s) it needs did not finish ({why})."))
            continue
        data = JudgeInput(
            hypothesis=name, max_tokens=L, trained_context=session.loaded.trained_context,
            dtype=session.environment["dtype"], method=session.method,
            nll={role: [session.arrays[u.key]["nll"] for u in us] for role, us in table.items()},
            correct={role: [session.arrays[u.key]["correct"] for u in us] for role, us in table.items()},
            runs={role: [by_key[u.key] for u in us] for role, us in table.items()},
            thresholds=thresholds, environment=session.environment,
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


def rank(verdicts: list[Verdict]) -> list[Verdict]:
    """Longest length first; within a length causes (interventions on the baseline) before method-side
    checks (``Hypothesis.acts_on``), each by explained share, highest first (None last)."""
    def key(v: Verdict):
        share = v.explained_share if v.explained_share is not None and math.isfinite(v.explained_share) else -math.inf
        side = 1 if v.acts_on == "method" else 0
        return (-(v.max_tokens or 0), side, -share, v.hypothesis)

    return sorted(verdicts, key=key)


def headline(session, verdicts: list[Verdict], thresholds: Thresholds,
             where: dict[int, AnalysisRegion] | None = None) -> str:
    """One sentence a researcher can paste into a paper.

    ``where``: the analysis regions the verdicts used (computed here when not given). Raises KeyError
    when a length's baseline or method run is missing.
    """
    if not verdicts:
        return ""
    lengths = sorted({v.max_tokens for v in verdicts if v.max_tokens}, reverse=True)
    if where is None or any(L not in where for L in lengths):
        where = regions(session, lengths, thresholds, strict=True)
    gaps = {}
    for L in where:
        gap = [g[where[L].start:] for g in _gaps(session, L)]
        if sum(g.size for g in gap):
            gaps[L] = gap_stats(gap, thresholds)
    lengths = [L for L in lengths if L in gaps]
    if not lengths:
        return ("No finite baseline and method tokens are left in the analysed region (non-finite NLL); "
                + "; ".join(f"{v.hypothesis} {v.status}" for v in rank(verdicts)) + ".")
    anomalous = [L for L in lengths if gaps[L]["anomaly"]]
    L = anomalous[0] if anomalous else lengths[0]
    g = gaps[L]
    at_L = [v for v in rank(verdicts) if v.max_tokens == L]
    parts = []
    for v in at_L:
        if v.explained_share is not None and math.isfinite(v.explained_share):
            parts.append(f"{v.hypothesis} {v.status} ({v.explained_share:.2f} [{v.ci_low:.2f}, {v.ci_high:.2f}])")
        else:
            parts.append(f"{v.hypothesis} {v.status}")
    method = session.method.label()
    region = where[L]
    on = "" if region.basis == "all" else f" on {region.text()}"
    if not g["anomaly"]:
        return (f"At {L} tokens{on} {method} does not beat the full cache beyond noise (gap {g['mean']:+.3f} "
                f"nats/token, 95% CI {g['ci_low']:+.3f}..{g['ci_high']:+.3f}); " + _listing(parts, at_L) + ".")
    top = next((v for v in at_L if v.status == "supported" and v.acts_on == "baseline"), None)
    lead = (f"At {L} tokens{on} {method} beats the full cache by {g['mean']:.3f} nats/token (95% CI {g['ci_low']:.3f}.."
            f"{g['ci_high']:.3f}); ")
    if top is None:
        return lead + "no tested cause explains it: " + _listing(parts, at_L) + "."
    keep = [i for i, v in enumerate(at_L) if v is not top]
    return (lead + f"the gap is explained by {ALL[top.hypothesis].title} (share {top.explained_share:.2f}, "
            f"95% CI {top.ci_low:.2f}..{top.ci_high:.2f}); " + _listing([parts[i] for i in keep], [at_L[i] for i in keep]) + ".")


def _listing(parts: list[str], verdicts: list[Verdict]) -> str:
    """Causes joined by "; ", then the method-side checks after "method-side checks: "."""
    side = [v.acts_on for v in verdicts]
    causes = [p for p, s in zip(parts, side) if s != "method"]
    checks = [p for p, s in zip(parts, side) if s == "method"]
    out = "; ".join(causes)
    if checks:
        out += ("; " if out else "") + "method-side checks: " + ", ".join(checks)
    return out
