"""Per-token scores produced by every engine, and their summary."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class TokenScores:
    """What one engine run on one sample produced.

    Entry ``i`` scores the prediction of token ``i + 1`` made at step ``i``; the first token is
    never scored, so a sample of ``T`` tokens gives ``T - 1`` entries.

    Attributes
    ----------
    nll : np.ndarray
        Negative log-likelihood of the target, nats, shape (T-1,), float64.
    correct : np.ndarray
        Top-1 prediction equals the target, shape (T-1,), bool.
    query_pos : np.ndarray
        RoPE position given to the query at each step, shape (T-1,), int64.
    n_keys : np.ndarray
        Keys the query attended to (cache + itself), shape (T-1,), int64.
    seconds : float
        Wall time of the scoring loop.
    peak_rss_bytes : int
        Largest resident set size sampled during the run.
    engine : str
        The engine that produced the scores.
    """

    nll: np.ndarray
    correct: np.ndarray
    query_pos: np.ndarray
    n_keys: np.ndarray
    seconds: float
    peak_rss_bytes: int
    engine: str
    extra: dict = field(default_factory=dict)

    @property
    def tokens_scored(self) -> int:
        return int(self.nll.size)

    def summary(self) -> dict:
        """Mean NLL (nats/token), PPL, top-1 accuracy, tokens/s and peak RSS."""
        n = self.tokens_scored
        nll_mean = float(self.nll.mean()) if n else float("nan")
        return {
            "tokens_scored": n,
            "nll_mean": nll_mean,
            "ppl": math.exp(nll_mean) if math.isfinite(nll_mean) and nll_mean < 700 else float("inf"),
            "acc": float(self.correct.mean()) if n else float("nan"),
            "tok_per_s": n / self.seconds if self.seconds > 0 else float("nan"),
            "seconds": self.seconds,
            "peak_rss_bytes": int(self.peak_rss_bytes),
        }
