"""Eval-bias: per-token NLL of the full cache scored stepwise vs batched, on the same tokens."""

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


def stepwise_vs_batched(data: RunData, verdicts: list[dict] | None = None) -> list:
    """The full cache scored stepwise vs batched on the same tokens: scatter, |dNLL| by position, table."""
    by_length = _pairs(data)
    if not by_length:
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
    spec = {"kind": "panels", "title": "Eval-bias: full cache scored stepwise vs batched", "ncols": 2, "panels": [
        {"kind": "scatter", "title": "per-token NLL", "series": scatter, "diagonal": True,
         "xlabel": "batched NLL (nats/token)", "ylabel": "stepwise NLL (nats/token)"},
        {"kind": "line", "title": "|difference| by position", "series": lines, "log_y": True,
         "xlabel": POSITION_XLABEL, "ylabel": "|\u0394NLL| (nats/token)"},
    ]}
    caption = ("Left: each point is one token scored by both engines (dashed: y = x). Right: mean absolute "
               "difference per bin of positions, log scale. In fp32 the engines should agree to ~1e-4 nats.")
    table = Table("Stepwise minus batched NLL (nats/token)",
                  ["tokens per sample", "samples", "tokens", "mean \u0394NLL", "max |\u0394NLL|"], rows)
    return [Figure("stepwise-vs-batched", spec, caption), table]
