"""Engine throughput on SmolLM2-135M, measured side by side in one process.

StreamingLLM 4+252 (in-cache) over the first ``--tokens`` tokens of the default text, scored by the
stepwise reference and by the parallel engine; and the full cache in one batched forward over the same
tokens (the speed ceiling of a forward pass). Prints tokens/s per engine, the largest per-token NLL
difference between stepwise and parallel, the parallel / batched ratio and, as its last line,
``parallel_speedup: X`` (parallel tok/s over stepwise tok/s).

Then H2O (heavy 128 + recent 128, in-cache) evicting every ``--compress-every`` tokens (default 64),
scored by the stepwise reference and by the chunked engine with the same interval (C tokens per
forward): tokens/s of each, their largest per-token NLL difference, and, as the very last line,
``chunked_speedup: X`` (chunked tok/s over stepwise tok/s; the goal is >= 10). ``--only chunked`` skips
the StreamingLLM part.

The fast runs are repeated ``--repeats`` times, interleaved, and their median is reported; the stepwise
run (minutes) is done once.

Stepwise thread count (``--stepwise-threads-tokens``, default 256): single-token forwards suffer from
intra-op thread oversubscription on a busy machine, so the stepwise engine picks its thread count by
measurement (``engines/step_threads.py``). This section times the stepwise engine on the first tokens
at one thread and at torch's default count, idle and then with one competing CPU-bound process (a busy
loop in a child process), and prints what the measurement chose in each case.

Other processes on the machine slow every engine: the load average is printed so a contended run can be
recognised, and each engine's process CPU time per token is printed beside its wall-clock rate (less sensitive to other processes, though thread spinning still inflates it).

    .venv/bin/python benchmarks/engines.py
    .venv/bin/python benchmarks/engines.py --tokens 2048 --repeats 5 --chunk-size 256
    .venv/bin/python benchmarks/engines.py --only chunked --compress-every 64
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time


def _busy(stop) -> None:
    """A competing CPU-bound process: spins until ``stop`` is set."""
    x = 0
    while not stop.is_set():
        for _ in range(100000):
            x += 1


def stepwise_threads_section(model, ids, method, n_tokens: int) -> None:
    """Stepwise tok/s at one thread and at the default count, idle and against a busy process."""
    import torch

    from anomaly_probe.engines import score_stepwise
    from anomaly_probe.engines.step_threads import _measure, candidates

    default = torch.get_num_threads()
    counts = candidates(default)
    part = ids[:n_tokens]
    for contended in (False, True):
        stop = multiprocessing.Event()
        busy = multiprocessing.Process(target=_busy, args=(stop,), daemon=True) if contended else None
        if busy is not None:
            busy.start()
        try:
            chosen = _measure(model, torch.device("cpu"), counts) if default > 1 else 1
            rates = {n: score_stepwise(model, part, method, threads=n).summary()["tok_per_s"] for n in counts}
        finally:
            if busy is not None:
                stop.set()
                busy.join()
        where = "with one competing CPU-bound process" if contended else "idle (apart from other users)"
        line = ", ".join(f"{n} thread{'s' if n > 1 else ''} {r:.1f} tok/s" for n, r in rates.items())
        best = max(rates, key=rates.get)
        print(f"stepwise threads, {where}: {line}; fastest {best}, measurement chose {chosen}; "
              f"load average {_load()}", flush=True)


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _timed(fn):
    """``(scores, cpu_seconds)``: the run and the process CPU time it used."""
    cpu = time.process_time()
    scores = fn()
    return scores, time.process_time() - cpu


def main() -> None:
    import torch

    from anomaly_probe.config import DEFAULT_CHUNK
    from anomaly_probe.models import load_model
    from anomaly_probe.text import default_text, tokenize

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each fast engine (median reported)")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK, help="queries per parallel forward")
    parser.add_argument("--compress-every", type=int, default=64, help="H2O eviction interval (chunked engine)")
    parser.add_argument("--only", choices=("all", "chunked"), default="all", help="chunked: the H2O part only")
    parser.add_argument("--stepwise-threads-tokens", type=int, default=256,
                        help="tokens per stepwise thread-count run (0: skip that section)")
    args = parser.parse_args()

    lm = load_model("smollm2-135m", device=torch.device("cpu"), dtype=torch.float32)
    ids = tokenize(lm.tokenizer, default_text())[:args.tokens]
    if args.only == "all":
        parallel_section(lm, ids, args)
    chunked_section(lm, ids, args.compress_every)


def parallel_section(lm, ids, args) -> None:
    """StreamingLLM: stepwise vs parallel, and the batched full cache (prints ``parallel_speedup``)."""
    import numpy as np
    import torch

    from anomaly_probe.engines import score_batched, score_parallel, score_stepwise
    from anomaly_probe.methods import FullCache, StreamingLLM

    T = ids.numel()
    method = StreamingLLM(sink_size=4, recent_size=252, position_mode="in-cache")
    print(f"SmolLM2-135M float32 on CPU ({torch.get_num_threads()} threads), {T} tokens, {method.label()}, "
          f"parallel chunk {args.chunk_size}; load average {_load()}", flush=True)

    if args.stepwise_threads_tokens:
        stepwise_threads_section(lm.model, ids, method, args.stepwise_threads_tokens)
    score_parallel(lm.model, ids[:600], method, chunk_size=args.chunk_size)  # warm-up
    score_batched(lm.model, ids[:600], FullCache(), chunk_size=600)
    rates: dict[str, list[float]] = {"batched": [], "parallel": []}
    cpu: dict[str, list[float]] = {"batched": [], "parallel": []}  # CPU ms per token
    parallel = None
    for _ in range(args.repeats):
        b, c = _timed(lambda: score_batched(lm.model, ids, FullCache(), chunk_size=T))  # one forward, all tokens
        rates["batched"].append(b.summary()["tok_per_s"])
        cpu["batched"].append(1e3 * c / b.tokens_scored)
        parallel, c = _timed(lambda: score_parallel(lm.model, ids, method, chunk_size=args.chunk_size))
        rates["parallel"].append(parallel.summary()["tok_per_s"])
        cpu["parallel"].append(1e3 * c / parallel.tokens_scored)
    med = {k: statistics.median(v) for k, v in rates.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    runs = {k: ", ".join(f"{r:.0f}" for r in v) for k, v in rates.items()}
    print(f"batched full cache (1 forward): {med['batched']:8.1f} tok/s  {med_cpu['batched']:6.2f} CPU ms/tok  "
          f"(runs: {runs['batched']} tok/s)", flush=True)
    print(f"parallel {method.label()}: {med['parallel']:8.1f} tok/s  {med_cpu['parallel']:6.2f} CPU ms/tok  "
          f"(runs: {runs['parallel']} tok/s; peak RSS {parallel.peak_rss_bytes / 2**20:.0f} MiB)", flush=True)

    stepwise, c = _timed(lambda: score_stepwise(lm.model, ids, method))  # its measured thread count
    stepwise_rate, stepwise_cpu = stepwise.summary()["tok_per_s"], 1e3 * c / stepwise.tokens_scored
    print(f"stepwise {method.label()}: {stepwise_rate:8.1f} tok/s  {stepwise_cpu:6.2f} CPU ms/tok  "
          f"({stepwise.seconds:.0f} s, {stepwise.extra.get('threads')} threads by measurement)")
    d = np.abs(stepwise.nll - parallel.nll)
    print(f"max |dNLL| stepwise vs parallel: {d.max():.2e} nats over {d.size} tokens "
          f"(mean NLL {stepwise.nll.mean():.6f} vs {parallel.nll.mean():.6f})")
    print(f"parallel / batched full-cache throughput: {med['parallel'] / med['batched']:.2f} "
          f"(CPU time: {med_cpu['batched'] / med_cpu['parallel']:.2f})")
    print(f"speedup in CPU time per token: {stepwise_cpu / med_cpu['parallel']:.1f}")
    print(f"load average at the end: {_load()}")
    print(f"parallel_speedup: {med['parallel'] / stepwise_rate:.1f}", flush=True)


def chunked_section(lm, ids, every: int) -> None:
    """H2O every ``every`` tokens: stepwise vs chunked with the same interval (prints ``chunked_speedup`` last)."""
    import numpy as np

    from anomaly_probe.engines import score_chunked, score_stepwise
    from anomaly_probe.methods import H2O

    method = H2O(heavy_size=128, recent_size=128, position_mode="in-cache", compress_every=every)
    print(f"{method.label()} on {ids.numel()} tokens; load average {_load()}", flush=True)
    score_chunked(lm.model, ids[:600], method)  # warm-up
    chunked, c_cpu = _timed(lambda: score_chunked(lm.model, ids, method))
    c_rate = chunked.summary()["tok_per_s"]
    print(f"chunked {method.label()}: {c_rate:8.1f} tok/s  {1e3 * c_cpu / chunked.tokens_scored:6.2f} CPU ms/tok  "
          f"({chunked.seconds:.0f} s)", flush=True)
    stepwise, s_cpu = _timed(lambda: score_stepwise(lm.model, ids, method))
    s_rate = stepwise.summary()["tok_per_s"]
    print(f"stepwise {method.label()}: {s_rate:8.1f} tok/s  {1e3 * s_cpu / stepwise.tokens_scored:6.2f} CPU ms/tok  "
          f"({stepwise.seconds:.0f} s)")
    d = np.abs(stepwise.nll - chunked.nll)
    print(f"max |dNLL| stepwise vs chunked: {d.max():.2e} nats over {d.size} tokens "
          f"(mean NLL {stepwise.nll.mean():.6f} vs {chunked.nll.mean():.6f})")
    print(f"speedup in CPU time per token: {s_cpu / c_cpu:.1f}; load average at the end: {_load()}")
    print(f"chunked_speedup: {c_rate / s_rate:.1f}")


if __name__ == "__main__":
    main()
