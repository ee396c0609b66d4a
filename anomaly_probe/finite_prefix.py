"""The one rule for non-finite NLL in statistics: cut every compared run of a sample at the first one.

Entry ``i`` of every run of a sample scores the same token, so cutting all of them at the first entry
that is NaN/inf in *any* of them keeps the runs paired token by token and keeps each entry's position
(removing entries from the middle would shift positions, which the position statistics rely on).
After a NaN enters a KV cache every later token is NaN anyway, so little is lost. Comparisons,
verdicts and the headline all use this rule, and every verdict it touches says so.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def first_nonfinite(a: np.ndarray) -> int | None:
    """Index of the first NaN/inf entry of ``a``, or None."""
    bad = ~np.isfinite(np.asarray(a, dtype=np.float64))
    return int(np.argmax(bad)) if bad.any() else None


def common_cut(arrays: Sequence[np.ndarray]) -> int | None:
    """The earliest first non-finite entry over ``arrays`` (runs of one sample), or None if all finite."""
    cuts = [c for c in (first_nonfinite(a) for a in arrays) if c is not None]
    return min(cuts) if cuts else None


def cut_judge_input(data) -> tuple[list[str], str, bool]:
    """Cut ``data.nll`` / ``data.correct`` (a :class:`~anomaly_probe.hypotheses.base.JudgeInput`) in place.

    Returns
    -------
    notes : list of str
        One sentence per affected sample (verdict evidence): the non-finite roles, where, and the
        layer located in the run record's ``nonfinite`` finding.
    summary : str
        One sentence for the verdict message ("" when every run is finite).
    too_short : bool
        True when a sample keeps fewer than 2 entries: nothing sensible is left to judge.
    """
    from anomaly_probe.nonfinite import describe

    notes, cuts, culprits, first_finding, too_short = [], [], [], None, False
    roles = list(data.nll)
    for s in range(len(data.nll[roles[0]]) if roles else 0):
        cut = common_cut([data.nll[r][s] for r in roles])
        if cut is None:
            continue
        bad = [r for r in roles if first_nonfinite(data.nll[r][s]) is not None]
        findings = [_finding(data, r, s) for r in bad]
        first_finding = first_finding or next((f for f in findings if f), None)
        where = "; ".join(sorted({describe(f) for f in findings if f}))
        notes.append(f"sample {s}: non-finite NLL in {', '.join(bad)}" + (f" ({where})" if where else "")
                     + f"; its runs are cut at token {cut}")
        culprits += [r for r in bad if r not in culprits]
        cuts.append(cut)
        for r in roles:
            data.nll[r][s] = data.nll[r][s][:cut]
            if r in data.correct:
                data.correct[r][s] = data.correct[r][s][:cut]
        too_short = too_short or cut < 2
    if not notes:
        return [], "", False
    located = f"; {first_finding['note']}" if first_finding and first_finding.get("note") else ""
    summary = (f"Non-finite NLL in the {', '.join(culprits)} run(s) of {len(notes)} sample(s), first at token "
               f"{min(cuts)}{located}; every run of such a sample is cut there, so the statistics use only "
               "the tokens before it.")
    return notes, summary, too_short


def _finding(data, role: str, sample: int) -> dict | None:
    runs = data.runs.get(role) or []
    run = runs[sample] if sample < len(runs) else None
    finding = run.get("nonfinite") if isinstance(run, dict) else None
    return finding if isinstance(finding, dict) else None
