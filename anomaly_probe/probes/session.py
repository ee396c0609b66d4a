"""Attach a set of probes around an engine call: ``with ProbeSession(model, names) as probes``.

The session is the engine's ``observer`` (it receives ``after_forward``) and, while the block runs,
the attention recorder. On exit every hook is gone and the model's attention implementation is the
one it had before, also when the block raised.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch

from anomaly_probe.errors import UserError
from anomaly_probe.probes.attention_hook import recording_attention
from anomaly_probe.probes.attention_probe import AttentionProbe
from anomaly_probe.probes.cache_probe import CacheProbe
from anomaly_probe.probes.names import PROBE_NAMES
from anomaly_probe.probes.process_probe import ProcessProbe
from anomaly_probe.probes.rows import StepRows
from anomaly_probe.probes.threads import single_thread
from anomaly_probe.probes.trace import save_trace, trace_steps
from anomaly_probe.step_context import StepInfo


DEFAULT_RECENT = 252  # tokens: StreamingLLM's default recent window (the run passes its method's)


class ProbeSession:
    """The probes of one scoring run and the trace they produce.

    Parameters
    ----------
    model : torch.nn.Module
        The HF causal LM the engine will run.
    names : sequence of str
        Probe names from :data:`~anomaly_probe.probes.names.PROBE_NAMES` (see ``parse_probes``); empty
        is a real, do-nothing session (``observer`` is ``None``, ``save`` writes nothing).
    stride : int
        Record every ``stride``-th query (absolute index a multiple of it; ``--probe-stride``), in every
        probe, so the trace's rows stay shared.
    sink_size : int, optional
        Tokens that count as sinks for ``sink_mass`` (default: what each engine step says; the run passes
        the method's, so that the full cache's sink mass is measured on the same tokens).
    recent : int, optional
        Window of ``recent_mass`` (tokens before the query, itself included; default
        :data:`DEFAULT_RECENT`, the default method's recent window); ``None``: not measured (NaN).

    Examples
    --------
    >>> with ProbeSession(model, ("attention", "cache")) as probes:      # doctest: +SKIP
    ...     scores = score_stepwise(model, ids, method, observer=probes)
    >>> columns = probes.trace()
    """

    def __init__(self, model: torch.nn.Module, names, stride: int = 1, sink_size: int | None = None,
                 recent: int | None = DEFAULT_RECENT) -> None:
        unknown = [n for n in names if n not in PROBE_NAMES]
        if unknown:
            raise ValueError(f"unknown probes {unknown}; available: {', '.join(PROBE_NAMES)}")
        self.model = model
        self.names = tuple(n for n in PROBE_NAMES if n in names)
        self.num_layers = int(model.config.num_hidden_layers)
        self.device = device = next(model.parameters()).device
        self.rows = StepRows(stride)
        self.attention = (AttentionProbe(self.rows, self.num_layers, recent, sink_size)
                          if "attention" in self.names else None)
        self.cache = CacheProbe(self.num_layers) if "cache" in self.names else None
        self.process = ProcessProbe(device) if "process" in self.names else None
        self._stack: ExitStack | None = None
        self._forwards = 0

    def __enter__(self) -> ProbeSession:
        stack = ExitStack()
        if self.attention is not None:
            stack.enter_context(recording_attention(self.model, self.attention))
        self._stack = stack
        return self

    def __exit__(self, *exc) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    @property
    def observer(self) -> ProbeSession | None:
        """What to pass as the engine's ``observer``: this session, or ``None`` without probes."""
        return self if self.names else None

    # ------------------------------------------------------------------ StepObserver
    def after_forward(self, info: StepInfo, cache, seconds: float) -> None:
        """Engine callback after every forward (see :class:`~anomaly_probe.step_context.StepObserver`)."""
        self._forwards += 1
        with single_thread(self.device), torch.no_grad():
            row0, n_rows = self.rows.register(info), self.rows.recorded(info)
            if self.attention is not None:
                self.attention.end_forward()
                if self._forwards == 1 and self.attention.calls == 0 and self.attention.unrecorded_calls == 0:
                    raise UserError(f"the attention probe saw no attention call in {type(self.model).__name__}'s "
                                    "forward: its attention bypasses transformers' AttentionInterface; "
                                    "use --probes cache,process")
            if n_rows == 0:  # every query of this forward is skipped by the stride
                return
            if self.cache is not None:
                self.cache.after_forward(row0, n_rows, cache)
            if self.process is not None:
                self.process.after_forward(row0, n_rows, seconds)

    # ------------------------------------------------------------------ output
    def trace(self) -> dict[str, np.ndarray]:
        """Columnar trace (docs/FORMATS.md, "Trace"): name -> array with S rows."""
        n = self.rows.n
        out = self.rows.columns()
        with single_thread(self.device), torch.no_grad():
            for probe in (self.attention, self.cache, self.process):
                if probe is not None:
                    out.update(probe.columns(n))
        return out

    def save(self, run_dir: Path, key: str) -> dict:
        """Write ``traces/<key>.npz`` under ``run_dir``.

        Returns
        -------
        dict
            Run-record fields ``trace_file`` (relative path) and ``trace_bytes_per_step`` (bytes of the
            stored file per recorded step); empty without probes.
        """
        if not self.names:
            return {}
        columns = self.trace()
        trace_file = f"traces/{key}.npz"
        n_bytes = save_trace(Path(run_dir) / trace_file, columns)
        return {"trace_file": trace_file, "trace_bytes_per_step": n_bytes / max(1, trace_steps(columns))}
