"""Block bootstrap over contiguous token blocks, resampled within and across samples.

Neighbouring tokens are correlated, so one sample of 5000 tokens is not 5000 observations. Each
sample's per-token series is cut into blocks of ``block_tokens`` contiguous tokens (a trailing partial
block is kept with its own count); a resample draws samples with replacement, then blocks with
replacement within each drawn sample. Statistics are ratios of sums, so only per-block sums are needed.
The percentile interval is used: the statistics here (means and ratios of means) are smooth and the
interval must work for skewed ratios, where a normal approximation would not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Blocks:
    """Per-block sums of paired series.

    Attributes
    ----------
    sums : np.ndarray
        Shape (S, B, K): sum of each of K series over each block of each sample.
    counts : np.ndarray
        Shape (S, B): tokens per block.
    """

    sums: np.ndarray
    counts: np.ndarray

    @property
    def n_tokens(self) -> int:
        return int(self.counts.sum())

    @property
    def n_blocks(self) -> int:
        return int((self.counts > 0).sum())

    @property
    def n_samples(self) -> int:
        return int(self.sums.shape[0])

    def block_means(self) -> np.ndarray:
        """Shape (n_blocks, K): the mean of each series within each non-empty block."""
        ok = self.counts > 0
        return self.sums[ok] / self.counts[ok][:, None]


def make_blocks(series: list[np.ndarray], block_tokens: int) -> Blocks:
    """Cut per-sample series into blocks.

    Parameters
    ----------
    series : list of np.ndarray
        One array per sample, shape (T_s, K); samples may differ in length.
    block_tokens : int
        Tokens per block.
    """
    n_blocks = max(int(np.ceil(len(x) / block_tokens)) for x in series)
    K = series[0].shape[1]
    sums = np.zeros((len(series), n_blocks, K))
    counts = np.zeros((len(series), n_blocks))
    for s, x in enumerate(series):
        for b in range(int(np.ceil(len(x) / block_tokens))):
            part = x[b * block_tokens:(b + 1) * block_tokens]
            sums[s, b] = part.sum(axis=0)
            counts[s, b] = len(part)
    return Blocks(sums=sums, counts=counts)


RESAMPLE_CHUNK = 2**21
"""Block draws per step of :func:`resample_sums` (bounds its memory; the numbers do not depend on it)."""


def resample_sums(blocks: Blocks, n_boot: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap totals.

    Returns
    -------
    sums : np.ndarray
        Shape (n_boot, K): resampled total of each series.
    counts : np.ndarray
        Shape (n_boot,): resampled token count.
    """
    rng = np.random.default_rng(seed)
    S, B, _ = blocks.sums.shape
    valid = blocks.counts > 0  # (S, B)
    nb = valid.sum(axis=1)  # blocks per sample
    chosen = rng.integers(0, S, size=(n_boot, S)) if S > 1 else np.zeros((n_boot, 1), dtype=int)
    # The draws are made RESAMPLE_CHUNK elements at a time (memory: a million tokens are 7813 blocks, and all
    # 2000 resamples at once took ~0.5 GB); consecutive draws continue one stream, so the numbers are the same.
    step = max(1, RESAMPLE_CHUNK // max(1, S * B))
    sums, counts = [], []
    for lo in range(0, n_boot, step):
        ch = chosen[lo:lo + step]  # (n, S)
        u = rng.random((ch.shape[0], S, B))  # (n, S, B)
        picks = np.minimum((u * nb[ch][..., None]).astype(int), B - 1)  # uniform over the sample's blocks
        # Only the first nb[chosen] draws of each sample count, so every sample keeps its own size.
        keep = np.arange(B)[None, None, :] < nb[ch][..., None]  # (n, S, B)
        sums.append((blocks.sums[ch[..., None], picks] * keep[..., None]).sum(axis=(1, 2)))  # (n, K)
        counts.append((blocks.counts[ch[..., None], picks] * keep).sum(axis=(1, 2)))  # (n,)
    return np.concatenate(sums), np.concatenate(counts)


def percentile_ci(values: np.ndarray, level: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    a = (1 - level) / 2
    lo, hi = np.quantile(values, [a, 1 - a])
    return float(lo), float(hi)


def mean_ci(blocks: Blocks, k: int, n_boot: int, level: float, seed: int = 0) -> tuple[float, float, float]:
    """Mean of series ``k`` per token, and its bootstrap CI."""
    point = blocks.sums[..., k].sum() / blocks.counts.sum()
    sums, counts = resample_sums(blocks, n_boot, seed)
    lo, hi = percentile_ci(sums[:, k] / counts, level)
    return float(point), lo, hi


def ratio_ci(blocks: Blocks, num: int, den: int, n_boot: int, level: float,
             seed: int = 0) -> tuple[float, float, float]:
    """``sum(series num) / sum(series den)`` and its bootstrap CI (same resamples for both)."""
    total = blocks.sums.sum(axis=(0, 1))
    point = total[num] / total[den] if total[den] != 0 else float("nan")
    sums, _ = resample_sums(blocks, n_boot, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = sums[:, num] / sums[:, den]
    lo, hi = percentile_ci(ratios, level)
    return float(point), lo, hi


def describe_ci(block_tokens: int, n_boot: int, level: float) -> str:
    """The interval this module computes, in words for a table or figure caption.

    E.g. ``95% block-bootstrap CI (128-token blocks; samples resampled, then blocks within each sample;
    2000 resamples, percentile interval)``.
    """
    return (f"{level:.0%} block-bootstrap CI ({block_tokens}-token blocks; samples resampled, then blocks within "
            f"each sample; {n_boot} resamples, percentile interval)")
