"""Baseline and method logs on the same tokens: the (sample, position) pairs both score, and what was dropped."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anomaly_probe.errors import UserError
from anomaly_probe.importer.logs import SampleLog, TokenLog


@dataclass
class PairedSample:
    """One sample scored by both: arrays of shape (n,) on the same positions.

    ``gap`` = NLL(baseline) - NLL(method) per token (> 0: the method looks better), nats.
    """

    index: int
    sample_id: str
    position: np.ndarray
    baseline: SampleLog
    method: SampleLog

    @property
    def gap(self) -> np.ndarray:
        return self.baseline.nll - self.method.nll

    @property
    def n(self) -> int:
        return int(self.position.size)


def pair_logs(baseline: TokenLog, method: TokenLog) -> list[PairedSample]:
    """The samples both logs score, on the positions both score (see :func:`align_logs`)."""
    return align_logs(baseline, method)[0]


def align_logs(baseline: TokenLog, method: TokenLog) -> tuple[list[PairedSample], dict]:
    """Keep the (sample, position) pairs both logs score; say what was dropped.

    Real logs differ in coverage: the full-cache run of a benchmark often stops earlier (out of memory,
    or stopped once its NLL blows up) than the compressed one. Samples are matched by id, positions
    within a sample by value; each kept sample keeps the baseline's order.

    Returns
    -------
    pairs : list of PairedSample
        One per sample with at least one shared position.
    alignment : dict
        ``results.json`` ``alignment``: ``tokens_kept``, ``tokens_total`` (pairs in either log),
        ``samples_kept``, ``dropped`` (``{file, role, sample, tokens, first_position, last_position}`` per
        file and sample that lost tokens), ``samples_only_in`` (file -> sample ids) and ``note`` (one line).

    Raises
    ------
    UserError
        The logs share no (sample, position) pair.
    """
    logs = {"baseline": baseline, "method": method}
    by_role = {role: {s.sample_id: s for s in log.samples} for role, log in logs.items()}
    pairs: list[PairedSample] = []
    dropped: list[dict] = []
    phrases: list[str] = []
    only: dict[str, list[str]] = {}
    for sid, sb in by_role["baseline"].items():
        sm = by_role["method"].get(sid)
        if sm is None:
            continue
        if np.array_equal(sb.position, sm.position):  # the usual case: no index arrays, no copies
            common, ib, im = sb.position, slice(None), slice(None)
        else:
            common, ib, im = np.intersect1d(sb.position, sm.position, assume_unique=True, return_indices=True)
        sides = {"baseline": (sb, ib, sm), "method": (sm, im, sb)}
        for role, (mine, keep, other) in sides.items():
            lost = mine.position[:0] if isinstance(keep, slice) else np.delete(mine.position, keep)
            if lost.size:
                file = mine.path or logs[role].path
                dropped.append(_dropped(file, role, sid, lost))
                phrases.append(_phrase(role, sid, lost, other, file))
        if common.size:
            pairs.append(PairedSample(len(pairs), sid, common.astype(np.int64), _take(sb, ib), _take(sm, im)))
    for role, other in (("baseline", "method"), ("method", "baseline")):
        ids = [sid for sid in by_role[role] if sid not in by_role[other]]
        for sid in ids:
            s = by_role[role][sid]
            file = s.path or logs[role].path
            dropped.append(_dropped(file, role, sid, s.position))
            only.setdefault(file, []).append(sid)
        if ids:
            n = sum(by_role[role][i].position.size for i in ids)
            phrases.append(f"sample(s) {_ids(ids)} only in the {role} log ({n} tokens dropped)")
    kept = sum(p.n for p in pairs)
    total = kept + sum(d["tokens"] for d in dropped)
    if not pairs:
        raise UserError(f"the logs share no (sample, position) pair: {baseline.path!r} has {_cover(baseline)}, "
                        f"{method.path!r} has {_cover(method)}; both must score the same text (name the sample "
                        "column with --sample-col, or the position column with --pos-col)")
    if dropped:
        shown = phrases[:3] + ([f"and {len(phrases) - 3} more (see alignment in results.json)"]
                               if len(phrases) > 3 else [])
        note = f"kept {kept} of the {total} (sample, position) pairs; " + "; ".join(shown)
    else:
        note = f"both logs score the same {kept} (sample, position) pairs"
    return pairs, {"tokens_kept": kept, "tokens_total": total, "samples_kept": len(pairs), "dropped": dropped,
                   "samples_only_in": only, "note": note}


def _take(s: SampleLog, idx: np.ndarray | slice) -> SampleLog:
    """The entries ``idx`` of every array of ``s`` (a slice: views, no copy)."""
    pick = (lambda a: None if a is None else a[idx])  # noqa: E731
    return SampleLog(s.sample_id, s.position[idx], s.nll[idx], pick(s.memory), pick(s.latency), pick(s.correct),
                     s.path)


def _dropped(file: str, role: str, sid: str, positions: np.ndarray) -> dict:
    return {"file": file, "role": role, "sample": sid, "tokens": int(positions.size),
            "first_position": int(positions.min()), "last_position": int(positions.max())}


def _phrase(role: str, sid: str, lost: np.ndarray, other: SampleLog, file: str) -> str:
    """One clause on the positions of sample ``sid`` only the ``role`` log has."""
    other_role = "method" if role == "baseline" else "baseline"
    if lost.min() > other.position[-1]:
        where = f"the {other_role} log stops at position {int(other.position[-1])}"
    elif lost.max() < other.position[0]:
        where = f"the {other_role} log starts at position {int(other.position[0])}"
    else:
        return f"{lost.size} position(s) of sample {sid!r} only in {file}"
    return f"{where} in sample {sid!r} ({lost.size} dropped from {file})"


def _ids(ids: list[str]) -> str:
    return ", ".join(repr(i) for i in ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")


def _cover(log: TokenLog) -> str:
    """The samples of ``log`` and their positions, briefly."""
    parts = [f"{s.sample_id!r} (positions {int(s.position[0])}..{int(s.position[-1])})" for s in log.samples[:3]]
    more = f" and {len(log.samples) - 3} more" if len(log.samples) > 3 else ""
    return f"sample(s) {', '.join(parts)}{more}"
