"""The record every check returns (great_expectations style: status, observed, threshold, one sentence)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

PASS, FAIL, ERROR, SKIP = "pass", "fail", "error", "skip"
STATUSES = (PASS, FAIL, ERROR, SKIP)
"""``skip``: the check does not apply here (e.g. no RoPE for position modes); it does not fail the suite."""


@dataclass
class CheckResult:
    """One check, judged.

    Attributes
    ----------
    name : str
        Stable dotted name, e.g. ``engines.streaming_llm.in-cache.stepwise-vs-parallel``.
    status : str
        One of :data:`STATUSES`.
    reason : str
        One line: what was compared and what came out.
    observed : float or None
        The statistic the check judged (its unit is in ``unit``), e.g. max |dNLL| in nats.
    threshold : float or None
        The bound it was judged against.
    unit : str
        Unit of ``observed`` and ``threshold``.
    seconds : float
        Wall time of the check.
    details : dict
        Plain data for ``--json`` (per-sample comparisons, the diagnosed cause, ...).
    """

    name: str
    status: str
    reason: str
    observed: float | None = None
    threshold: float | None = None
    unit: str = ""
    seconds: float = 0.0
    details: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"check status must be one of {STATUSES}, got {self.status!r}")

    @property
    def failed(self) -> bool:
        """Whether this result makes the suite fail (``fail`` or ``error``)."""
        return self.status in (FAIL, ERROR)

    def to_dict(self) -> dict:
        return asdict(self)


def max_abs_diff(a, b) -> float:
    """``max |a - b|`` over two equal-length arrays (0 for empty ones); NaN-aware: any NaN gives inf."""
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"cannot compare arrays of shapes {a.shape} and {b.shape}")
    if a.size == 0:
        return 0.0
    d = np.abs(a - b)
    return float("inf") if np.isnan(d).any() else float(d.max())


def agreement(name: str, a, b, tol: float, what: str) -> CheckResult:
    """PASS when ``max |a - b| <= tol`` (nats), else FAIL naming the first token that differs.

    Parameters
    ----------
    a, b : array-like
        Per-token NLL (nats), shape (n,) each.
    what : str
        The comparison in words, e.g. ``"stepwise vs batched, full cache"``.
    """
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return CheckResult(name, FAIL, f"{what}: {a.size} vs {b.size} scored tokens", unit="tokens",
                           details={"lengths": [int(a.size), int(b.size)]})
    m = max_abs_diff(a, b)
    if m <= tol:
        return CheckResult(name, PASS, f"{what}: max |dNLL| {m:.1e} <= {tol:.0e} nats over {a.size} tokens",
                           observed=m, threshold=tol, unit="nats")
    bad = np.flatnonzero(~(np.abs(a - b) <= tol))
    first = int(bad[0])
    return CheckResult(name, FAIL, f"{what}: max |dNLL| {m:.2e} > {tol:.0e} nats; first differs at token {first} "
                                   f"({bad.size} of {a.size} tokens differ)",
                       observed=m, threshold=tol, unit="nats",
                       details={"first_mismatch": first, "n_mismatch": int(bad.size), "tokens": int(a.size)})
