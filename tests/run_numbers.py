"""What a run folder computed, timings aside: for tests that two runs (resumed, retried, another executor,
another working directory) give the same numbers. The one list of timing fields lives here."""

from __future__ import annotations

import json

import numpy as np

TIMINGS = frozenset({"seconds", "tok_per_s", "peak_rss_bytes", "trace_bytes_per_step", "unit_seconds",
                     "trace_seconds"})
"""Run-record fields that measure time or memory (they differ between identical runs)."""


def run_numbers(run_dir) -> tuple[dict, dict, dict]:
    """``(results, runs, arrays)``: the parsed results.json, each unit's record without :data:`TIMINGS`, and
    each unit's per-token arrays as lists."""
    res = json.loads((run_dir / "results.json").read_text())
    runs = {r["key"]: {k: v for k, v in r.items() if k not in TIMINGS} for r in res["runs"]}
    arrays = {}
    for r in res["runs"]:
        with np.load(run_dir / r["tokens_file"]) as z:
            arrays[r["key"]] = {k: z[k].tolist() for k in z.files}
    return res, runs, arrays
