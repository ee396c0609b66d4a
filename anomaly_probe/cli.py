"""``anomaly-probe`` command line: argparse subcommands with grouped arguments.

Every user error ends with one line on stderr and exit code 2; no traceback reaches the user.
"""

from __future__ import annotations

import argparse
import os
import sys

from anomaly_probe.errors import UserError

EPILOG_RUN = """examples:
  anomaly-probe run --hypothesis none --max-tokens 512 --num-samples 2
  anomaly-probe run --hypothesis none --model tiny-neox --max-tokens 300 --method window
  anomaly-probe run --hypothesis none --method full --engine stepwise --max-tokens 512
  anomaly-probe run --model EleutherAI/pythia-6.9b --max-tokens 1000 2000 5000 --num-samples 3
  anomaly-probe run --resume reports/20261129-174200-smollm2-135m   # continue after Ctrl-C, kill or a crash
  anomaly-probe run --retry-failed reports/20261129-174200-smollm2-135m   # score its failed units again
exit code: 0 done, 1 finished with failed units or the run folder could not be written (resume with
--resume RUN_DIR), 2 bad input, 130 interrupted (finished units are kept: resume with --resume RUN_DIR)
"""


EPILOG_CHECK = """examples:
  anomaly-probe check                                            # reference engines on tiny-neox (seconds)
  anomaly-probe check --model tiny-gemma3                        # a hybrid sliding/full model, two RoPE bases
  anomaly-probe check --scorer my_eval.py:score --junit check.xml  # your scorer vs the reference, for CI
  anomaly-probe check --model EleutherAI/pythia-70m --max-tokens 600 --recent-size 252 --only engines
exit code: 0 all checks passed, 1 a check failed, 2 bad input (flags, --scorer, scorer output)
"""


EPILOG_IMPORT = """examples:
  anomaly-probe import --baseline base.csv --method stream.csv --trained-context 2048
  anomaly-probe import --baseline base.jsonl --method stream.jsonl --model-config ./pythia/config.json --out RUN_DIR
  anomaly-probe import --baseline b.csv --method m.csv --nll-col loss_nats --pos-col t --sample-col doc
  anomaly-probe import --baseline outputs/transformers.csv --method outputs/attention_sinks.csv --trained-context 4096
  anomaly-probe import --baseline dense/log.txt --method streaming/log.txt --trained-context 4096
  anomaly-probe export RUN_DIR   # prints the import command that reads its baseline and method back
"""


EPILOG_REPORT = """examples:
  anomaly-probe report reports/20260101-120000-smollm2-135m
  anomaly-probe report reports/20260101-120000-sweep        # a sweep folder: its trend report
  anomaly-probe report RUN_A RUN_B --out compare.html
"""


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see `{self.prog} --help`)")


def _positive_or_any_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def build_parser(defaults: bool = True) -> argparse.ArgumentParser:
    """The whole command line. ``defaults=False``: ``run`` without defaults, so a parse holds only the
    flags that were typed (``run --resume`` checks those against the saved run)."""
    parser = _Parser(prog="anomaly-probe", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    run = sub.add_parser("run", help="score baseline vs method and test hypotheses", epilog=EPILOG_RUN,
                         formatter_class=argparse.RawDescriptionHelpFormatter, argument_default=argparse.SUPPRESS)
    _add_run_arguments(run)
    if defaults:
        run.set_defaults(**run_defaults())
    _add_report_arguments(sub.add_parser("report", help="re-render report.html and figures from saved runs",
                                         epilog=EPILOG_REPORT, formatter_class=argparse.RawDescriptionHelpFormatter))
    _add_check_arguments(sub.add_parser("check", help="sanity checks of the engines and of your own scorer (CI)",
                                        epilog=EPILOG_CHECK, formatter_class=argparse.RawDescriptionHelpFormatter))
    _add_import_arguments(sub.add_parser("import", help="diagnose per-token logs written by other tools",
                                         epilog=EPILOG_IMPORT, formatter_class=argparse.RawDescriptionHelpFormatter))
    _add_export(sub)
    _add_sweep(sub)
    return parser


def run_defaults() -> dict:
    """Defaults of the ``run`` flags: the :class:`~anomaly_probe.config.RunConfig` defaults, except that
    the command line tests every hypothesis unless told otherwise."""
    from dataclasses import asdict

    from anomaly_probe.config import RunConfig

    defaults = asdict(RunConfig())
    del defaults["hypotheses"]
    return defaults | {"hypothesis": ["all"], "resume": None, "retry_failed": None}


def _add_model_arguments(g, model_help: str, trained_context: bool = False) -> None:
    """``--model`` (and ``--trained-context``) and ``--text``, shared by run and check (defaults: the caller's)."""
    g.add_argument("--model", help=model_help)
    if trained_context:
        g.add_argument("--trained-context", type=_positive_or_any_int,
                       help="override the trained context read from the model config (tokens)")
    g.add_argument("--text", help=".txt or .jsonl (field 'text'); default: pydoc_data.topics")


def _add_device_arguments(g) -> None:
    """``--device``, ``--dtype`` and ``--seed``, shared by run and check (defaults: the caller's)."""
    from anomaly_probe.device import DEVICES, DTYPES

    g.add_argument("--device", help=f"one of {', '.join(DEVICES)}")
    g.add_argument("--dtype", help=f"auto (float32 on CPU, float16 on GPU), {', '.join(DTYPES)}")
    g.add_argument("--seed", type=_positive_or_any_int)


def _add_run_arguments(run: argparse.ArgumentParser) -> None:
    """The ``run`` flags, without defaults (see :func:`run_defaults`)."""
    from anomaly_probe.engines import ENGINE_CHOICES
    from anomaly_probe.hypotheses.catalog import HYPOTHESIS_CHOICES

    g = run.add_argument_group("what to diagnose")
    g.add_argument("--hypothesis", nargs="+", metavar="NAME",
                   help=f"one or more of: {', '.join(HYPOTHESIS_CHOICES)} (default: all)")
    g = run.add_argument_group("model and text")
    _add_model_arguments(g, "smollm2-135m (default), tiny-neox, a hub ID, a local folder or a .gguf file",
                         trained_context=True)
    g.add_argument("--max-tokens", type=_positive_or_any_int, nargs="+", metavar="N",
                   help="sample length(s) in tokens (default 1024)")
    g.add_argument("--num-samples", type=_positive_or_any_int, help="non-overlapping samples per length")
    g = run.add_argument_group("KV-cache method")
    g.add_argument("--method", help="streaming_llm (default), window, full, h2o, tova, knorm, kv_quant, or your "
                   "policy: path/to/file.py:ClassName or module:ClassName")
    g.add_argument("--method-arg", action="append", dest="method_args", metavar="KEY=VALUE",
                   help="an option of the method, typed by its dataclass fields (repeatable), e.g. heavy_size=128, "
                   "recent_size=128; kv_quant: bits=4, base=h2o, group_size=32, key_group, value_group")
    g.add_argument("--sink-size", type=_positive_or_any_int, help="attention sinks kept (default 4; streaming_llm "
                   "and window: other policies take --method-arg sink_size=N)")
    g.add_argument("--recent-size", type=_positive_or_any_int,
                   help="recent tokens kept (default 252); the window method keeps sink+recent recent tokens")
    g.add_argument("--position-mode", help="in-cache (default), absolute or naive")
    g.add_argument("--compress-every", type=_positive_or_any_int, metavar="C",
                   help="evict every C tokens (default 1); C > 1: the chunked engine scores C tokens per forward")
    g.add_argument("--policy-on-sliding", action="store_true",
                   help="apply the method to sliding-window layers too (default: full-attention layers only; "
                        "a model without full layers always gets it on its sliding layers)")
    g = run.add_argument_group("execution")
    g.add_argument("--engine", help=f"one of {', '.join(ENGINE_CHOICES)}")
    g.add_argument("--chunk-size", type=_positive_or_any_int, help="queries per forward in the batched engine")
    _add_device_arguments(g)
    g.add_argument("--stepwise-tokens", type=_positive_or_any_int,
                   help="eval-bias: the token loop scores this prefix of each sample (0: all; default 1024)")
    g.add_argument("--probes", help="auto (default: cache, process), all, none, or NAME,... "
                   "(attention, cache, process); the attention probe costs O(T^2) per run")
    g.add_argument("--probe-stride", type=_positive_or_any_int, metavar="N",
                   help="probes record every Nth query (absolute index a multiple of N; default 1: all)")
    g.add_argument("--out", help="run folder (default reports/<time>-<model>)")
    g = run.add_argument_group("interrupted runs")
    g.add_argument("--resume", metavar="RUN_DIR",
                   help="continue the run in RUN_DIR with its saved settings, skipping finished units "
                        "(other run flags must match the saved ones); units that failed are scored again")
    g.add_argument("--retry-failed", metavar="RUN_DIR",
                   help="like --resume, and says so: score the units of RUN_DIR that failed (out of memory, disk "
                        "full, ...) again, keep the others, judge everything again")


def _add_sweep(sub) -> None:
    from anomaly_probe.sweep.cli_args import EPILOG, add_arguments

    add_arguments(sub.add_parser("sweep", help="a grid of runs (models x lengths x methods ...) and its trend report",
                                 epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 argument_default=argparse.SUPPRESS))


def _add_export(sub) -> None:
    from anomaly_probe.export.command import add_arguments

    add_arguments(sub.add_parser("export", help="write a run's per-token logs as CSV files that import reads back"))


def _add_check_arguments(chk: argparse.ArgumentParser) -> None:
    chk.description = ("Sanity checks, each passing or failing on its own: stepwise == batched, capacity >= length "
                       "== full, probes change nothing, same seed == same result, token accounting, finite NLL, "
                       "stepwise == parallel per method and position mode; with --scorer, your scorer vs the "
                       "reference.")
    g = chk.add_argument_group("model and samples")
    _add_model_arguments(g, "tiny-neox (default, seconds), smollm2-135m, a hub ID, a folder or a .gguf file")
    g.add_argument("--max-tokens", type=_positive_or_any_int, default=256, metavar="N",
                   help="tokens per sample (default 256; must exceed sink + recent + 1)")
    g.add_argument("--num-samples", type=_positive_or_any_int, default=2,
                   help="samples, scored in sequence (default 2)")
    g = chk.add_argument_group("KV-cache method")
    g.add_argument("--method", default="streaming_llm", help="streaming_llm (default), window, h2o, tova, knorm, "
                   "kv_quant or your policy (file.py:ClassName, module:ClassName): checked, and given to --scorer")
    g.add_argument("--method-arg", action="append", dest="method_args", default=None, metavar="KEY=VALUE",
                   help="an option of the method (repeatable), as for run")
    g.add_argument("--sink-size", type=_positive_or_any_int, default=4, help="attention sinks (default 4)")
    g.add_argument("--recent-size", type=_positive_or_any_int, default=60, help="recent tokens (default 60)")
    g.add_argument("--position-mode", default="in-cache", help="in-cache (default), absolute or naive")
    g.add_argument("--compress-every", type=_positive_or_any_int, default=1, metavar="C",
                   help="evict every C tokens (default 1)")
    g.add_argument("--policy-on-sliding", action="store_true",
                   help="apply the method to sliding-window layers too (default: full-attention layers only)")
    g = chk.add_argument_group("checks and output")
    g.add_argument("--scorer", default=None, metavar="MODULE:FUNCTION",
                   help="your scorer, module:function or path/file.py:function; "
                        "fn(model, input_ids (1, T), method: dict) -> T-1 per-token NLL (nats)")
    g.add_argument("--scorer-timeout", type=float, default=600.0, metavar="SECONDS",
                   help="seconds one scorer call (one sample) may take before its check fails (default 600)")
    g.add_argument("--only", nargs="+", default=None, metavar="PATTERN",
                   help="run only checks matching these globs or dotted prefixes (e.g. engines scorer)")
    g.add_argument("--tolerance", type=float, default=None,
                   help="max |dNLL| in nats for 'equal' (default by dtype: float32 1e-4, float16 2e-2, bfloat16 1e-1)")
    g.add_argument("--json", default=None, metavar="FILE", help="write every check as JSON")
    g.add_argument("--junit", default=None, metavar="FILE", help="write JUnit XML (one testcase per check)")
    g = chk.add_argument_group("execution")
    _add_device_arguments(g)
    chk.set_defaults(model="tiny-neox", text=None, device="auto", dtype="auto", seed=0)


def _add_import_arguments(imp: argparse.ArgumentParser) -> None:
    imp.description = ("Read per-token logs (CSV or JSONL, one file per method) written by another evaluation script "
                       "and run every hypothesis that needs no model; write results.json and the report.")
    g = imp.add_argument_group("logs")
    g.add_argument("--baseline", required=True, nargs="+", metavar="FILE",
                   help="per-token log(s) of the full cache (several files: their samples together)")
    g.add_argument("--method", required=True, nargs="+", metavar="FILE",
                   help="per-token log(s) of the method under test")
    g.add_argument("--format", default="auto", help="auto (default: from the header or content), ours, "
                   "attention-sinks, streaming-llm, csv, tsv, jsonl")
    g.add_argument("--method-label", default=None, help="name of the method (default: the file name)")
    g = imp.add_argument_group("columns (default: common spellings, see README)")
    for flag, what in (("--nll-col", "per-token NLL in nats (nll, loss, neg_log_likelihood)"),
                       ("--pos-col", "token index (input_length, position, token, step, idx, index)"),
                       ("--sample-col", "sample id (sample, sample_id, doc, sequence)"),
                       ("--memory-col", "memory (memory, vram, rss, mem_bytes)"),
                       ("--latency-col", "seconds per token (latency, time, seconds)"),
                       ("--correct-col", "top-1 correct 0/1 (correct, top1, acc)")):
        g.add_argument(flag, default=None, metavar="NAME", help=what)
    g.add_argument("--memory-unit", default=None,
                   help="unit of the memory column: B (default; GiB for attention-sinks), KiB, MiB, GiB, KB, MB, GB")
    g = imp.add_argument_group("model facts")
    g.add_argument("--trained-context", type=_positive_or_any_int, default=None, metavar="N",
                   help="the model's trained context (tokens)")
    g.add_argument("--model-config", default=None, metavar="PATH",
                   help="config.json, a folder holding it, or a cached hub ID: max_position_embeddings")
    g.add_argument("--out", default=None, help="run folder (default reports/<time>-import)")


def _add_report_arguments(rep: argparse.ArgumentParser) -> None:
    rep.description = ("Re-render a run's report (RUN_DIR/report.html, RUN_DIR/figures/*.png) from results.json\n"
                       "without loading a model; with several run folders, write one comparison report.")
    rep.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folder(s) written by `anomaly-probe run`")
    rep.add_argument("--out", default=None, metavar="FILE",
                     help="HTML file to write (default RUN_DIR/report.html, or FIRST_RUN_DIR/compare.html)")


def build_import_parser() -> argparse.ArgumentParser:
    """``anomaly-probe import`` alone: like ``report`` it needs no torch."""
    parser = _Parser(prog="anomaly-probe")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    _add_import_arguments(sub.add_parser("import", epilog=EPILOG_IMPORT,
                                         formatter_class=argparse.RawDescriptionHelpFormatter))
    return parser


def build_export_parser() -> argparse.ArgumentParser:
    """``anomaly-probe export`` alone (no torch)."""
    parser = _Parser(prog="anomaly-probe")
    _add_export(parser.add_subparsers(dest="command", parser_class=_Parser))
    return parser


def build_report_parser() -> argparse.ArgumentParser:
    """``anomaly-probe report`` alone: imports nothing heavy (no torch), so re-rendering stays fast."""
    parser = _Parser(prog="anomaly-probe")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    _add_report_arguments(sub.add_parser("report", epilog=EPILOG_REPORT,
                                         formatter_class=argparse.RawDescriptionHelpFormatter))
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    from anomaly_probe.run.command import run_command

    retry = getattr(args, "retry_failed", None)
    if retry is not None:
        if args.resume is not None and args.resume != retry:
            raise UserError(f"--resume {args.resume!r} and --retry-failed {retry!r} name different folders; give one")
        args.resume = retry
    return run_command(args, _given_run_flags(args) if args.resume is not None else {})


def _given_run_flags(args: argparse.Namespace) -> dict:
    """The run flags the user typed (destination -> value): ``argv`` parsed again without defaults."""
    argv = getattr(args, "_argv", None)
    if argv is None:  # called without main(): what differs from the defaults
        defaults = run_defaults()
        return {k: v for k, v in vars(args).items() if k in defaults and v != defaults[k]}
    given, _ = build_parser(defaults=False).parse_known_args(argv)
    return {k: v for k, v in vars(given).items() if k != "command"}


def cmd_report(args: argparse.Namespace) -> int:
    from anomaly_probe.console import console
    from anomaly_probe.reports import write_comparison, write_report

    from anomaly_probe.sweep.index import is_sweep

    if len(args.run_dirs) == 1 and is_sweep(args.run_dirs[0]):  # a sweep folder: its trend report
        from anomaly_probe.reports.sweep import write_sweep_report

        write_sweep_report(args.run_dirs[0], out=args.out, console=console)
    elif len(args.run_dirs) == 1:
        write_report(args.run_dirs[0], out=args.out, console=console)
    else:
        write_comparison(args.run_dirs, out=args.out, console=console)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from anomaly_probe.check.command import run_check

    return run_check(args)


def cmd_import(args: argparse.Namespace) -> int:
    from anomaly_probe.importer.command import run_import

    return run_import(args)


def cmd_sweep(args: argparse.Namespace) -> int:
    from anomaly_probe.sweep.command import run_sweep

    return run_sweep(args)


def cmd_export(args: argparse.Namespace) -> int:
    from anomaly_probe.export.command import run_export

    return run_export(args)


def _remove_if_empty(path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def _one_line(message: str) -> str:
    """Control characters and line breaks (from a file's column names, a path...) escaped: one line."""
    from anomaly_probe.console import visible

    return visible(message)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 failed check or internal error, 2 bad input)."""
    from anomaly_probe.console import err_console

    try:
        words = sys.argv[1:] if argv is None else argv
        light = {"report": build_report_parser, "import": build_import_parser,
                 "export": build_export_parser}.get(words[0] if words else "")
        parser = light() if light else build_parser()
        args = parser.parse_args(argv)
        args._argv = list(words)  # which flags were typed (run --resume checks them against the saved run)
        if args.command is None:
            parser.print_help()
            return 2
        return {"run": cmd_run, "report": cmd_report, "check": cmd_check, "import": cmd_import,
                "export": cmd_export, "sweep": cmd_sweep}[args.command](args)
    except UserError as exc:
        err_console.print(f"error: {_one_line(str(exc))}", markup=False, highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        err_console.print("interrupted", markup=False)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
        if os.environ.get("ANOMALY_PROBE_DEBUG"):
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        err_console.print(f"internal error: {type(exc).__name__}: {_one_line(msg[:300])} "
                          "(set ANOMALY_PROBE_DEBUG=1 for a traceback)", markup=False, soft_wrap=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
