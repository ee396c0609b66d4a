"""The "bigger model, longer sequence" claim tested on two gaps per cell: the cell's headline region and
all scored tokens (the collapse test and the regressions of :mod:`.trend`), as report blocks.

The headline uses the headline-region gap: it is the gap each cell's own run stated (its verdicts and
headline were computed there), and a break confined to the last positions of the longest samples is
diluted in the all-token mean by the thousands of tokens before it. The all-token fit is shown beside it
because the regions differ in extent between cells and a changepoint region is placed by the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from anomaly_probe.reports.fmt import num
from anomaly_probe.reports.sweep.cells import CellStats
from anomaly_probe.reports.sweep.trend import Collapse, Point, Regression, collapse, regress
from anomaly_probe.reports.tree import Cell, Section, Table, Text

RATIO = "length / trained context"
SIZE = "log10(parameters)"
TOKENS = "length (thousand tokens)"
HEADLINE_GAP = "gap_headline"
GAPS = {  # CellStats attribute -> what the gap is, for sentences and tables (the headline's first)
    HEADLINE_GAP: "the gap in each cell's headline region",
    "gap": "the gap over all scored tokens",
}
WHY = ("The headline uses the gap in each cell's headline region: it is the gap that cell's own run stated (its "
       "verdicts and headline were computed on those tokens), while the all-token mean dilutes a break confined to "
       "the last positions of the longest samples by the thousands of tokens before it. The all-token fit is shown "
       "too, because the regions differ in extent between cells and a changepoint region is placed by the data "
       "(its gap's CI leans optimistic).")


@dataclass
class Fit:
    """Both tests of the claim on one kind of gap (``which``: a :data:`GAPS` key)."""

    which: str
    points: list[Point]
    trend: Collapse | None = None
    claim: Regression | None = None  # gap ~ length / trained context + model size
    stated: Regression | None = None  # gap ~ length in tokens + model size (the claim as stated)


def trend_points(stats: list[CellStats], which: str = "gap") -> list[Point]:
    """One point per cell with a trained context and a finite gap (``which``: a :data:`GAPS` key)."""
    out = []
    for s in stats:
        iv = getattr(s, which)
        if s.trained_context and iv[0] is not None and math.isfinite(iv[0]):
            out.append(Point(s.cell.line, s.max_tokens, s.trained_context, s.parameters, iv[0], iv[1], iv[2]))
    return out


def fit(stats: list[CellStats], which: str) -> Fit:
    points = trend_points(stats, which)
    out = Fit(which, points)
    if not points:
        return out
    out.trend = collapse(points)
    if _sized(points):
        size = [math.log10(p.parameters) for p in points]
        out.claim = regress(points, {RATIO: [p.ratio for p in points], SIZE: size})
        out.stated = regress(points, {TOKENS: [p.tokens / 1000 for p in points], SIZE: size})
    return out


def _sized(points: list[Point]) -> bool:
    return len(points) >= 2 and all(isinstance(p.parameters, int) and p.parameters > 0 for p in points)


def headline_sentence(f: Fit) -> str:
    """The collapse test and the claim's regression on the headline's gap."""
    if f.trend is None:
        return "No cell has a finished baseline vs method comparison yet."
    text = f.trend.sentence
    if f.claim is not None and f.claim.sentence:
        text += (f" Regression of {GAPS[f.which]} on length / trained context and model size: "
                 + f.claim.sentence)
    return text


def claim_section(fits: list[Fit]) -> Section:
    """The regressions of every gap in one table, each fit's reading, and which one the headline uses."""
    test = Section("A test of the claim: regression of the gap", id="regression")
    fitted = [f for f in fits if f.claim is not None]
    if not fitted:
        test.add(Text("Not enough cells with a known model size and gap for a regression.", "note"))
        return test
    test.add(regression_table(fitted))
    for f in fitted:
        test.add(Text(f"{_cap(GAPS[f.which])} on length / trained context and model size: {f.claim.sentence} "
                      f"The claim as stated (on length in tokens and model size): {f.stated.sentence}"))
    test.add(Text(WHY))
    if len({p.context for p in fitted[0].points}) == 1:
        test.add(Text("Every cell has the same trained context, so length / trained context is the length in "
                      "other units: this grid cannot tell the two apart.", "note"))
    return test


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def regression_table(fits: list[Fit]) -> Table:
    rows = []
    for f in fits:
        for model, reg in ((f"{GAPS[f.which]} ~ length / trained context + model size", f.claim),
                           (f"{GAPS[f.which]} ~ length in tokens + model size (the claim as stated)", f.stated)):
            for c in reg.coefficients:
                est = "n/a" if c.estimate is None else num(c.estimate, "+.4f")
                ci = "n/a" if c.low is None else f"[{c.low:+.4f}, {c.high:+.4f}]"
                reading = c.note or ("excludes 0" if c.excludes_zero else "holds 0")
                rows.append([Cell(model), Cell(c.name), Cell(est, "num"), Cell(ci, "num"), Cell(reading),
                             Cell(f"{reg.n} cells, {reg.df} df, R² {num(reg.r_squared, '.2f')}")])
    return Table("Regression of the per-cell gap", ["model", "predictor", "coefficient (nats/token per unit)",
                                                    "95% CI", "CI", "fit"], rows,
                 caption="Least squares with an intercept over the cells' mean gaps, each cell weighted by 1 / its "
                         "squared standard error (from its bootstrap CI); each coefficient is one predictor's effect "
                         "with the other held fixed. Model size = log10 of the parameter count. First the gap in each "
                         "cell's headline region (the headline's), then the gap over all scored tokens.",
                 ci="95% CI of the coefficient: the cells' own noise, or the residual scatter (t-interval) when "
                    "larger (see docs/HYPOTHESES.md, sweep)")
