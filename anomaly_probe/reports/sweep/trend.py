"""Does the gap follow length, model size, or length / trained context? Pure functions of per-cell gaps.

Two tests of the "bigger model, longer sequence" pattern:

* **collapse**: the gap curves of different lines (models, context overrides) drawn against tokens and
  against tokens / trained context. Their spread is the mean |difference| between two lines where their x
  ranges overlap (linear interpolation in log x), averaged over pairs of lines. If the spread against
  tokens / trained context is less than half the spread against tokens and within the cells' noise
  (the median CI half-width), the curves collapse: the pattern is the trained context in disguise.
* **regression**: least squares of the per-cell gap on length / trained context and on
  log10(parameters), each cell weighted by 1 / its squared standard error (from its bootstrap CI; plain
  OLS when a cell has none). The coefficients' CIs use the cells' own noise (normal quantile) while the
  cells scatter within it (reduced chi-square <= 1); otherwise the residual variance (t quantile, n - p
  degrees of freedom), so a few noisy cells never give a falsely narrow interval. Each coefficient is the
  effect of one variable with the other held fixed, so the one whose CI excludes 0 carries the effect. A
  variable that does not vary, or that moves with the other (|r| > 0.95), cannot be separated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

COLLAPSE_RATIO = 0.5  # the normalised spread must be below half the raw spread ...
COLLINEAR_R = 0.95  # ... and two predictors this correlated cannot be told apart


@dataclass(frozen=True)
class Point:
    """One cell on the trend plots: its line, length (tokens), trained context, size and gap (nats/token)."""

    line: str
    tokens: int
    context: int
    parameters: int | None
    gap: float
    low: float | None = None
    high: float | None = None

    @property
    def ratio(self) -> float:
        return self.tokens / self.context


@dataclass
class Collapse:
    """Spreads between the lines on both x axes and what they mean (``sentence``)."""

    raw: float | None
    normalised: float | None
    noise: float | None
    verdict: str  # collapse | partial | no-collapse | coincide | untestable
    sentence: str


def _spread(points: list[Point], x_of) -> float | None:
    lines: dict[str, list[Point]] = {}
    for p in points:
        lines.setdefault(p.line, []).append(p)
    curves = []
    for pts in lines.values():
        pts = sorted(pts, key=x_of)
        x = np.log([x_of(p) for p in pts])
        curves.append((x, np.array([p.gap for p in pts])))
    diffs = []
    for i in range(len(curves)):
        for j in range(i + 1, len(curves)):
            (xa, ya), (xb, yb) = curves[i], curves[j]
            lo, hi = max(xa.min(), xb.min()), min(xa.max(), xb.max())
            if lo > hi + 1e-12:
                continue
            at = np.unique(np.concatenate([xa, xb]))
            at = at[(at >= lo - 1e-12) & (at <= hi + 1e-12)]
            diffs.append(float(np.mean(np.abs(np.interp(at, xa, ya) - np.interp(at, xb, yb)))))
    return float(np.mean(diffs)) if diffs else None


def collapse(points: list[Point]) -> Collapse:
    """Whether the lines' gap curves collapse onto one against tokens / trained context (module docstring)."""
    lines = {p.line for p in points}
    contexts = {p.context for p in points}
    halves = [(p.high - p.low) / 2 for p in points if p.low is not None and p.high is not None]
    noise = float(np.median(halves)) if halves else None
    if len(lines) < 2:
        return Collapse(None, None, noise, "untestable",
                        "One line only: the collapse test needs at least two models or trained contexts.")
    raw, norm = _spread(points, lambda p: p.tokens), _spread(points, lambda p: p.ratio)
    if len(contexts) == 1:
        return Collapse(raw, norm, noise, "untestable",
                        f"Every line has the same trained context ({contexts.pop()} tokens): the two plots differ "
                        "only in scale, so they cannot tell length from length / trained context; add models or "
                        "--trained-context overrides with other contexts.")
    if raw is None or norm is None:
        axis = " and ".join(a for a, v in (("tokens", raw), ("tokens / trained context", norm)) if v is None)
        return Collapse(raw, norm, noise, "untestable",
                        f"The lines do not overlap against {axis}, so their curves cannot be compared there; add "
                        "lengths so that the lines overlap in tokens and in tokens / trained context.")
    noise_text = "n/a" if noise is None else f"{noise:.3f}"
    spreads = (f"mean spread between lines {raw:.3f} nats/token against tokens, {norm:.3f} against tokens / "
               f"trained context; typical CI half-width {noise_text}")
    if noise is not None and raw <= noise:
        return Collapse(raw, norm, noise, "coincide",
                        f"The lines already coincide against tokens ({spreads}): neither model nor trained context "
                        "changes the gap beyond noise.")
    if norm < COLLAPSE_RATIO * raw and (noise is None or norm <= noise):
        return Collapse(raw, norm, noise, "collapse",
                        f"The curves collapse onto one against tokens / trained context ({spreads}): the "
                        "\"bigger model, longer sequence\" pattern is the trained context in disguise.")
    if norm < COLLAPSE_RATIO * raw:
        return Collapse(raw, norm, noise, "partial",
                        f"Dividing by the trained context brings the curves closer but not within noise ({spreads}): "
                        "the trained context explains part of the pattern.")
    return Collapse(raw, norm, noise, "no-collapse",
                    f"The curves do not collapse against tokens / trained context ({spreads}): the trained context "
                    "does not explain the differences between the lines.")


@dataclass
class Coefficient:
    name: str
    estimate: float | None
    low: float | None = None
    high: float | None = None
    note: str = ""

    @property
    def excludes_zero(self) -> bool:
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)


@dataclass
class Regression:
    """OLS of the gap on the named predictors: coefficients with CIs and the sentence that reads them."""

    predictors: list[str]
    coefficients: list[Coefficient] = field(default_factory=list)
    n: int = 0
    df: int = 0
    r_squared: float | None = None
    correlation: float | None = None
    sentence: str = ""
    weighted: bool = False  # weighted by the cells' own CIs (else plain OLS)


def _standard_errors(points: list[Point]) -> np.ndarray | None:
    """Each cell's standard error from its 95% CI (width / 3.92); None unless every cell has a positive one."""
    if any(p.low is None or p.high is None for p in points):
        return None
    se = np.array([(p.high - p.low) / 3.92 for p in points], dtype=np.float64)
    return se if bool(np.all(se > 0)) else None


def regress(points: list[Point], predictors: dict[str, list[float]], level: float = 0.95) -> Regression:
    """Regress the points' gaps on ``predictors`` (name -> one value per point) plus an intercept."""
    from scipy import stats

    y = np.array([p.gap for p in points], dtype=np.float64)
    reg = Regression(list(predictors), n=len(y))
    names = list(predictors)
    cols = {k: np.asarray(v, dtype=np.float64) for k, v in predictors.items()}
    varying = [k for k in names if np.ptp(cols[k]) > 1e-12 * max(1.0, np.abs(cols[k]).max())]
    for k in names:
        if k not in varying:
            reg.coefficients.append(Coefficient(k, None, note="does not vary in this grid"))
    if len(varying) == 2:
        reg.correlation = float(np.corrcoef(cols[varying[0]], cols[varying[1]])[0, 1])
        if abs(reg.correlation) > COLLINEAR_R:
            for k in varying:
                reg.coefficients.append(Coefficient(k, None, note=f"moves with the other predictor (r = {reg.correlation:+.2f})"))
            reg.sentence = (f"The grid cannot separate {varying[0]} from {varying[1]}: they move together across the "
                            f"cells (r = {reg.correlation:+.2f}); add cells where one changes and the other does not.")
            return _ordered(reg, names)
    X = np.column_stack([np.ones_like(y)] + [cols[k] for k in varying])
    reg.df = len(y) - X.shape[1]
    if len(y) < X.shape[1] or np.linalg.matrix_rank(X) < X.shape[1]:
        for k in varying:
            reg.coefficients.append(Coefficient(k, None, note="not estimable (too few cells)"))
        reg.sentence = f"Too few cells ({len(y)}) to fit {X.shape[1]} coefficients."
        return _ordered(reg, names)
    se = _standard_errors(points)
    w = np.ones_like(y) if se is None else 1 / se ** 2
    Xw = X * np.sqrt(w)[:, None]
    beta, *_ = np.linalg.lstsq(Xw, y * np.sqrt(w), rcond=None)
    resid = y - X @ beta
    tss = float((w * (y - np.average(y, weights=w)) ** 2).sum())
    chi2 = float((w * resid ** 2).sum())
    reg.r_squared = 1 - chi2 / tss if tss > 0 else None
    reg.weighted = se is not None
    inv = np.linalg.inv(Xw.T @ Xw)
    if se is not None and (reg.df < 1 or chi2 / reg.df <= 1):  # scatter within the cells' own noise
        half = float(stats.norm.ppf(0.5 + level / 2)) * np.sqrt(np.diag(inv))
    elif reg.df >= 1:  # more scatter than the cells' CIs say (or none known): the residuals' variance
        half = float(stats.t.ppf(0.5 + level / 2, reg.df)) * np.sqrt(np.diag(inv * chi2 / reg.df))
    else:
        half = np.full(X.shape[1], np.nan)
    for i, k in enumerate(varying, start=1):
        ok = math.isfinite(half[i])
        reg.coefficients.append(Coefficient(k, float(beta[i]), float(beta[i] - half[i]) if ok else None,
                                            float(beta[i] + half[i]) if ok else None,
                                            "" if ok else "no CI (no residual degrees of freedom)"))
    reg = _ordered(reg, names)
    reg.sentence = _reading(reg, varying)
    return reg


def _ordered(reg: Regression, names: list[str]) -> Regression:
    reg.coefficients.sort(key=lambda c: names.index(c.name))
    return reg


def _reading(reg: Regression, varying: list[str]) -> str:
    est = {c.name: c for c in reg.coefficients if c.estimate is not None}
    fixed = [c.name for c in reg.coefficients if c.estimate is None]
    cannot = f" ({', '.join(fixed)} does not vary, so the grid cannot test it)" if fixed else ""
    carriers = [k for k in varying if est[k].excludes_zero]
    if not any(c.low is not None for c in est.values()):
        return f"No confidence intervals: {reg.n} cells leave no residual degrees of freedom{cannot}."
    if len(varying) == 1:
        c = est[varying[0]]
        verb = "changes with" if c.excludes_zero else "shows no change beyond noise with"
        return (f"The gap {verb} {varying[0]} ({c.estimate:+.4f} per unit, CI {c.low:+.4f}..{c.high:+.4f}){cannot}.")
    if len(carriers) == len(varying) == 2:
        return f"Both {varying[0]} and {varying[1]} change the gap with the other held fixed{cannot}."
    if carriers:
        others = [k for k in varying if k not in carriers]
        tail = f"; {others[0]} adds nothing beyond noise once {carriers[0]} is in the model" if others else ""
        return f"{carriers[0][0].upper() + carriers[0][1:]} carries the effect{tail}{cannot}."
    return f"No predictor's CI excludes 0: the gap's dependence is within noise with this grid{cannot}."
