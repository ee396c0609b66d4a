"""Paired significance tests on block means (blocks are close to independent; tokens are not)."""

from __future__ import annotations

import numpy as np
from scipy import stats

from anomaly_probe.stats.bootstrap import Blocks


def paired_block_test(blocks: Blocks, k: int) -> tuple[float, float]:
    """Two-sided one-sample t-test that series ``k`` has mean 0, on block means.

    Returns
    -------
    tuple of float
        (effect size: mean / sd of block means (Cohen's d), p-value). NaN where undefined.
    """
    means = blocks.block_means()[:, k]
    if means.size < 2:
        return float("nan"), float("nan")
    sd = means.std(ddof=1)
    if sd == 0:
        return (0.0 if means.mean() == 0 else float("inf")), (1.0 if means.mean() == 0 else 0.0)
    res = stats.ttest_1samp(means, 0.0)
    return float(means.mean() / sd), float(res.pvalue)
