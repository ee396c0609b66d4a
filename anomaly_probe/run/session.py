"""The session of ``anomaly-probe run``: a loaded model, its samples, the run folder and what was scored.

Anything that needs a scored unit (the pipeline, the hypothesis experiments) asks :meth:`Session.score`
for a :class:`~anomaly_probe.run.units.Unit`; a unit is scored once and shared. The judges see the
session only through :meth:`Session.scored` (a :class:`~anomaly_probe.run.judging.ScoredRuns`).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import torch

from anomaly_probe.attention.hf import current_implementation
from anomaly_probe.config import RunConfig
from anomaly_probe.device import dtype_name, resolve_device, resolve_dtype
from anomaly_probe.engines import CHUNKED_ENGINES, ENGINES, pick_engine
from anomaly_probe.engines.layers import sliding_policy
from anomaly_probe.environment import describe_environment
from anomaly_probe.errors import UserError
from anomaly_probe.interventions import apply_intervention
from anomaly_probe.methods import FullCache, build_method
from anomaly_probe.methods.base import CacheMethod
from anomaly_probe.probes import ProbeSession, parse_probes
from anomaly_probe.rundir import (Comparison, Failure, Results, RoleEntry, UnitRecord, check_out, compare, prepare,
                                  save_tokens, write_results)
from anomaly_probe.rundir.files import WriteError, own_folder
from anomaly_probe.run.judging import ScoredRuns, role_entries
from anomaly_probe.run.units import Unit, make_unit, pair_units
from anomaly_probe.verdict import Verdict


def validate_config(config: RunConfig) -> CacheMethod:
    """Cheap checks done before any model is loaded; returns the method under test."""
    from anomaly_probe.config import check_seed

    if not config.model.strip():
        raise UserError("--model '': give a model (smollm2-135m, tiny-neox, a hub ID, a folder or a .gguf file)")
    check_out(config.out, "<model>")
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
    if config.compress_every < 1:
        raise UserError(f"--compress-every {config.compress_every}: must be >= 1 (evict every C tokens)")
    if config.trained_context is not None and config.trained_context < 1:
        raise UserError(f"--trained-context {config.trained_context}: must be >= 1")
    method = build_method(config.method, sink_size=config.sink_size, recent_size=config.recent_size,
                          position_mode=config.position_mode, compress_every=config.compress_every,
                          method_args=config.method_args)
    pick_engine(config.engine, FullCache())
    pick_engine(config.engine, method)
    parse_probes(config.probes)
    if config.probe_stride < 1:
        raise UserError(f"--probe-stride {config.probe_stride}: must be >= 1 (1 records every query)")
    return method


def prepare_run_dir(config: RunConfig) -> Path:
    """Create the run folder (``--out``, default ``reports/<time>-<model>``); refuse one that already holds
    a run (naming the ``--resume`` command) or cannot be written."""
    return prepare(config.out, _folder_name(config.model), resume_hint=True, what="<model>")


def claim_run_dir(config: RunConfig):
    """:func:`prepare_run_dir` under the folder's exclusive lock, held for the ``with`` block
    (:func:`anomaly_probe.rundir.prepare.claim`)."""
    from anomaly_probe.rundir.prepare import claim

    return claim(config.out, _folder_name(config.model), resume_hint=True, what="<model>")


def _folder_name(model: str) -> str:
    """The model part of the default folder name: a local model's file or folder name, else the spec."""
    path = Path(model)
    return path.name if path.is_absolute() and path.name else model


class Session:
    """A loaded model, its samples, a run folder and everything scored and judged so far.

    Parameters
    ----------
    config : RunConfig
        The resolved configuration.
    run_dir : Path
        Output folder (from :func:`prepare_run_dir`).

    Attributes
    ----------
    runs : list of UnitRecord
        Every finished unit, in the order it finished.
    arrays : dict
        Unit key -> per-token arrays (``nll``, ``correct``, ``query_pos``, ``n_keys``), shape (T-1,).
    comparisons, verdicts, failures, headline, status :
        The results.json sections of the same names (:mod:`anomaly_probe.rundir.schema`).
    thresholds : Thresholds or None
        The decision thresholds the verdicts used (set by the pipeline).
    settings : ExperimentSettings or None
        The experiments' sizes (set by the pipeline).
    regions : dict or None
        Length -> the analysis region every judge of that length used (runs with hypotheses).
    roles : list of RoleEntry
        Which unit plays which role; starts with the baseline/method pair of every length.
    """

    def __init__(self, config: RunConfig, run_dir: Path, loaded=None) -> None:
        """``loaded``: an already loaded :class:`~anomaly_probe.models.loading.LoadedModel` of ``config``'s
        model, device, dtype and trained context (a sweep reuses one load for many runs); None loads it."""
        from anomaly_probe.models import load_model
        from anomaly_probe.text import read_text, samples, tokenize

        self.config = config
        self.method = validate_config(config)
        self.run_dir = run_dir
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        text = read_text(config.text)  # before the model: a bad file fails fast
        torch.manual_seed(config.seed)
        self.loaded = loaded or load_model(config.model, device=self.device, dtype=self.dtype,
                                           trained_context=config.trained_context, seed=config.seed)
        self.ids = tokenize(self.loaded.tokenizer, text)
        longest = max(config.max_tokens)
        samples(self.ids, longest, config.num_samples)  # fails with the token count if too short
        self._samples = {L: samples(self.ids, L, config.num_samples) for L in config.max_tokens}
        used = self.ids[:longest * config.num_samples].numpy()  # every sample lies in this prefix
        self.inputs = {"text_tokens": int(self.ids.numel()),
                       "samples_sha256": hashlib.sha256(used.astype("<i8").tobytes()).hexdigest()}
        self.environment = describe_environment(self.device, self.dtype,
                                                current_implementation(self.loaded.model))
        self.runs: list[UnitRecord] = []
        self.arrays: dict[str, dict[str, np.ndarray]] = {}
        self.comparisons: list[Comparison] = []
        self.verdicts: list[Verdict] = []
        self.failures: list[Failure] = []
        self.headline = ""
        self.status = "running"
        self.thresholds = None
        self.settings = None
        self.regions = None
        self.roles: list[RoleEntry] = role_entries(self.scored(), {})  # the baseline/method pairs

    # ------------------------------------------------------------------ units
    def unit(self, max_tokens: int, sample: int, method: CacheMethod, engine: str = "auto",
             intervention: str = "none", prefix: int | None = None, windows: tuple = ()) -> Unit:
        """The unit for these settings (see :func:`~anomaly_probe.run.units.make_unit`)."""
        return make_unit(max_tokens, sample, method, engine, intervention, prefix, windows)

    def pair(self, max_tokens: int, sample: int) -> tuple[Unit, Unit]:
        """The baseline and method units at one length and sample."""
        return pair_units(max_tokens, sample, self.method, self.config.engine)

    def pair_units(self) -> list[Unit]:
        """Baseline and method of every length and sample, in scoring order."""
        return [u for L in self.config.max_tokens for s in range(self.config.num_samples) for u in self.pair(L, s)]

    def scored(self) -> ScoredRuns:
        """The typed view the planner and the judges read."""
        return ScoredRuns(method=self.method, trained_context=self.loaded.trained_context,
                          dtype=self.environment["dtype"], environment=self.environment,
                          lengths=tuple(self.config.max_tokens), num_samples=self.config.num_samples,
                          engine=self.config.engine, arrays=self.arrays,
                          records={r.key: r.to_dict() for r in self.runs})

    # ------------------------------------------------------------------ scoring
    def score(self, unit: Unit, progress=None) -> UnitRecord:
        """Score ``unit`` (once; later calls return the saved record)."""
        for run in self.runs:
            if run.key == unit.key:
                return run
        start = time.perf_counter()
        fn = ENGINES.get(unit.engine)
        kwargs = {"chunk_size": self.config.chunk_size} if unit.engine in CHUNKED_ENGINES else {}
        if unit.windows:
            kwargs["windows"] = unit.windows
        ids = self._samples[unit.max_tokens][unit.sample][:unit.n_tokens]
        intervention_info: dict = {}
        probes = ProbeSession(self.loaded.model, self.probe_names(unit), stride=self.config.probe_stride,
                              sink_size=getattr(self.method, "sink_size", None),
                              recent=getattr(self.method, "recent_size", None) or None)
        with apply_intervention(unit.intervention, self.loaded.model, intervention_info), probes, \
                sliding_policy(self.config.policy_on_sliding):
            scores = fn(self.loaded.model, ids, unit.method, progress=progress or (lambda n: None),
                        observer=probes.observer, **kwargs)
        nonfinite = self._locate_nonfinite(unit, ids, scores, kwargs)
        arrays = {"nll": scores.nll, "correct": scores.correct, "query_pos": scores.query_pos,
                  "n_keys": scores.n_keys}
        tokens_file = save_tokens(self.run_dir, unit.key, arrays)  # WriteError: the run stops, resumable
        if probes.names:
            own_folder(self.run_dir, "traces")  # never written through a link out of the folder
        trace_start = time.perf_counter()
        try:
            trace = probes.save(self.run_dir, unit.key)  # trace_file, trace_bytes_per_step (with --probes)
        except OSError as exc:
            raise WriteError(f"cannot write the trace of {unit.key} in {str(self.run_dir)!r}: "
                             f"{exc.strerror or exc}") from None
        if trace:
            trace["trace_seconds"] = time.perf_counter() - trace_start
        record = UnitRecord(
            **unit.method.describe(), key=unit.key, label=unit.method.label(), engine=unit.engine,
            intervention=unit.intervention, intervention_info=intervention_info, prefix=unit.prefix,
            windows=[list(w) for w in unit.windows] or None, dtype=dtype_name(self.dtype), max_tokens=unit.max_tokens, sample=unit.sample, **scores.summary(),
            tokens_file=tokens_file, **trace,
            nonfinite=nonfinite, extra=self._policy_probe(unit, scores),
            unit_seconds=time.perf_counter() - start,
        )
        self.runs.append(record)
        self.arrays[unit.key] = arrays
        self.save()
        return record

    def _policy_probe(self, unit: Unit, scores) -> dict:
        """The policy probe of an evicting policy engine run (attention loss, kept ages):
        ``traces/<key>-policy.npz`` and its summary, as the record's ``extra["policy_probe"]``; else {}."""
        from anomaly_probe.engines.policy_cache import probe_summary
        from anomaly_probe.rundir import save_npz

        arrays = scores.extra.get("arrays") or {}
        if not arrays:
            return {}
        own_folder(self.run_dir, "traces")  # never written through a link out of the folder
        return {"policy_probe": probe_summary(arrays) | {"file": save_npz(self.run_dir, f"traces/{unit.key}-policy.npz",
                                                                          arrays)}}

    def probe_names(self, unit: Unit) -> tuple[str, ...]:
        """The probes ``unit`` runs with: ``--probes``, except that the attention probe records only the
        units whose traces the report draws (the baseline and method of each length and sample, and the
        recompute oracle); the experiments' other units (interventions, the eval-bias token loop and spot
        windows, memory ballast, other position modes, the window without sinks) keep the per-forward
        probes, so ``--probes all`` costs the attention statistics of those runs only."""
        names = parse_probes(self.config.probes)
        if "attention" not in names or self.draws_attention(unit):
            return names
        return tuple(n for n in names if n != "attention")

    def draws_attention(self, unit: Unit) -> bool:
        """Whether the report draws ``unit``'s attention trace (baseline, method or oracle role)."""
        from anomaly_probe.methods.recompute import RecomputeOracle

        if unit.intervention != "none" or unit.prefix is not None or unit.windows:
            return False
        return isinstance(unit.method, RecomputeOracle) or unit.key in {u.key for u in self.pair(unit.max_tokens,
                                                                                                 unit.sample)}

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
            with apply_intervention(name, self.loaded.model), sliding_policy(self.config.policy_on_sliding):
                return ENGINES.get(unit.engine)(self.loaded.model, ids[:first + 2], unit.method, **kwargs)

        return finding | locate_layer(self.loaded.model, rerun, first)

    def compute_comparisons(self) -> None:
        """Baseline vs method at every length whose pairs finished (samples with both units)."""
        self.comparisons = []
        base, meth = FullCache().label(), self.method.label()
        for L in self.config.max_tokens:
            per_sample = {}
            for s in range(self.config.num_samples):
                ub, um = self.pair(L, s)
                if ub.key in self.arrays and um.key in self.arrays:
                    per_sample[s] = {base: self.arrays[ub.key], meth: self.arrays[um.key]}
            if per_sample:
                self.comparisons.append(compare(base, meth, L, per_sample))

    # ------------------------------------------------------------------ output
    def results(self) -> Results:
        lm = self.loaded
        return Results(
            status=self.status, environment=self.environment, config=self.config.to_dict(),
            model={"spec": lm.spec, "source": lm.source, "arch": lm.arch, "trained_context": lm.trained_context,
                   "num_layers": lm.num_layers, "num_parameters": lm.num_parameters,
                   "sliding_window": lm.sliding_window},
            position_schemes=lm.position_schemes,
            method=self.method.describe() | {"label": self.method.label()},
            runs=self.runs, comparisons=self.comparisons, verdicts=self.verdicts, headline=self.headline,
            failures=self.failures, inputs=self.inputs,
            thresholds=None if self.thresholds is None else self.thresholds.to_dict(),
            experiment_settings=None if self.settings is None else vars(self.settings).copy(),
            analysis_regions=None if self.regions is None else [r.to_dict() for r in self.regions.values()],
            roles=self.roles,
        )

    def save(self) -> None:
        """Rewrite ``results.json`` (atomically)."""
        write_results(self.run_dir, self.results())
