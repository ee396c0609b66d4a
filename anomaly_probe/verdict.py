"""The record every hypothesis experiment returns (great_expectations-style check result)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

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
    extra : dict
        Keys of a saved verdict this version does not know (kept, written back by ``to_dict``).
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
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.acts_on:
            from anomaly_probe.hypotheses.catalog import acts_on

            self.acts_on = acts_on(self.hypothesis)

    def to_dict(self) -> dict:
        """The ``results.json`` ``verdicts[]`` entry."""
        out = asdict(self)
        out.update(out.pop("extra"))
        return out

    @classmethod
    def from_dict(cls, data) -> "Verdict":
        """A saved ``verdicts[]`` entry; ValueError when it is not an object with a hypothesis and status."""
        if not isinstance(data, dict) or not isinstance(data.get("hypothesis"), str) \
                or not isinstance(data.get("status"), str):
            raise ValueError("Verdict: expected an object with a hypothesis and a status")
        known = {f.name for f in fields(cls) if f.name != "extra"}
        return cls(**{k: v for k, v in data.items() if k in known},
                   extra={k: v for k, v in data.items() if k not in known})
