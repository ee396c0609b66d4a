"""Numerics: softmax underflow (count and lost mass) and the precision comparison (attn-fp32 vs attn-fp16 ...)."""

from __future__ import annotations

import numpy as np

from anomaly_probe.reports import binning, roles
from anomaly_probe.reports.figures.common import POSITION_XLABEL, curve, paired, trained_context_vline
from anomaly_probe.reports.figures.traces import metric, step_series
from anomaly_probe.reports.fmt import num
from anomaly_probe.reports.rundata import RunData
from anomaly_probe.reports.tree import Cell, Figure, Table

STEP_XLABEL = "query step t (tokens)"
REFERENCES = ("attn-fp64", "attn-fp32")


def underflow(data: RunData, verdicts: list[dict] | None = None) -> list:
    """fp16 / bf16 softmax underflow per step: weights lost (count) and the mass they carried."""
    panels = []
    for fmt in ("fp16", "bf16"):
        count, x_max = step_series(data, metric(f"{fmt}_underflow_count", "sum", "sum"))
        mass, _ = step_series(data, metric(f"{fmt}_underflow_mass", "max", "max"), reduce="max")
        vl = trained_context_vline(data, x_max)
        if count:
            panels.append({"kind": "line", "title": f"{fmt}: weights lost per step", "series": count, "vlines": vl,
                           "ylabel": "weights (count, sum over layers, heads)"})
        if mass:
            panels.append({"kind": "line", "title": f"{fmt}: largest lost mass per step", "series": mass,
                           "vlines": vl, "ylabel": "probability mass (max over layers, heads)", "log_y": True})
    if not panels:
        return []
    spec = {"kind": "panels", "title": "Softmax underflow: weights > 0 in fp32 that are 0 in fp16 / bf16",
            "xlabel": STEP_XLABEL, "panels": panels, "ncols": 2}
    caption = ("Left: how many attention weights per step round to zero in half precision (mean over the steps in "
               "a bin, summed over layers and heads). Right: the fp32 probability mass those weights carried, the "
               "largest of any layer and head in the bin (log scale). Underflow of weights carrying ~1e-8 of the "
               "mass is harmless; only the mass says whether it matters.")
    return [Figure("underflow", spec, caption)]


def underflow_by_cache_length(data: RunData, verdicts: list[dict] | None = None) -> list:
    """fp16 underflow and the mass it loses against the cache length (keys each query attended to)."""
    count, _ = step_series(data, metric("fp16_underflow_count", "sum", "sum"), x_column="n_keys")
    mass, _ = step_series(data, metric("fp16_underflow_mass", "sum", "sum"), x_column="n_keys")
    if not count and not mass:
        return []
    panels = [p for p in (
        {"kind": "line", "title": "fp16: weights lost per query", "series": count,
         "ylabel": "weights (count, sum over layers, heads)"},
        {"kind": "line", "title": "fp16: probability mass lost per query", "series": mass,
         "ylabel": "probability mass (sum over layers, heads)", "log_y": True},
    ) if p["series"]]
    spec = {"kind": "panels", "title": "Softmax underflow against cache length",
            "xlabel": "cache length (keys the query attends to)", "panels": panels, "ncols": 2}
    caption = ("fp16 softmax underflow by the number of keys each query attended to, so the full cache and the "
               "compressed one are compared at equal cache length (the method's queries all sit at its capacity). "
               "Left: weights that are > 0 in fp32 but round to 0 in fp16; right: the fp32 probability mass they "
               "carried; both summed over layers and heads and averaged over the queries in each bin and over "
               "samples.")
    return [Figure("underflow-by-cache-length", spec, caption)]


def _reference(data: RunData) -> tuple[str, list[dict]]:
    precision = roles.precision_runs(data)
    for name in REFERENCES:
        if name in precision:
            return name, precision[name]
    return "baseline", roles.role_runs(data, "baseline")


def precision_comparison(data: RunData, verdicts: list[dict] | None = None) -> list:
    """Per-token NLL of each precision run minus the reference (attn-fp64, attn-fp32 or the baseline)."""
    ref_name, ref_runs = _reference(data)
    ref = roles.by_length_sample(ref_runs)
    others = {k: v for k, v in roles.precision_runs(data).items() if k != ref_name}
    if not others or not ref:
        return []
    panels, rows = [], []
    for L, ref_samples in ref.items():
        series, edges = [], binning.edges_for(0, L - 2)
        for name, runs in others.items():
            diffs = []
            for s, run in roles.by_length_sample(runs).get(L, {}).items():
                a = data.tokens(run)
                b = data.tokens(ref_samples[s]) if s in ref_samples else None
                if a is not None and b is not None:
                    diffs.extend(x - y for x, y in paired([a["nll"]], [b["nll"]]))
            if not diffs:
                continue
            c = curve(diffs, edges)
            series.append({"name": name, "y": binning.finite_list(c["y"]), "color_key": name})
            flat = np.concatenate(diffs)
            rows.append([Cell(name), Cell(str(L), "num"), Cell(str(len(diffs)), "num"), Cell(str(flat.size), "num"),
                         Cell(num(float(np.nanmean(flat)), "+.2e"), "num"),
                         Cell(num(float(np.nanmax(np.abs(flat))), ".2e"), "num")])
        if series:
            centres = binning.finite_list((edges[:-1] + edges[1:]) / 2)
            panels.append({"kind": "line", "title": f"{L}-token samples", "x": centres, "series": series,
                           "hlines": [{"y": 0.0, "label": f"same as {ref_name}"}],
                           "vlines": trained_context_vline(data, L)})
    if not panels:
        return []
    spec = {"kind": "panels", "title": f"Precision: NLL difference to {ref_name}, by position",
            "xlabel": POSITION_XLABEL, "ylabel": "\u0394NLL (nats/token)", "panels": panels}
    caption = (f"Per-token NLL of each precision run minus the {ref_name} run on the same tokens, mean per bin of "
               "positions, pooled over samples. Where the lines stay at zero within the dtype's tolerance, "
               "precision does not change the scores.")
    table = Table(f"Precision runs against {ref_name} (nats/token)",
                  ["intervention", "tokens per sample", "samples", "tokens", "mean \u0394NLL", "max |\u0394NLL|"],
                  rows)
    return [Figure("precision", spec, caption), table]
