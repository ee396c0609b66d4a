"""Gap against length, one line per model (or context override): against tokens and against tokens /
trained context, each over all scored tokens, in each cell's headline region and over the tokens past the trained
context (the last two with CI bars)."""

from __future__ import annotations

from anomaly_probe.reports.sweep.cells import CellStats
from anomaly_probe.reports.tree import Figure

GAP_YLABEL = "NLL gap, baseline - method (nats/token)"


PANELS = (  # (CellStats attribute, panel title, what the caption says of it)
    ("gap", "over all scored tokens", "every scored token"),
    ("gap_headline", "in each cell's headline region (its run's analysis region)",
     "each cell's headline region, the tokens its own run's headline used (results.json analysis_regions: from "
     "the gap's changepoint, past the trained context, or all tokens; all tokens where a cell records none), "
     "with CI bars"),
    ("gap_past", "on the positions past the trained context",
     "only the positions past the model's trained context, with CI bars"))


def _series(stats: list[CellStats], x_of, which: str) -> list[dict]:
    lines: dict[str, list[CellStats]] = {}
    for s in stats:
        iv = getattr(s, which)
        if iv is not None and iv[0] is not None and x_of(s) is not None:
            lines.setdefault(s.cell.line, []).append(s)
    out = []
    for line, pts in lines.items():
        pts = sorted(pts, key=x_of)
        ivs = [getattr(p, which) for p in pts]
        out.append({"name": line, "x": [x_of(p) for p in pts], "y": [iv[0] for iv in ivs],
                    "ci_low": [iv[1] for iv in ivs], "ci_high": [iv[2] for iv in ivs]})
        if which != "gap":  # regions of different extent, few cells past the context: bars per cell, not a band
            out[-1]["errorbars"] = True
    return out


def gap_figures(stats: list[CellStats], ci: str) -> list[Figure]:
    """Two figures (tokens; tokens / trained context), each with an all-tokens, a headline-region and a
    past-context panel (:data:`PANELS`; a panel without data is left out)."""
    figures = []
    for fid, x_of, xlabel, vline in (
            ("gap-vs-tokens", lambda s: s.max_tokens, "sample length (tokens)", None),
            ("gap-vs-context", lambda s: s.ratio, "sample length / trained context", 1.0)):
        panels, said = [], []
        for which, title, what in PANELS:
            series = _series(stats, x_of, which)
            if not series:
                continue
            said.append(what)
            panel = {"kind": "line", "title": f"gap {title}", "series": series,
                     "hlines": [{"y": 0.0, "label": "no gap"}]}
            if vline is not None:
                panel["vlines"] = [{"x": vline, "label": "length = trained context"}]
            panels.append(panel)
        if not panels:
            continue
        title = "NLL gap against " + ("sample length" if vline is None else "sample length / trained context")
        spec = {"kind": "panels", "ncols": len(panels), "title": title, "panels": panels,
                "xlabel": xlabel, "ylabel": GAP_YLABEL}
        figures.append(Figure(fid, spec, caption=(
            "Mean NLL gap per cell (> 0: the method looks better), one line per model or setting; bands and "
            f"bars: {ci}. " + _placed(said))))
    return figures


def _placed(said: list[str]) -> str:
    """``Left: a. Middle: b. Right: c.`` for the panels drawn, in order."""
    names = {1: ["Panel"], 2: ["Left", "Right"], 3: ["Left", "Middle", "Right"]}[len(said)]
    return " ".join(f"{n}: {w[0].upper() + w[1:]}." for n, w in zip(names, said))
