"""Attention entropy heatmap (layer x step) and largest / smallest logit over steps."""

from __future__ import annotations

import numpy as np

from anomaly_probe.reports import binning
from anomaly_probe.reports.figures.common import (ROLE_NAMES, roles_with_traces, stack_layers, trace_layers,
                                                  trained_context_vline)
from anomaly_probe.reports.figures.traces import metric, step_series
from anomaly_probe.reports.rundata import RunData
from anomaly_probe.reports.tree import Figure

STEP_XLABEL = "query step t (tokens)"


def entropy_heatmap(data: RunData, verdicts: list[dict] | None = None) -> list:
    """Attention entropy (nats, mean over heads), layer x binned step, one panel per traced role."""
    panels = []
    for role, per_length in roles_with_traces(data).items():
        L = max(per_length)
        traces = [t for t in per_length[L] if trace_layers(t, "entropy")]
        if not traces:
            continue
        layers = trace_layers(traces[0], "entropy")
        steps = np.concatenate([np.asarray(t["step"], dtype=np.float64) for t in traces])
        edges = binning.edges_for(steps.min(), steps.max())
        rows = []
        for i, _ in enumerate(layers):
            values = np.concatenate([stack_layers(t, "entropy")[i].mean(axis=1) for t in traces])  # (S,)
            rows.append(binning.binned(steps, values, edges)["y"])
        panels.append({"kind": "heatmap", "title": f"{ROLE_NAMES.get(role, role)}, {L}-token samples "
                       f"(n = {len(traces)})", "x_edges": edges.tolist(), "y": layers,
                       "z": [binning.finite_list(r) for r in rows], "vlines": trained_context_vline(data, L)})
    if not panels:
        return []
    finite = [v for p in panels for row in p["z"] for v in row if v is not None]
    for p in panels:
        p["vmin"], p["vmax"] = min(finite), max(finite)
    spec = {"kind": "panels", "title": "Attention entropy by layer and step", "xlabel": STEP_XLABEL,
            "ylabel": "layer", "zlabel": "entropy (nats), mean over heads", "panels": panels}
    caption = ("Attention entropy in nats, averaged over heads and over the steps in each bin and over samples; "
               "one panel per run at its longest sample length, one colour scale for all panels. Compression caps "
               "the keys, so it caps the entropy at log(cache size).")
    return [Figure("entropy-heatmap", spec, caption)]


def sink_mass(data: RunData, verdicts: list[dict] | None = None) -> list:
    """Attention mass on the sink tokens, and on the most recent window, over positions, per role."""
    sinks, x_max = step_series(data, metric("sink_mass", "mean", "mean"))
    recent, _ = step_series(data, metric("recent_mass", "mean", "mean"))
    if not sinks and not recent:
        return []
    vl = trained_context_vline(data, x_max)
    panels = [p for p in (
        {"kind": "line", "title": "mass on the sink tokens", "series": sinks, "vlines": vl,
         "ylabel": "attention mass (mean over layers, heads)"},
        {"kind": "line", "title": "mass on the most recent window", "series": recent, "vlines": vl,
         "ylabel": "attention mass (mean over layers, heads)"},
    ) if p["series"]]
    spec = {"kind": "panels", "title": "Attention mass on sinks and recent tokens over positions",
            "xlabel": STEP_XLABEL, "panels": panels, "ncols": 2}
    caption = ("Share of each query's attention on the method's sink tokens (the first sink-size tokens of the "
               "sample, in every run: the full cache keeps them too) and on its most recent window (the method's "
               "recent size, the query itself included), averaged over layers, heads, the queries in each bin "
               "and samples. What the full cache puts outside both is what a sinks + recent cache evicts.")
    return [Figure("sink-mass", spec, caption)]


def logit_range(data: RunData, verdicts: list[dict] | None = None) -> list:
    """Largest and smallest finite attention logit over steps, per role and sample length."""
    top, x_max = step_series(data, metric("logit_max", "max", "max"), reduce="max")
    bottom, _ = step_series(data, metric("logit_min", "min", "min"), reduce="min")
    if not top and not bottom:
        return []
    panels = [p for p in (
        {"kind": "line", "title": "largest finite logit (max over layers and heads)", "series": top,
         "ylabel": "logit (scaled score)", "vlines": trained_context_vline(data, x_max)},
        {"kind": "line", "title": "smallest finite logit (min over layers and heads)", "series": bottom,
         "ylabel": "logit (scaled score)", "vlines": trained_context_vline(data, x_max)},
    ) if p["series"]]
    spec = {"kind": "panels", "title": "Attention logit range over steps", "xlabel": STEP_XLABEL, "panels": panels}
    caption = ("Largest and smallest finite scaled attention logit per step (max / min over layers, heads and "
               "the steps in each bin, pooled over samples). fp16 overflows beyond |65504|; a wide range "
               "pushes small softmax weights towards underflow.")
    return [Figure("logit-range", spec, caption)]
