"""Overhead of ``--probes all`` on the stepwise engine, measured side by side in one process.

Runs an unprobed and a probed stepwise scoring of the same SmolLM2 sample, alternating, several
times. Prints the trace size per step, each pair's ratio, the ratio of medians, and as its last line
``probe_overhead_ratio: X``: best probed time / best unprobed time (the minimum over repetitions, as
``timeit`` recommends: interference from other processes only ever adds time, so the best run is the
least disturbed). The goal is X <= 1.10.

On a shared machine the intra-op thread pool makes single runs very noisy (a descheduled worker
stalls every parallel op); ``--threads 1`` measures the probes' compute cost without that noise.

    .venv/bin/python benchmarks/probe_overhead.py [--tokens 512] [--reps 3] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import torch

    from anomaly_probe.engines import score_stepwise
    from anomaly_probe.methods import build_method
    from anomaly_probe.models import load_model
    from anomaly_probe.probes import PROBE_NAMES, ProbeSession, raw_bytes_per_step, save_trace, trace_steps
    from anomaly_probe.text import read_text, samples, tokenize

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--reps", type=int, default=3, help="probed/unprobed pairs (alternating)")
    ap.add_argument("--method", default="full", help="cache method (default full: the stepwise reference)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    lm = load_model(args.model, device=torch.device("cpu"), dtype=torch.float32)
    model = lm.model
    ids = samples(tokenize(lm.tokenizer, read_text(None)), args.tokens, 1)[0]
    method = build_method(args.method, sink_size=4, recent_size=252, position_mode="in-cache")
    print(f"model {args.model}, {args.tokens} tokens, method {method.label()}, stepwise engine, "
          f"{torch.get_num_threads()} torch threads, probes {', '.join(PROBE_NAMES)}")

    score_stepwise(model, ids[:32], method)  # warm-up (allocator, kernels)
    plain, probed, plain_cpu, probed_cpu = [], [], [], []
    trace = None
    for rep in range(args.reps):
        for kind in (("plain", "probed") if rep % 2 == 0 else ("probed", "plain")):
            start, cpu = time.perf_counter(), time.process_time()
            if kind == "plain":
                ref = score_stepwise(model, ids, method)
                plain.append(time.perf_counter() - start)
                plain_cpu.append(time.process_time() - cpu)
            else:
                with ProbeSession(model, PROBE_NAMES) as probes:
                    out = score_stepwise(model, ids, method, observer=probes)
                trace = probes.trace()  # assembling the trace is part of the cost
                probed.append(time.perf_counter() - start)
                probed_cpu.append(time.process_time() - cpu)
        print(f"rep {rep}: plain {plain[-1]:.2f} s, probed {probed[-1]:.2f} s, ratio {probed[-1] / plain[-1]:.3f} "
              f"(process CPU time ratio {probed_cpu[-1] / plain_cpu[-1]:.3f})", flush=True)
        if not np.array_equal(ref.nll, out.nll):
            raise SystemExit("probes changed the model's NLL")

    with tempfile.TemporaryDirectory() as tmp:
        stored = save_trace(Path(tmp) / "trace.npz", trace)
    steps = trace_steps(trace)
    print(f"trace: {steps} steps, {len(trace)} columns, {raw_bytes_per_step(trace):.0f} bytes/step in memory, "
          f"{stored / steps:.0f} bytes/step stored (npz, compressed)")
    print(f"median plain {statistics.median(plain):.2f} s, median probed {statistics.median(probed):.2f} s, "
          f"ratio of medians {statistics.median(probed) / statistics.median(plain):.3f}; process CPU time ratio "
          f"{statistics.median(probed_cpu) / statistics.median(plain_cpu):.3f}")
    print(f"best plain {min(plain):.2f} s, best probed {min(probed):.2f} s")
    print(f"probe_overhead_ratio: {min(probed) / min(plain):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
