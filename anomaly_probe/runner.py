"""Run the baseline and the method over every length and sample, and write the run folder.

The :class:`Session` owns the loaded model, the token samples and the run folder. Anything that
needs a scored run (the CLI, the hypothesis experiments) asks :meth:`Session.score` for a
:class:`~anomaly_probe.units.Unit`; a unit is scored once and shared.
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import numpy as np
import torch

from anomaly_probe.config import RunConfig
from anomaly_probe.device import dtype_name, resolve_device, resolve_dtype
from anomaly_probe.engines import CHUNKED_ENGINES, ENGINES, pick_engine
from anomaly_probe.environment import describe_environment
from anomaly_probe.errors import UserError
from anomaly_probe.failures import failure_message, is_out_of_memory, release_memory
from anomaly_probe.interventions import apply_intervention
from anomaly_probe.methods import FullCache, build_method
from anomaly_probe.methods.base import CacheMethod
from anomaly_probe.probes import ProbeSession, parse_probes
from anomaly_probe.results import SCHEMA_VERSION, compare, save_tokens, write_json
from anomaly_probe.units import Unit

REPORTS_DIR = Path("reports")


def validate_config(config: RunConfig) -> CacheMethod:
    """Cheap checks done before any model is loaded; returns the method under test."""
    from anomaly_probe.config import check_seed

    if not config.model.strip():
        raise UserError("--model '': give a model (smollm2-135m, tiny-neox, a hub ID, a folder or a .gguf file)")
    if config.out is not None and not config.out.strip():
        raise UserError("--out '': give a folder name, or leave --out out for reports/<time>-<model>")
    check_seed(config.seed)
    if not config.max_tokens:
        raise UserError("--max-tokens needs at least one value")
    for n in config.max_tokens:
        if n < 2:
            raise UserError(f"--max-tokens {n}: need at least 2 tokens (one input and one target)")
    if config.num_samples < 1:
        raise UserError(f"--num-samples {config.num_samples}: need at least 1 sample")
    if config.stepwise_tokens < 0 or config.stepwise_tokens == 1:
        raise UserError(f"--stepwise-tokens {config.stepwise_tokens}: use 0 (whole sample) or >= 2")
    if config.chunk_size < 1:
        raise UserError(f"--chunk-size {config.chunk_size}: must be >= 1")
    if config.trained_context is not None and config.trained_context < 1:
        raise UserError(f"--trained-context {config.trained_context}: must be >= 1")
    method = build_method(config.method, sink_size=config.sink_size, recent_size=config.recent_size,
                          position_mode=config.position_mode)
    pick_engine(config.engine, FullCache())
    pick_engine(config.engine, method)
    parse_probes(config.probes)
    return method


def prepare_run_dir(config: RunConfig) -> Path:
    """Create the run folder; refuse one that already holds a run or cannot be written."""
    if config.out:
        run_dir = Path(config.out).expanduser()
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = REPORTS_DIR / f"{stamp}-{re.sub(r'[^A-Za-z0-9._-]+', '_', config.model)}"
    if (run_dir / "results.json").exists():
        raise UserError(f"--out {str(run_dir)!r} already holds a run; choose another folder, or continue it with "
                        f"`anomaly-probe run --resume {run_dir}`")
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {str(run_dir)!r} is a file; give a folder for the run")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"--out {str(run_dir)!r} is not writable ({exc.strerror or exc}); choose another folder") from None
    return run_dir


class Session:
    """A loaded model, its samples and a run folder.

    Parameters
    ----------
    config : RunConfig
        The resolved configuration.
    run_dir : Path
        Output folder (from :func:`prepare_run_dir`).
    """

    def __init__(self, config: RunConfig, run_dir: Path) -> None:
        from anomaly_probe.models import load_model
        from anomaly_probe.text import read_text, samples, tokenize

        self.config = config
        self.method = validate_config(config)
        self.run_dir = run_dir
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        text = read_text(config.text)  # before the model: a bad file fails fast
        torch.manual_seed(config.seed)
        self.loaded = load_model(config.model, device=self.device, dtype=self.dtype,
                                 trained_context=config.trained_context, seed=config.seed)
        self.ids = tokenize(self.loaded.tokenizer, text)
        longest = max(config.max_tokens)
        samples(self.ids, longest, config.num_samples)  # fails with the token count if too short
        self._samples = {L: samples(self.ids, L, config.num_samples) for L in config.max_tokens}
        used = self.ids[:longest * config.num_samples].numpy()  # every sample lies in this prefix
        self.inputs = {"text_tokens": int(self.ids.numel()),
                       "samples_sha256": hashlib.sha256(used.astype("<i8").tobytes()).hexdigest()}
        self.environment = describe_environment(self.device, self.dtype,
                                                self.loaded.model.config._attn_implementation)
        self.runs: list[dict] = []
        self.arrays: dict[str, dict[str, np.ndarray]] = {}
        self.comparisons: list[dict] = []
        self.verdicts: list[dict] = []
        self.failures: list[dict] = []
        self.headline = ""
        self.extra: dict = {}
        self.status = "running"

    # ------------------------------------------------------------------ scoring
    def unit(self, max_tokens: int, sample: int, method: CacheMethod, engine: str = "auto",
             intervention: str = "none", prefix: int | None = None, windows: tuple = ()) -> Unit:
        if prefix is not None and prefix >= max_tokens:
            prefix = None
        return Unit(max_tokens, sample, method, pick_engine(engine, method, internal=True), intervention, prefix,
                    tuple(windows))

    def score(self, unit: Unit, progress=None) -> dict:
        """Score ``unit`` (once; later calls return the saved record)."""
        for run in self.runs:
            if run["key"] == unit.key:
                return run
        fn = ENGINES.get(unit.engine)
        kwargs = {"chunk_size": self.config.chunk_size} if unit.engine in CHUNKED_ENGINES else {}
        if unit.windows:
            kwargs["windows"] = unit.windows
        ids = self._samples[unit.max_tokens][unit.sample][:unit.n_tokens]
        intervention_info: dict = {}
        probes = ProbeSession(self.loaded.model, parse_probes(self.config.probes))
        with apply_intervention(unit.intervention, self.loaded.model, intervention_info), probes:
            scores = fn(self.loaded.model, ids, unit.method, progress=progress or (lambda n: None),
                        observer=probes.observer, **kwargs)
        nonfinite = self._locate_nonfinite(unit, ids, scores, kwargs)
        tokens_file = f"tokens/{unit.key}.npz"
        save_tokens(self.run_dir / tokens_file, scores)
        record = {
            "key": unit.key,
            **unit.method.describe(),
            "label": unit.method.label(),
            "engine": unit.engine,
            "intervention": unit.intervention,
            "intervention_info": intervention_info,
            "prefix": unit.prefix,
            **({"windows": [list(w) for w in unit.windows]} if unit.windows else {}),
            "dtype": dtype_name(self.dtype),
            "max_tokens": unit.max_tokens,
            "sample": unit.sample,
            **scores.summary(),
            "tokens_file": tokens_file,
            **probes.save(self.run_dir, unit.key),  # trace_file, trace_bytes_per_step (with --probes)
            **({"nonfinite": nonfinite} if nonfinite else {}),
        }
        self.runs.append(record)
        self.arrays[unit.key] = {"nll": scores.nll, "correct": scores.correct, "query_pos": scores.query_pos,
                                 "n_keys": scores.n_keys}
        self.save()
        return record

    def _locate_nonfinite(self, unit: Unit, ids: torch.Tensor, scores, kwargs: dict) -> dict | None:
        """NaN/inf NLL: count it and find the first layer (one more forward up to it); else None."""
        from anomaly_probe.nonfinite import locate_layer, nonfinite_summary

        finding = nonfinite_summary(scores.nll)
        if finding is None:
            return None
        first = finding["first_token"]
        # the same numerics as the unit (a ballast only adds memory pressure: not repeated)
        name = "none" if unit.intervention.startswith("ballast-") else unit.intervention

        def rerun():
            with apply_intervention(name, self.loaded.model):
                return ENGINES.get(unit.engine)(self.loaded.model, ids[:first + 2], unit.method, **kwargs)

        return finding | locate_layer(self.loaded.model, rerun, first)

    def baseline_and_method_units(self) -> list[Unit]:
        units = []
        for L in self.config.max_tokens:
            for s in range(self.config.num_samples):
                units.append(self.unit(L, s, FullCache(), self.config.engine))
                units.append(self.unit(L, s, self.method, self.config.engine))
        return units

    def compute_comparisons(self) -> None:
        self.comparisons = []
        base, meth = FullCache(), self.method
        for L in self.config.max_tokens:
            per_sample = {}
            for s in range(self.config.num_samples):
                ub, um = self.unit(L, s, base, self.config.engine), self.unit(L, s, meth, self.config.engine)
                if ub.key in self.arrays and um.key in self.arrays:
                    per_sample[s] = {base.label(): self.arrays[ub.key], meth.label(): self.arrays[um.key]}
            if per_sample:
                self.comparisons.append(compare(self.runs, base.label(), meth.label(), L, per_sample))

    # ------------------------------------------------------------------ output
    def results(self) -> dict:
        lm = self.loaded
        return {
            "schema_version": SCHEMA_VERSION,
            "status": self.status,
            "environment": self.environment,
            "config": self.config.to_dict(),
            "model": {"spec": lm.spec, "source": lm.source, "arch": lm.arch, "trained_context": lm.trained_context,
                      "num_layers": lm.num_layers},
            "method": self.method.describe() | {"label": self.method.label()},
            "runs": self.runs,
            "comparisons": self.comparisons,
            "verdicts": self.verdicts,
            "headline": self.headline,
            "failures": self.failures,
            "inputs": self.inputs,
            **self.extra,
        }

    def save(self) -> None:
        write_json(self.run_dir / "results.json", self.results())


def run_units(session: Session, units: list[Unit]) -> dict[str, str]:
    """Score ``units`` with rich progress bars (overall ETA plus one bar per unit).

    Returns
    -------
    dict
        Unit key -> error message for units that failed; the others still run.
    """
    from anomaly_probe.console import progress_bars

    seen: set[str] = set()
    todo = []
    for u in units:  # scored once, whoever asked for it
        if u.key not in session.arrays and u.key not in seen:
            seen.add(u.key)
            todo.append(u)
    total = sum(u.n_tokens - 1 for u in todo)
    failed: dict[str, str] = {}
    with progress_bars(total) as (bars, overall):
        for u in todo:
            extra = "" if u.intervention == "none" else f" +{u.intervention}"
            task = bars.add_task(f"L={u.max_tokens} s={u.sample} {u.method.label()}{extra} [{u.engine}]",
                                 total=u.n_tokens - 1)

            def advance(n: int, task=task) -> None:
                bars.advance(task, n)
                bars.advance(overall, n)

            oom = False
            try:
                session.score(u, progress=advance)
            except UserError:
                raise
            except Exception as exc:  # noqa: BLE001 - one failed unit must not lose the others
                oom = is_out_of_memory(exc)
                failed[u.key] = failure_message(exc, u, session.config.chunk_size, dtype_name(session.dtype),
                                                chunked=u.engine in CHUNKED_ENGINES)
                session.failures.append({"key": u.key, "error": failed[u.key]})
                session.save()
                bars.console.print(f"failed: {u.key}: {failed[u.key]}", markup=False, highlight=False)
            if oom:  # outside the except block: its traceback no longer pins the failed forward's tensors
                release_memory()
    return failed
