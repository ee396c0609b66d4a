"""The ``anomaly-probe sweep`` flags (grid axes take several values; the rest say where and how it runs)."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  anomaly-probe sweep --model smollm2-135m --max-tokens 2000 4000 8000 12000 --num-samples 1 --hypothesis position
  anomaly-probe sweep --model tiny-neox:hidden=32 tiny-neox:hidden=64 --max-tokens 256 512 --recent-size 28 60
  anomaly-probe sweep --model smollm2-135m --max-tokens 2000 8000 --trained-context auto 4096 --sink-size 0 4
  anomaly-probe sweep --grid grid.toml --executor ray --address local --ray-cpus 2   # a throwaway local Ray instance
  anomaly-probe sweep --grid grid.toml --executor ray --address ray://head:10001 --out reports/big-sweep
  anomaly-probe sweep --resume reports/20261130-101500-sweep    # after Ctrl-C, kill or failed cells
  anomaly-probe report reports/20261130-101500-sweep            # re-render the trend report
Each cell is an ordinary run folder under SWEEP_DIR/cells/; SWEEP_DIR/sweep.json indexes them and
SWEEP_DIR/report.html is the trend report. Complete cells are skipped when the sweep runs again.
exit code: 0 every cell complete, 1 some cell failed (the others ran), 2 bad input, 130 interrupted
"""


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Grid flags default to nothing (argparse SUPPRESS: unset axes take the ``run`` defaults)."""
    from anomaly_probe.hypotheses.catalog import HYPOTHESIS_CHOICES

    g = p.add_argument_group("grid (every flag with several values is an axis; cells = their cross product)")
    g.add_argument("--grid", default=None, metavar="FILE.toml",
                   help="the grid as a TOML file (top-level axes, optional [[row]] tables; see README)")
    g.add_argument("--model", nargs="+", metavar="M",
                   help="models (default smollm2-135m); tiny-neox:hidden=64,layers=2,heads=4,ffn=128,ctx=128 variants")
    g.add_argument("--trained-context", nargs="+", metavar="N|auto",
                   help="trained-context overrides (auto: the model config's)")
    g.add_argument("--max-tokens", nargs="+", type=_int, metavar="N", help="sample lengths (default 1024)")
    g.add_argument("--num-samples", nargs="+", type=_int, metavar="N", help="samples per cell (default 1)")
    g.add_argument("--method", nargs="+", metavar="NAME", help="streaming_llm (default), window, full")
    g.add_argument("--sink-size", nargs="+", type=_int, metavar="N", help="attention sinks (default 4)")
    g.add_argument("--recent-size", nargs="+", type=_int, metavar="N", help="recent tokens (default 252)")
    g.add_argument("--position-mode", nargs="+", metavar="MODE", help="in-cache (default), absolute, naive")
    g.add_argument("--dtype", nargs="+", metavar="D", help="auto (default), float32, float16, bfloat16")
    g.add_argument("--device", nargs="+", metavar="D", help="auto (default), cpu, cuda, mps")
    g.add_argument("--seed", nargs="+", type=_int, metavar="N", help="seeds (default 0)")
    g.add_argument("--hypothesis", nargs="+", metavar="NAME",
                   help=f"run in every cell: {', '.join(HYPOTHESIS_CHOICES)} (default none: baseline vs method)")
    g.add_argument("--engine", nargs="+", metavar="E", help="as for run (default auto)")
    g.add_argument("--chunk-size", nargs="+", type=_int, metavar="N", help="as for run")
    g.add_argument("--probes", nargs="+", metavar="P", help="as for run (default auto)")
    g.add_argument("--stepwise-tokens", nargs="+", type=_int, metavar="N", help="as for run (default 1024)")
    g.add_argument("--text", nargs="+", metavar="FILE", help="as for run (default pydoc_data.topics)")
    g.add_argument("--cpus", type=_number, metavar="N", help="CPUs per cell for --executor ray (default 1)")
    g.add_argument("--gpus", type=_number, metavar="N",
                   help="GPUs per cell for --executor ray (default 1 on a cuda device, else 0)")
    g = p.add_argument_group("execution")
    g.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local (default): cells in this process, one model load per model; ray: one Ray task per cell")
    g.add_argument("--address", default=None, metavar="ADDRESS",
                   help="Ray cluster address for --executor ray, or 'local' for a throwaway local Ray instance")
    g.add_argument("--ray-cpus", type=_int, default=None, metavar="N",
                   help="CPUs of the local Ray instance that --address local starts (default: every CPU here)")
    g.add_argument("--retries", type=_int, default=2, metavar="N",
                   help="Ray: times a cell whose worker died is retried before it is recorded as failed (default 2)")
    g.add_argument("--out", default=None, metavar="SWEEP_DIR", help="sweep folder (default reports/<time>-sweep)")
    g.add_argument("--resume", default=None, metavar="SWEEP_DIR",
                   help="continue a sweep with its saved grid: complete cells are skipped, the others run")
