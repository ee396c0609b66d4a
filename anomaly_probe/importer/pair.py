"""Baseline and method logs on the same tokens: same samples, same positions, sample by sample."""

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
    """Match samples by id and check that both logs scored the same positions.

    Raises
    ------
    UserError
        A sample in one log only, or a sample whose lengths or positions differ.
    """
    b = {s.sample_id: s for s in baseline.samples}
    m = {s.sample_id: s for s in method.samples}
    only_b = [k for k in b if k not in m]
    only_m = [k for k in m if k not in b]
    if only_b or only_m:
        if only_b:
            which, where, other = only_b[0], baseline.path, method.path
        else:
            which, where, other = only_m[0], method.path, baseline.path
        raise UserError(f"sample {which!r} is in {where!r} but not in {other!r} ({len(b)} vs {len(m)} samples); "
                        "both logs must score the same samples")
    out = []
    for i, sid in enumerate(b):
        sb, sm = b[sid], m[sid]
        if sb.position.size != sm.position.size:
            raise UserError(f"mismatched lengths: sample {sid!r} has {sb.position.size} tokens in {baseline.path!r} "
                            f"and {sm.position.size} in {method.path!r}; both logs must score the same tokens")
        diff = np.flatnonzero(sb.position != sm.position)
        if diff.size:
            k = int(diff[0])
            raise UserError(f"sample {sid!r}: entry {k} is position {int(sb.position[k])} in {baseline.path!r} but "
                            f"{int(sm.position[k])} in {method.path!r}; both logs must score the same tokens")
        out.append(PairedSample(i, sid, sb.position, sb, sm))
    return out
