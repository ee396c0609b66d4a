"""Findings: a sentence a verdict wants in the headline and the report (``evidence["finding"]``).

A finding is something the data show that a reader must not miss, beyond the status: e.g. "the dense
model breaks at ~10753 tokens although its config says 32768" (:mod:`anomaly_probe.hypotheses.location`).
Headline builders add :func:`finding_clause` to each verdict's part; the report shows it per verdict.
"""

from __future__ import annotations

KEY = "finding"


def finding_of(verdict) -> str | None:
    """The verdict's finding (a ``Verdict`` or its ``to_dict()``), or None."""
    evidence = verdict.get("evidence") if isinstance(verdict, dict) else getattr(verdict, "evidence", None)
    value = evidence.get(KEY) if isinstance(evidence, dict) else None
    return value if isinstance(value, str) and value else None


def finding_clause(verdict) -> str:
    """``" (finding: ...)"`` to append to the verdict's part of a headline, or ``""``."""
    finding = finding_of(verdict)
    return f" (finding: {finding})" if finding else ""


def findings_sentence(verdicts) -> str:
    """Every finding of ``verdicts``, a sentence each (``"Finding (position): ...."``), or ``""``."""
    return " ".join(f"Finding ({getattr(v, 'hypothesis', None) or v.get('hypothesis')}): {f}." for v in verdicts
                    if (f := finding_of(v)))
