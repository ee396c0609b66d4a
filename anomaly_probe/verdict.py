"""The record every hypothesis experiment returns (great_expectations-style check result)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

STATUSES = ("supported", "refuted", "inconclusive", "error")


@dataclass
class Verdict:
    """One hypothesis, judged from recorded data.

    Attributes
    ----------
    hypothesis : str
        ``numerics``, ``dilution``, ``memory``, ``eval-bias``, ``position``, ``handling`` or ``sinks``.
    status : str
        One of :data:`STATUSES`.
    explained_share : float or None
        ``(gap before - gap after) / gap before`` for the hypothesis' intervention; None where no gap.
    ci_low, ci_high : float or None
        95% block-bootstrap CI of the share.
    effect_size : float or None
        The hypothesis' own effect statistic (its meaning is in ``effect_label``).
    p_value : float or None
        Where a test applies.
    n : dict
        ``tokens``, ``blocks``, ``samples`` behind the statistic.
    message : str
        One plain sentence.
    evidence : dict
        Named small series for the figures (lists of numbers, <= a few thousand points each).
    max_tokens : int or None
        The sample length the verdict was judged at (a run may hold several lengths).
    acts_on : str
        ``"baseline"`` (a cause: the intervention changes the full cache) or ``"method"`` (a
        method-side check: it changes the compressed cache); from the catalog (``hypotheses/catalog.py``).
    """

    hypothesis: str
    status: str
    explained_share: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    effect_size: float | None = None
    effect_label: str = ""
    p_value: float | None = None
    n: dict = field(default_factory=dict)
    message: str = ""
    evidence: dict = field(default_factory=dict)
    max_tokens: int | None = None
    acts_on: str = ""

    def __post_init__(self) -> None:
        if not self.acts_on:
            from anomaly_probe.hypotheses.catalog import acts_on

            self.acts_on = acts_on(self.hypothesis)

    def to_dict(self) -> dict:
        return asdict(self)
