"""memory from logs: do memory growth and latency jumps (a swap signature) line up with the gap?

Logs cannot show the NLL under memory pressure and without it, so this judge never refutes. Rule
(thresholds from :class:`~anomaly_probe.stats.thresholds.Thresholds`), on blocks of ``block_tokens``
positions pooled over samples:

* swap signature: a block whose median baseline latency is >= ``latency_jump_factor`` x the median of
  the first quarter of the blocks; its first position is the jump;
* the gap follows memory: Spearman correlation of the block gap with the block baseline memory
  >= ``memory_corr_min`` with p < 1 - ``ci_level``;
* SUPPORTED only when there is a swap signature, the gap's onset lies within
  ``changepoint_tolerance`` x the jump position (or one block) of it, and the gap follows memory;
  otherwise INCONCLUSIVE, saying what the logs show and which run settles it.
"""

from __future__ import annotations

import numpy as np

from anomaly_probe.importer.onset import binned_gap, onset_changepoint
from anomaly_probe.importer.pair import PairedSample
from anomaly_probe.stats.thresholds import Thresholds
from anomaly_probe.verdict import Verdict

NAME = "memory"
SETTLE = ("`anomaly-probe run --hypothesis memory --model MODEL` repeats the baseline under a memory ballast and "
          "settles it")


def _block_stat(pairs: list[PairedSample], values, block: int, reduce) -> tuple[np.ndarray, np.ndarray]:
    """Per position block: ``reduce`` of ``values(pair)`` pooled over samples (NaNs ignored)."""
    pos = np.concatenate([p.position for p in pairs])
    val = np.concatenate([values(p) for p in pairs])
    keys = pos // block
    out_k, out_v = [], []
    for k in np.unique(keys):
        v = val[(keys == k) & np.isfinite(val)]
        if v.size:
            out_k.append(int(k) * block)
            out_v.append(float(reduce(v)))
    return np.asarray(out_k), np.asarray(out_v)


def judge_memory(pairs: list[PairedSample], th: Thresholds) -> Verdict:
    """The memory verdict from the memory and latency columns (see the module docstring)."""
    has_mem = all(p.baseline.memory is not None for p in pairs)
    has_lat = all(p.baseline.latency is not None for p in pairs)
    n = {"tokens": sum(p.n for p in pairs), "samples": len(pairs)}
    if not has_mem and not has_lat:
        return Verdict(NAME, "inconclusive", n=n, evidence={"memory_column": False, "latency_column": False},
                       message="The logs have no memory or latency column, so memory pressure cannot be judged; "
                               f"{SETTLE}.")
    block = th.block_tokens
    evidence: dict = {"memory_column": has_mem, "latency_column": has_lat}
    figures, sentences = [], []
    gap_k, gap_v = _block_stat(pairs, lambda p: p.gap, block, np.mean)
    follows = False
    if has_mem:
        mem_k, mem_v = _block_stat(pairs, lambda p: p.baseline.memory, block, np.median)
        common, gi, mi = np.intersect1d(gap_k, mem_k, return_indices=True)
        rho, p_rho = _spearman(gap_v[gi], mem_v[mi])
        growth = [float(np.nanmax(p.baseline.memory) - p.baseline.memory[np.isfinite(p.baseline.memory)][0])
                  for p in pairs if np.isfinite(p.baseline.memory).any()]
        follows = rho is not None and rho >= th.memory_corr_min and p_rho < 1 - th.ci_level
        evidence.update({"baseline_memory_peak_bytes": _nanmax([p.baseline.memory for p in pairs]),
                         "method_memory_peak_bytes": _nanmax([p.method.memory for p in pairs]),
                         "baseline_memory_growth_bytes": float(np.mean(growth)) if growth else None,
                         "spearman_gap_vs_memory": rho, "spearman_p": p_rho, "gap_follows_memory": follows})
        figures.append({"id": "import-memory", "kind": "scatter", "title": "Gap vs baseline memory, per block",
                        "xlabel": "baseline memory (MiB, block median)", "ylabel": "NLL gap (nats/token, block mean)",
                        "x": [v / 2**20 for v in mem_v[mi]],
                        "series": [{"name": f"{block}-token blocks", "y": list(gap_v[gi]), "color_key": "baseline"}]})
        sentences.append("the gap follows the baseline's memory growth" if follows else
                         "the gap does not follow the baseline's memory" if rho is not None else
                         "too few blocks to correlate the gap with memory")
        if rho is not None:
            sentences[-1] += f" (Spearman {rho:+.2f}, p {p_rho:.2g}, {common.size} blocks)"
    jump_at = None
    if has_lat:
        lat_k, lat_v = _block_stat(pairs, lambda p: p.baseline.latency, block, np.median)
        early = float(np.median(lat_v[: max(1, lat_v.size // 4)])) if lat_v.size else float("nan")
        ratio = lat_v / early if early > 0 else np.full_like(lat_v, np.nan)
        jumps = np.flatnonzero(ratio >= th.latency_jump_factor)
        jump_at = int(lat_k[jumps[0]]) if jumps.size else None
        finite = ratio[np.isfinite(ratio)]
        evidence.update({"latency_early_median_s": early,
                         "latency_max_over_early": float(finite.max()) if finite.size else None,
                         "swap_signature_at": jump_at})
        top = evidence["latency_max_over_early"]
        if jump_at is not None:
            sentences.append(f"baseline latency jumps {top:.1f}x at position {jump_at} (a swap signature)")
        else:
            sentences.append(f"no latency jump (max {'n/a' if top is None else f'{top:.1f}x'} the early median; swap "
                             f"would show >= {th.latency_jump_factor:g}x)")
    width = max(1, block // 4)
    onset, _ = onset_changepoint(*binned_gap(pairs, width))
    evidence["gap_onset"] = onset
    aligned = (jump_at is not None and onset is not None
               and abs(onset - jump_at) <= max(th.changepoint_tolerance * max(jump_at, 1), block))
    evidence["gap_onset_at_latency_jump"] = aligned
    evidence["figures"] = figures
    text = "From the logs: " + "; ".join(sentences) + "."
    if aligned and follows:
        return Verdict(NAME, "supported", n=n, evidence=evidence,
                       message=f"{text} The gap changes at position {onset:g}, where latency jumps: memory pressure is "
                               f"the likely cause (correlational evidence; {SETTLE}).")
    return Verdict(NAME, "inconclusive", n=n, evidence=evidence, message=f"{text} Logs cannot show the NLL with and "
                                                                          f"without memory pressure; {SETTLE}.")


def _spearman(a: np.ndarray, b: np.ndarray) -> tuple[float | None, float | None]:
    if a.size < 4 or np.all(a == a[0]) or np.all(b == b[0]):
        return None, None
    from scipy import stats

    res = stats.spearmanr(a, b)
    return float(res.statistic), float(res.pvalue)


def _nanmax(arrays: list[np.ndarray]) -> float | None:
    vals = [float(np.nanmax(a)) for a in arrays if a is not None and np.isfinite(a).any()]
    return max(vals) if vals else None
