"""``results.json``: the stable, versioned interface every other tool reads.

Schema (version 1)::

    schema_version  int
    environment     python, torch, transformers, device, device_name, dtype, attn_implementation,
                    cpu_count, total_memory_bytes, platform, argv
    config          the resolved RunConfig
    model           spec, source, arch, trained_context, num_layers
    runs[]          method, label, position_mode, sink_size, recent_size, capacity, engine, dtype,
                    max_tokens, sample, tokens_scored, nll_mean (nats/token), ppl, acc, tok_per_s,
                    seconds, peak_rss_bytes, tokens_file (npz with nll, correct, query_pos, n_keys)
    comparisons[]   max_tokens, baseline, method, num_samples, tokens_scored, baseline_ppl, method_ppl,
                    nll_gap_mean (baseline - method; > 0: the method looks better), acc_diff
                    (method - baseline)
    verdicts[]      filled by the hypothesis experiments
    failures[]      key, error: units that crashed (an out-of-memory error names the flags to change)
    inputs          text_tokens, samples_sha256 (a resumed run checks that its samples are unchanged)
    status          "running" | "interrupted" (Ctrl-C / SIGTERM; resume with ``run --resume``) |
                    "failed" (an internal error) | "complete"

A run with NaN/inf NLL gets ``nonfinite`` (see :mod:`anomaly_probe.nonfinite`); its ``nll_mean`` and
``ppl`` are then null. The file is rewritten atomically after every finished run, so it is always
valid JSON.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

SCHEMA_VERSION = 1


def _clean(obj):
    """JSON-safe copy: numpy scalars to Python, non-finite floats to None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` atomically (temp file + rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_clean(data), indent=2, allow_nan=False))
    os.replace(tmp, path)


def read_results(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "results.json").read_text())


def save_tokens(path: Path, scores) -> None:
    """Per-token arrays of one run (``nll``, ``correct``, ``query_pos``, ``n_keys``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, nll=scores.nll, correct=scores.correct, query_pos=scores.query_pos,
                        n_keys=scores.n_keys)


def load_tokens(run_dir: Path, run: dict) -> dict[str, np.ndarray]:
    with np.load(Path(run_dir) / run["tokens_file"]) as z:
        return {k: z[k] for k in z.files}


def compare(runs: list[dict], baseline_label: str, method_label: str, max_tokens: int,
            arrays: dict[int, dict[str, dict[str, np.ndarray]]]) -> dict:
    """Baseline vs method over all samples at one length, on the same tokens.

    Parameters
    ----------
    arrays : dict
        ``arrays[sample][label]`` holds the per-token arrays of that run.

    Non-finite NLL: both runs of a sample are cut at the first NaN/inf entry of either
    (:mod:`anomaly_probe.finite_prefix`); ``nonfinite_excluded_tokens`` counts what was cut.
    """
    from anomaly_probe.finite_prefix import common_cut

    parts: dict[str, list[np.ndarray]] = {"bn": [], "mn": [], "bc": [], "mc": []}
    excluded = 0
    for s in sorted(arrays):
        b, m = arrays[s][baseline_label], arrays[s][method_label]
        n = min(len(b["nll"]), len(m["nll"]))
        cut = common_cut([b["nll"][:n], m["nll"][:n]])  # non-finite NLL: both runs cut at the first one
        excluded += 0 if cut is None else n - cut
        n = n if cut is None else cut
        for key, arr in (("bn", b["nll"]), ("mn", m["nll"]), ("bc", b["correct"]), ("mc", m["correct"])):
            parts[key].append(arr[:n])
    base_nll, meth_nll, base_cor, meth_cor = (np.concatenate(parts[k]) for k in ("bn", "mn", "bc", "mc"))
    base_acc, meth_acc = _mean(base_cor), _mean(meth_cor)
    out = {
        "max_tokens": max_tokens,
        "baseline": baseline_label,
        "method": method_label,
        "num_samples": len(arrays),
        "tokens_scored": int(base_nll.size),
        "baseline_ppl": _ppl(_mean(base_nll)),
        "method_ppl": _ppl(_mean(meth_nll)),
        "baseline_acc": base_acc,
        "method_acc": meth_acc,
        "nll_gap_mean": _mean(base_nll - meth_nll),
        "acc_diff": meth_acc - base_acc,
    }
    if excluded:
        out["nonfinite_excluded_tokens"] = int(excluded)
    return out


def _mean(x: np.ndarray) -> float:
    """Mean as a float; NaN for no entries (written as null)."""
    return float(x.mean()) if x.size else float("nan")


def _ppl(nll_mean: float) -> float:
    if not math.isfinite(nll_mean):
        return float("nan") if math.isnan(nll_mean) else float("inf")
    return math.exp(nll_mean) if nll_mean < 700 else float("inf")
