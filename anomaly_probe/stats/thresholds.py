"""Every threshold the judges use, in one object. Printed in results.json; the same for every model."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Thresholds:
    """Decision rules for verdicts.

    Attributes
    ----------
    support_share : float
        SUPPORTED when the 95% CI of the explained share lies above this.
    refute_share : float
        REFUTED when the 95% CI of the explained share lies below this.
    null_effect_nats : float
        Where there is no anomaly to explain (the gap is not positive beyond noise), an intervention
        whose mean effect CI lies within +-this (nats/token) is REFUTED: it cannot produce an effect here.
    block_tokens : int
        Contiguous tokens per bootstrap block (neighbouring tokens are correlated).
    n_boot : int
        Bootstrap resamples.
    ci_level : float
        Confidence level of every interval.
    min_tokens : int
        Fewer paired tokens than this: INCONCLUSIVE.
    min_blocks : int
        Fewer bootstrap blocks than this: INCONCLUSIVE.
    tolerance_nats : dict
        Per-dtype max |dNLL| under which two evaluation paths count as the same computation
        (eval-bias): float32 1e-4 as measured stepwise vs batched; half precisions are coarser.
    changepoint_tolerance : float
        Position: the gap's onset is "well before" the trained context (pointing away from position)
        when it lies more than this fraction of the trained context before it; onsets after it are
        normal and only reported as a multiple. Imported memory logs: the gap's onset "follows" a
        latency jump within this fraction of the jump's position.
    latency_jump_factor : float
        Imported logs: a per-token latency block this many times the early blocks' median is a swap signature.
    memory_corr_min : float
        Imported logs: Spearman correlation of the gap with memory (per block) needed to call them related.
    region_alpha : float
        The analysis region moves its start forward to the gap's changepoint only when the rise there is
        significant at this level (block-permutation test of the split's explained variance).
    region_permutations : int
        Permutations for that test.
    """

    support_share: float = 0.5
    refute_share: float = 0.2
    null_effect_nats: float = 0.01
    block_tokens: int = 128
    n_boot: int = 2000
    ci_level: float = 0.95
    min_tokens: int = 256
    min_blocks: int = 8
    tolerance_nats: tuple = (("float64", 1e-6), ("float32", 1e-4), ("float16", 2e-2), ("bfloat16", 1e-1))
    changepoint_tolerance: float = 0.25
    latency_jump_factor: float = 3.0
    memory_corr_min: float = 0.5
    region_alpha: float = 0.01
    region_permutations: int = 999

    def tolerance(self, dtype: str) -> float:
        return dict(self.tolerance_nats).get(dtype, 1e-4)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tolerance_nats"] = dict(self.tolerance_nats)
        return d


DEFAULT_THRESHOLDS = Thresholds()
