"""How verdicts are ordered and summed up in one sentence, for ``run`` and ``import`` alike.

Pure functions of :class:`~anomaly_probe.verdict.Verdict` records and a gap summary: no model, no
torch, so ``import`` uses them as they are.

Ranking: longest length first; within a length the causes (interventions on the baseline) before the
method-side checks (``Verdict.acts_on``), each by explained share, highest first (None last).

Headline: the gap with its CI; when the method wins beyond noise, the first supported cause (if any);
then every other verdict, the causes first and then the method-side checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from anomaly_probe.hypotheses.findings import finding_clause
from anomaly_probe.verdict import Verdict


def rank(verdicts: list[Verdict]) -> list[Verdict]:
    """Longest length first; causes before method-side checks; by explained share, highest first."""
    def key(v: Verdict):
        share = v.explained_share if v.explained_share is not None and math.isfinite(v.explained_share) else -math.inf
        side = 1 if v.acts_on == "method" else 0
        return (-(v.max_tokens or 0), side, -share, v.hypothesis)

    return sorted(verdicts, key=key)


@dataclass(frozen=True)
class Gap:
    """Mean gap NLL(baseline) - NLL(method) on the analysed tokens, nats/token, with its 95% CI."""

    mean: float
    ci_low: float
    ci_high: float

    @property
    def anomaly(self) -> bool:
        """The method beats the full cache beyond noise (the CI lies above 0)."""
        return bool(self.ci_low > 0)


@dataclass(frozen=True)
class Wording:
    """What a headline calls its evidence.

    Attributes
    ----------
    share : str
        Before each share in the list of verdicts ("" for a run: ``0.62 [0.50, 0.79]``).
    top_share : str
        Before the top cause's share ("share", or "est. share" for logs).
    explained_by : str
        Introduces the top cause.
    no_cause : str
        Said when the method wins but no cause is supported.
    """

    share: str = ""
    top_share: str = "share"
    explained_by: str = "the gap is explained by"
    no_cause: str = "no tested cause explains it"


RUN = Wording()
IMPORTED = Wording(share="est. share ", top_share="est. share", explained_by="the logs point to",
                   no_cause="no cause is supported by the logs alone")


def headline(subject: str, gap: Gap, verdicts: list[Verdict], titles: Mapping[str, str],
             wording: Wording = RUN) -> str:
    """One sentence a researcher can paste into a paper.

    Parameters
    ----------
    subject : str
        Where and what, e.g. ``At 12000 tokens on positions 10753-11999 streaming_llm(4+252, in-cache)``.
    gap : Gap
        The gap on those tokens.
    verdicts : list of Verdict
        The verdicts of that length, in any order (ranked here).
    titles : mapping
        Hypothesis name -> the cause in words ("positions beyond the trained context").
    wording : Wording
        :data:`RUN` or :data:`IMPORTED`.
    """
    ranked = rank(verdicts)
    parts = [_part(v, wording) for v in ranked]
    if not gap.anomaly:
        return _sentence(f"{subject} does not beat the full cache beyond noise (gap {gap.mean:+.3f} nats/token, "
                         f"95% CI {gap.ci_low:+.3f}..{gap.ci_high:+.3f})", listing(parts, ranked))
    lead = (f"{subject} beats the full cache by {gap.mean:.3f} nats/token (95% CI {gap.ci_low:.3f}.."
            f"{gap.ci_high:.3f})")
    top = next((v for v in ranked if v.status == "supported" and v.acts_on == "baseline"), None)
    if top is None:
        return _sentence(lead, f"{wording.no_cause}: " + listing(parts, ranked))
    keep = [i for i, v in enumerate(ranked) if v is not top]
    share = _share(top, wording.top_share + " ", "{:.2f}, 95% CI {:.2f}..{:.2f}")
    cause = titles.get(top.hypothesis, top.hypothesis) + (f" ({share})" if share else "")
    return _sentence(lead, f"{wording.explained_by} {cause}",
                     listing([parts[i] for i in keep], [ranked[i] for i in keep]))


def _sentence(*clauses: str) -> str:
    """The non-empty clauses joined by "; ", with a full stop (a run with one hypothesis ends cleanly)."""
    return "; ".join(c for c in clauses if c) + "."


def listing(parts: list[str], verdicts: list[Verdict]) -> str:
    """Causes joined by "; ", then the method-side checks after "method-side checks: "."""
    side = [v.acts_on for v in verdicts]
    causes = [p for p, s in zip(parts, side) if s != "method"]
    checks = [p for p, s in zip(parts, side) if s == "method"]
    out = "; ".join(causes)
    if checks:
        out += ("; " if out else "") + "method-side checks: " + ", ".join(checks)
    return out


def _part(v: Verdict, wording: Wording) -> str:
    """``position supported (1.18 [1.11, 1.28])``, or ``numerics refuted`` without a share; a verdict's
    finding (:mod:`anomaly_probe.hypotheses.findings`) follows in parentheses."""
    share = _share(v, wording.share, "{:.2f} [{:.2f}, {:.2f}]")
    return f"{v.hypothesis} {v.status}" + (f" ({share})" if share else "") + finding_clause(v)


def _share(v: Verdict, prefix: str, form: str) -> str:
    values = (v.explained_share, v.ci_low, v.ci_high)
    if any(x is None or not math.isfinite(x) for x in values):
        return ""
    return prefix + form.format(*values)
