"""Engine throughput on SmolLM2-135M, measured side by side in one process.

StreamingLLM 4+252 (in-cache) over the first ``--tokens`` tokens of the default text, scored by the
stepwise reference and by the parallel engine; and the full cache in one batched forward over the same
tokens (the speed ceiling of a forward pass). Prints tokens/s per engine, the largest per-token NLL
difference between stepwise and parallel, the parallel / batched ratio and, as its last line,
``parallel_speedup: X`` (parallel tok/s over stepwise tok/s).

The fast runs are repeated ``--repeats`` times, interleaved, and their median is reported; the stepwise
run (minutes) is done once. Other processes on the machine slow every engine: the load average is
printed so a contended run can be recognised.

    .venv/bin/python benchmarks/engines.py
    .venv/bin/python benchmarks/engines.py --tokens 2048 --repeats 5 --chunk-size 256
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    import numpy as np
    import torch

    from anomaly_probe.engines import score_batched, score_parallel, score_stepwise
    from anomaly_probe.engines.parallel import DEFAULT_CHUNK
    from anomaly_probe.methods import FullCache, StreamingLLM
    from anomaly_probe.models import load_model
    from anomaly_probe.text import default_text, tokenize

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each fast engine (median reported)")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK, help="queries per parallel forward")
    args = parser.parse_args()

    lm = load_model("smollm2-135m", device=torch.device("cpu"), dtype=torch.float32)
    ids = tokenize(lm.tokenizer, default_text())[:args.tokens]
    T = ids.numel()
    method = StreamingLLM(sink_size=4, recent_size=252, position_mode="in-cache")
    print(f"SmolLM2-135M float32 on CPU ({torch.get_num_threads()} threads), {T} tokens, {method.label()}, "
          f"parallel chunk {args.chunk_size}; load average {_load()}", flush=True)

    score_parallel(lm.model, ids[:600], method, chunk_size=args.chunk_size)  # warm-up
    score_batched(lm.model, ids[:600], FullCache(), chunk_size=600)
    batched_rates, parallel_rates, parallel = [], [], None
    for _ in range(args.repeats):
        b = score_batched(lm.model, ids, FullCache(), chunk_size=T)  # one forward over all tokens
        batched_rates.append(b.summary()["tok_per_s"])
        parallel = score_parallel(lm.model, ids, method, chunk_size=args.chunk_size)
        parallel_rates.append(parallel.summary()["tok_per_s"])
    batched_rate, parallel_rate = statistics.median(batched_rates), statistics.median(parallel_rates)
    print(f"batched full cache (1 forward): {batched_rate:8.1f} tok/s  (runs: "
          f"{', '.join(f'{r:.0f}' for r in batched_rates)})", flush=True)
    print(f"parallel {method.label()}: {parallel_rate:8.1f} tok/s  (runs: "
          f"{', '.join(f'{r:.0f}' for r in parallel_rates)}; peak RSS {parallel.peak_rss_bytes / 2**20:.0f} MiB)",
          flush=True)

    start = time.perf_counter()
    stepwise = score_stepwise(lm.model, ids, method)
    stepwise_rate = stepwise.summary()["tok_per_s"]
    print(f"stepwise {method.label()}: {stepwise_rate:8.1f} tok/s  ({time.perf_counter() - start:.0f} s)")
    d = np.abs(stepwise.nll - parallel.nll)
    print(f"max |dNLL| stepwise vs parallel: {d.max():.2e} nats over {d.size} tokens "
          f"(mean NLL {stepwise.nll.mean():.6f} vs {parallel.nll.mean():.6f})")
    print(f"parallel / batched full-cache throughput: {parallel_rate / batched_rate:.2f}")
    print(f"load average at the end: {_load()}")
    print(f"parallel_speedup: {parallel_rate / stepwise_rate:.1f}")


if __name__ == "__main__":
    main()
