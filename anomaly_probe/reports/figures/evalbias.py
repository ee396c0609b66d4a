"""Eval-bias: per-token NLL of the full cache scored stepwise vs batched, on the same tokens.

The stepwise prefix gives a curve over its positions; the spot windows (one token at a time on a
batched-prefilled cache, at long positions) give one marker each at their positions.
"""

from __future__ import annotations

import numpy as np

from anomaly_probe.reports import binning, roles
from anomaly_probe.reports.colors import linestyle
from anomaly_probe.reports.figures.common import POSITION_XLABEL, curve, paired
from anomaly_probe.reports.fmt import num
from anomaly_probe.reports.rundata import RunData
from anomaly_probe.reports.tree import Cell, Figure, Table

FAST_ENGINES = ("batched", "parallel")
MARKERS = ("o", "s", "^", "D")
MAX_POINTS = 4000  # per length in the scatter; thinned evenly beyond that


def _pairs(data: RunData) -> dict[int, list[tuple[np.ndarray, np.ndarray]]]:
    """``{L: [(fast nll, stepwise nll) per sample]}``."""
    step = roles.by_length_sample(roles.engine_runs(data, "stepwise"))
    fast = roles.by_length_sample([r for e in FAST_ENGINES for r in roles.engine_runs(data, e)])
    out = {}
    for L, per_sample in step.items():
        pairs = []
        for s, run in per_sample.items():
            other = fast.get(L, {}).get(s)
            a, b = (data.tokens(other) if other else None), data.tokens(run)
            if a is not None and b is not None:
                pairs.extend(paired([a["nll"]], [b["nll"]]))
        if pairs:
            out[L] = pairs
    return out


def _windows(data: RunData) -> dict[int, list[dict]]:
    """``{L: [window]}``, a window being ``start``, ``stop`` (entries) and ``diff`` (spot - batched NLL
    of every sample's entries in it, nats)."""
    spot = roles.by_length_sample(roles.engine_runs(data, "spot"))
    fast = roles.by_length_sample([r for e in FAST_ENGINES for r in roles.engine_runs(data, e)])
    out = {}
    for L, per_sample in spot.items():
        diffs: dict[tuple[int, int], list[np.ndarray]] = {}
        for s, run in per_sample.items():
            other = fast.get(L, {}).get(s)
            a, b = (data.tokens(other) if other else None), data.tokens(run)
            windows = run.get("windows")
            if a is None or b is None or not isinstance(windows, list):
                continue
            for w in windows:
                if isinstance(w, list) and len(w) == 2 and all(isinstance(v, int) for v in w):
                    n = min(w[1], a["nll"].size, b["nll"].size)
                    diffs.setdefault((w[0], w[1]), []).append(b["nll"][w[0]:n] - a["nll"][w[0]:n])
        rows = [{"start": lo, "stop": hi, "diff": np.concatenate(d)} for (lo, hi), d in sorted(diffs.items())]
        rows = [r for r in rows if r["diff"].size]
        if rows:
            out[L] = rows
    return out


def _verdict(verdicts: list[dict] | None, L: int) -> dict:
    """The eval-bias verdict's evidence at length ``L`` ({} without)."""
    for v in verdicts or []:
        if v.get("max_tokens") == L and isinstance(v.get("evidence"), dict):
            return v["evidence"]
    return {}


def _region(evidence: dict, start: int) -> str:
    """``inside``/``outside``/``partly`` the analysis region, as the verdict recorded it ("" if not)."""
    entries, where = evidence.get("spot_window_entries"), evidence.get("spot_window_region")
    if isinstance(entries, list) and isinstance(where, list):
        for e, r in zip(entries, where):
            if isinstance(e, list) and e and e[0] == start:
                return str(r)
    return ""


def stepwise_vs_batched(data: RunData, verdicts: list[dict] | None = None) -> list:
    """The full cache scored stepwise vs batched on the same tokens: scatter, |dNLL| by position (the
    prefix as a curve, each spot window as a marker at its positions), tables."""
    by_length = _pairs(data)
    spots = _windows(data)
    if not by_length and not spots:
        return []
    scatter, lines, rows = [], [], []
    for i, (L, pairs) in enumerate(by_length.items()):
        fast = np.concatenate([p[0] for p in pairs])
        step = np.concatenate([p[1] for p in pairs])
        keep = np.linspace(0, fast.size - 1, min(fast.size, MAX_POINTS)).astype(int)
        scatter.append({"name": f"{L}-token samples", "x": binning.finite_list(fast[keep]),
                        "y": binning.finite_list(step[keep]), "color_key": "baseline",
                        "marker": MARKERS[i % len(MARKERS)]})
        c = curve([np.abs(b - a) for a, b in pairs], binning.edges_for(0, L - 2))
        lines.append({"name": f"{L}-token samples", "x": binning.finite_list(c["x"]), "y": binning.finite_list(c["y"]),
                      "color_key": "baseline", "linestyle": linestyle(i)})
        d = step - fast
        rows.append([Cell(str(L), "num"), Cell(str(len(pairs)), "num"), Cell(str(d.size), "num"),
                     Cell(num(float(np.nanmean(d)), "+.2e"), "num"),
                     Cell(num(float(np.nanmax(np.abs(d))), ".2e"), "num")])
    window_rows, tolerances = [], set()
    for L, windows in spots.items():
        evidence = _verdict(verdicts, L)
        if isinstance(evidence.get("tolerance_nats"), (int, float)):
            tolerances.add(float(evidence["tolerance_nats"]))
        for w in windows:
            step = w["diff"]
            window_rows.append([Cell(str(L), "num"), Cell(f"{w['start'] + 1}-{w['stop']}", "num"),
                                Cell(_region(evidence, w["start"]) or "n/a"), Cell(str(step.size), "num"),
                                Cell(num(float(np.nanmean(step)), "+.2e"), "num"),
                                Cell(num(float(np.nanmean(np.abs(step))), ".2e"), "num"),
                                Cell(num(float(np.nanmax(np.abs(step))), ".2e"), "num")])
        lines.append({"name": f"{L}-token samples: spot windows (mean per window)",
                      "x": [(w["start"] + w["stop"] - 1) / 2 for w in windows],
                      "y": binning.finite_list(np.array([np.nanmean(np.abs(w["diff"])) for w in windows])),
                      "color_key": "baseline", "linestyle": "none"})
    right = {"kind": "line", "title": "|difference| by position", "series": lines, "log_y": True,
             "xlabel": POSITION_XLABEL, "ylabel": "|\u0394NLL| (nats/token)"}
    if len(tolerances) == 1:
        tol = tolerances.pop()
        right["hlines"] = [{"y": tol, "label": f"tolerance ({tol:.0e} nats/token)"}]
    panels = ([{"kind": "scatter", "title": "per-token NLL", "series": scatter, "diagonal": True,
                "xlabel": "batched NLL (nats/token)", "ylabel": "stepwise NLL (nats/token)"}] if scatter else [])
    spec = {"kind": "panels", "title": "Eval-bias: full cache scored stepwise vs batched", "ncols": 2,
            "panels": panels + [right]}
    caption = ("Left: each point is one token of the stepwise prefix scored by both engines (dashed: y = x). "
               "Right: mean absolute difference per bin of positions over the prefix (line), and per spot "
               "window (markers: a batched prefill up to the window, then one token at a time), log scale. "
               "In fp32 the engines should agree to ~1e-4 nats.")
    out = [Figure("stepwise-vs-batched", spec, caption)]
    if rows:
        out.append(Table("Stepwise minus batched NLL (nats/token)",
                         ["tokens per sample", "samples", "tokens", "mean \u0394NLL", "max |\u0394NLL|"], rows))
    if window_rows:
        out.append(Table("Spot windows: stepwise minus batched NLL (nats/token)",
                         ["tokens per sample", "positions", "analysis region", "tokens", "mean \u0394NLL",
                          "mean |\u0394NLL|", "max |\u0394NLL|"], window_rows,
                         caption="Each window is scored one token at a time on a cache prefilled by batched "
                                 "forwards; tokens summed over samples."))
    return out
