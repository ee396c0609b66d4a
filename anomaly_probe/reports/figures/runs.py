"""PPL of every run with the judges' block-bootstrap CI, grouped by sample length."""

from __future__ import annotations

import math

import numpy as np

from anomaly_probe.reports import intervals, roles
from anomaly_probe.reports.rundata import RunData
from anomaly_probe.reports.tree import Figure

MAX_GROUPS = 16


def _groups(data: RunData) -> dict[str, dict]:
    """Runs grouped by display name; the engine is named only where one label was scored by several."""
    engines: dict[str, set] = {}
    for run in data.runs:
        engines.setdefault(roles.run_label(run), set()).add(run.get("engine"))
    baseline = {id(r) for r in roles.role_runs(data, "baseline")}
    groups: dict[str, dict] = {}
    for run in data.runs:
        arrays = data.tokens(run)
        if arrays is None or "nll" not in arrays or not isinstance(run.get("max_tokens"), int):
            continue
        label = roles.run_label(run)
        several = len(engines[label]) > 1
        key = f"{label} [{run.get('engine')}]" if several else label
        if not roles.plain(run):
            color_key = str(run.get("intervention"))
        elif several and id(run) not in baseline and run.get("method") == "full":
            color_key = key  # e.g. the stepwise full cache beside the batched baseline
        else:
            color_key = str(run.get("label"))
        group = groups.setdefault(key, {"color_key": color_key, "by_length": {}})
        group["by_length"].setdefault(run["max_tokens"], []).append(np.asarray(arrays["nll"], dtype=float))
    return groups


def ppl_by_run(data: RunData, verdicts: list[dict] | None = None) -> list:
    """PPL of every run per sample length, with the judges' block-bootstrap CIs (points with error bars)."""
    lengths = roles.lengths(data)
    groups = _groups(data)
    if not groups or len(groups) > MAX_GROUPS:
        return []
    th = intervals.run_thresholds(data)
    series = []
    for key, group in groups.items():
        y, lo, hi = [], [], []
        for L in lengths:
            mean, low, high = intervals.mean_with_ci(group["by_length"].get(L) or [], th)
            y.append(_exp(mean))
            lo.append(_exp(low))
            hi.append(_exp(high))
        series.append({"name": key, "y": y, "ci_low": lo, "ci_high": hi, "color_key": group["color_key"]})
    finite = [v for s in series for v in s["y"] if v]
    spec = {"kind": "bar", "style": "dots", "title": "Perplexity per run and sample length",
            "xlabel": "sample length", "ylabel": "PPL = exp(mean NLL)",
            "categories": [f"{L} tokens" for L in lengths], "series": series,
            "log_y": bool(finite) and max(finite) / max(min(finite), 1e-12) > 20}
    caption = ("Perplexity over all scored tokens of all samples of each run, up to a sample's first non-finite NLL "
               "(points, not bars: the axis need not start at zero). Error bars: exp of the mean NLL's "
               f"{intervals.ci_text(th)}.")
    return [Figure("ppl-by-run", spec, caption)]


def _exp(x: float | None) -> float | None:
    return math.exp(min(x, 700.0)) if x is not None and math.isfinite(x) else None
