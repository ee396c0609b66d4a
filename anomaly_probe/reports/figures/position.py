"""NLL and PPL by position (baseline, method, recompute oracle) and the gap curve with its changepoint."""

from __future__ import annotations

import math

import numpy as np

from anomaly_probe.reports import binning, roles
from anomaly_probe.reports.colors import linestyle
from anomaly_probe.reports.figures.common import (POSITION_XLABEL, band, curve, paired, role_label, role_tokens,
                                                  trained_context_vline)
from anomaly_probe.reports.rundata import RunData
from anomaly_probe.reports.tree import Figure

BAND_NOTE = ("Shaded: \u00b11.96 standard errors of the tokens in each bin; neighbouring tokens are correlated, "
             "so the band understates the uncertainty (the verdicts use a block bootstrap).")


def _per_length(data: RunData) -> dict[int, dict[str, list[np.ndarray]]]:
    out: dict[int, dict[str, list[np.ndarray]]] = {}
    for role in roles.ROLES:
        for L, samples in role_tokens(data, role).items():
            out.setdefault(L, {})[role] = samples
    return dict(sorted(out.items()))


def _position_panels(data: RunData, transform: str) -> list[dict]:
    panels = []
    for L, by_role in _per_length(data).items():
        edges = binning.edges_for(0, L - 2)
        series = []
        for role, samples in by_role.items():
            c = curve(samples, edges)
            lo, hi = band(c)
            y = binning.finite_list(c["y"])
            if transform == "ppl":
                y, lo, hi = (_exp(v) for v in (y, lo, hi))
            series.append({"name": role_label(data, role), "y": y, "ci_low": lo, "ci_high": hi, "color_key": role,
                           # the oracle equals the baseline inside the trained context: dashed, on top
                           "linestyle": "--" if role == "oracle" else "-"})
        n = max(len(s) for s in by_role.values())
        panels.append({"kind": "line", "title": f"{L}-token samples (n = {n} per run)",
                       "x": binning.finite_list(c["x"]), "series": series,
                       "vlines": trained_context_vline(data, L), "log_y": transform == "ppl",
                       "spans": [r for r in region_spans(data) if r["x1"] == L - 1]})
    return panels


def _exp(values: list) -> list:
    return [math.exp(min(v, 700.0)) if v is not None else None for v in values]


def _caption(data: RunData, what: str) -> str:
    tc = data.trained_context
    tc_text = f"Dashed line: the model's trained context ({tc} tokens)." if tc else "Trained context unknown."
    return (f"{what} by query position, mean over bins of positions and over samples; one panel per sample "
            f"length, one line per run (baseline, method under test, and the recompute oracle where it was run). "
            f"{tc_text} {BAND_NOTE}")


def nll_by_position(data: RunData, verdicts: list[dict] | None = None) -> list:
    """Per-token NLL (nats) by position, binned: one panel per sample length, a line per role."""
    panels = _position_panels(data, "nll")
    if not panels:
        return []
    spec = {"kind": "panels", "title": "NLL by position", "xlabel": POSITION_XLABEL,
            "ylabel": "NLL (nats/token)", "panels": panels, "sharex": False}
    return [Figure("nll-by-position", spec, _caption(data, "Per-token NLL (nats)"))]


def ppl_by_position(data: RunData, verdicts: list[dict] | None = None) -> list:
    """Perplexity by position (exp of the binned mean NLL, log scale), one panel per sample length."""
    panels = _position_panels(data, "ppl")
    if not panels:
        return []
    spec = {"kind": "panels", "title": "Perplexity by position", "xlabel": POSITION_XLABEL,
            "ylabel": "PPL = exp(mean NLL) (log scale)", "panels": panels, "sharex": False}
    return [Figure("ppl-by-position", spec, _caption(data, "Perplexity, exp of the binned mean NLL,"))]


def gap_curve(data: RunData, verdicts: list[dict] | None = None) -> list:
    """Baseline minus method NLL by position, a line per sample length, with the changepoint(s)."""
    by_length = _per_length(data)
    series, x_max = [], 0
    for i, (L, by_role) in enumerate(by_length.items()):
        if "baseline" not in by_role or "method" not in by_role:
            continue
        pairs = paired(by_role["baseline"], by_role["method"])
        edges = binning.edges_for(0, L - 2)
        c = curve([b - m for b, m in pairs], edges)
        lo, hi = band(c)
        series.append({"name": f"{L}-token samples (n = {len(pairs)})", "x": binning.finite_list(c["x"]),
                       "y": binning.finite_list(c["y"]), "ci_low": lo, "ci_high": hi, "color_key": "gap",
                       "linestyle": linestyle(i)})
        x_max = max(x_max, L)
    if not series:
        return []
    vlines = trained_context_vline(data, x_max) + changepoints(verdicts)
    spec = {"kind": "line", "title": "Gap: baseline NLL minus method NLL, by position",
            "xlabel": POSITION_XLABEL, "ylabel": "NLL gap (nats/token)", "series": series,
            "vlines": vlines, "hlines": [{"y": 0.0, "label": "no gap"}], "spans": region_spans(data)}
    caption = ("Per-token NLL of the baseline minus the method's, on the same tokens; above zero the method "
               "looks better. One line per sample length. " + BAND_NOTE)
    if any("changepoint" in v["label"] for v in vlines):
        caption += " The changepoint is the position verdict's, found from the data."
    return [Figure("gap-by-position", spec, caption)]


def region_spans(data: RunData) -> list[dict]:
    """Shaded analysis regions (``results.json`` ``analysis_regions``) that do not cover every token."""
    out = []
    for r in data.listing("analysis_regions"):
        first, L = r.get("first_position"), r.get("max_tokens")
        if isinstance(first, int) and isinstance(L, int) and first > 1:
            out.append({"x0": first, "x1": L - 1, "label": f"analysis region ({L} tokens: {first}-{L - 1})"})
    return out


def changepoints(verdicts: list[dict] | None) -> list[dict]:
    """Changepoint vlines from the position verdicts' evidence (one verdict per sample length).

    Accepts ``evidence["changepoint"]`` (or ``changepoint_position``) as a number, a dict with
    ``position`` / ``x`` (and optional ``ci_low``, ``ci_high``), or a dict keyed by sample length.
    """
    out = []
    for verdict in verdicts or []:
        ev = verdict.get("evidence") if isinstance(verdict, dict) else None
        if not isinstance(ev, dict):
            continue
        length = verdict.get("max_tokens")
        where = f", {length}-token samples" if isinstance(length, int) and len(verdicts) > 1 else ""
        out += _changepoint(ev.get("changepoint", ev.get("changepoint_position")), where)
    return out


def _changepoint(value, where: str) -> list[dict]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [{"x": float(value), "label": f"changepoint ({value:g} tokens{where})"}]
    if not isinstance(value, dict):
        return []
    pos = value.get("position", value.get("x"))
    if isinstance(pos, (int, float)) and not isinstance(pos, bool):
        label = f"changepoint ({pos:g} tokens"
        if isinstance(value.get("ci_low"), (int, float)) and isinstance(value.get("ci_high"), (int, float)):
            label += f", 95% CI {value['ci_low']:g}-{value['ci_high']:g}"
        return [{"x": float(pos), "label": label + where + ")"}]
    return [{"x": float(p), "label": f"changepoint, {length}-token samples ({p:g})"}
            for length, p in value.items() if isinstance(p, (int, float)) and not isinstance(p, bool)]
