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
    status          "running" | "complete"

The file is rewritten atomically after every finished run, so it is always valid JSON.
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
    """
    base_nll = np.concatenate([arrays[s][baseline_label]["nll"] for s in sorted(arrays)])
    meth_nll = np.concatenate([arrays[s][method_label]["nll"] for s in sorted(arrays)])
    base_acc = np.concatenate([arrays[s][baseline_label]["correct"] for s in sorted(arrays)]).mean()
    meth_acc = np.concatenate([arrays[s][method_label]["correct"] for s in sorted(arrays)]).mean()
    return {
        "max_tokens": max_tokens,
        "baseline": baseline_label,
        "method": method_label,
        "num_samples": len(arrays),
        "tokens_scored": int(base_nll.size),
        "baseline_ppl": _ppl(base_nll.mean()),
        "method_ppl": _ppl(meth_nll.mean()),
        "baseline_acc": float(base_acc),
        "method_acc": float(meth_acc),
        "nll_gap_mean": float((base_nll - meth_nll).mean()),
        "acc_diff": float(meth_acc - base_acc),
    }


def _ppl(nll_mean: float) -> float:
    return math.exp(nll_mean) if nll_mean < 700 else float("inf")
