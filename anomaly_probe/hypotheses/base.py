"""The hypothesis contract: declare the runs you need, then judge them with a pure function.

A hypothesis never scores anything itself. :meth:`Hypothesis.roles` names the runs it needs (as
:class:`RoleSpec`), the runner scores every distinct run once, and :meth:`Hypothesis.judge` turns the
recorded per-token arrays (a :class:`JudgeInput`) into a :class:`~anomaly_probe.verdict.Verdict`.
Judges are unit-tested on hand-made inputs with a planted cause.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from anomaly_probe.hypotheses import catalog
from anomaly_probe.hypotheses.region import AnalysisRegion
from anomaly_probe.methods.base import CacheMethod
from anomaly_probe.stats.thresholds import Thresholds
from anomaly_probe.verdict import Verdict


@dataclass(frozen=True)
class ExperimentSettings:
    """Sizes of the experiments (not decision thresholds).

    Attributes
    ----------
    stepwise_tokens : int
        The eval-bias token loop scores this prefix of each sample (0: the whole sample). The loop is
        ~30x slower than a batched forward on a CPU; the prefix still checks the same computation.
    spot_tokens : int
        eval-bias past the prefix: tokens per spot window scored one at a time on a batched-prefilled
        cache (past 1024, past 4096, past the trained context, the sample's end; see
        ``hypotheses/spots.py``); 0: no windows. The run costs one batched run of the sample plus
        ``4 * spot_tokens`` decode steps. Measured on SmolLM2-135M at 12000 tokens (fp32, CPU, one
        thread, CPU seconds): batched chunks 119 s, 128 decode steps 30 s (116 ms each at a 1k cache,
        330 ms at 12k: a decode step reads every weight and the whole cache). With 16 the steps add
        ~12% to the batched run (58 s at 12k on the 2-core CPU): ~65-70 s in all.
    ballast_fraction : float
        Memory experiment: hold this fraction of the available memory...
    ballast_cap_bytes : int
        ...but at most this many bytes.
    recompute_stride_fraction : float
        Recompute oracle stride as a fraction of its window (the trained context).
    """

    stepwise_tokens: int = 1024
    spot_tokens: int = 16  # 4 windows x 16 decode steps: ~+12% on one batched run at 12k (see below)
    ballast_fraction: float = 0.5
    ballast_cap_bytes: int = 8 * 2**30
    recompute_stride_fraction: float = 0.5


@dataclass(frozen=True)
class RoleSpec:
    """A run a hypothesis needs, before it is bound to a length and sample."""

    method: CacheMethod
    engine: str = "auto"
    intervention: str = "none"
    prefix: int | None = None
    windows: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class PlanContext:
    """What a hypothesis may look at when planning its runs."""

    method: CacheMethod
    trained_context: int
    dtype: str
    max_tokens: int
    engine: str
    settings: ExperimentSettings


@dataclass
class JudgeInput:
    """Everything a judge sees for one length: per-role, per-sample per-token arrays.

    Attributes
    ----------
    nll : dict
        ``nll[role]`` is a list (one per sample) of per-token NLL arrays (nats), shape (T_s,).
        Entry i scores the token at absolute position i + 1.
    correct : dict
        Same layout, top-1 correctness (bool).
    runs : dict
        ``runs[role]`` is a list (one per sample) of run records (results.json ``runs`` entries).
    analysis_start : int
        First per-token entry the statistics use, from :func:`~anomaly_probe.hypotheses.region.find_region`
        (past the trained context when the samples reach past it, moved forward to a significant rise
        of the gap when there is one); 0 means all tokens. The same for every judge of one length.
    analysis_region : AnalysisRegion or None
        How that start was chosen (for messages); None means "all scored tokens".
    """

    hypothesis: str
    max_tokens: int
    trained_context: int
    dtype: str
    method: CacheMethod
    nll: dict[str, list[np.ndarray]]
    correct: dict[str, list[np.ndarray]] = field(default_factory=dict)
    runs: dict[str, list[dict]] = field(default_factory=dict)
    thresholds: Thresholds = field(default_factory=Thresholds)
    environment: dict = field(default_factory=dict)
    analysis_start: int = 0
    analysis_region: AnalysisRegion | None = None

    def paired(self, *roles: str, whole: bool = False) -> list[np.ndarray]:
        """Per sample, the roles' NLL stacked as columns, cut to a common length: (T, len(roles)).

        Only the analysis region (entries from ``analysis_start``) unless ``whole``.
        """
        out = []
        start = 0 if whole else self.analysis_start
        for s in range(len(self.nll[roles[0]])):
            arrays = [self.nll[r][s] for r in roles]
            n = min(len(a) for a in arrays)
            out.append(np.stack([a[start:n] for a in arrays], axis=1))
        return out

    def region(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """``arrays`` (one per sample) restricted to the analysis region."""
        return [a[self.analysis_start:] for a in arrays]

    def region_short(self) -> str:
        """``positions a-b`` or ``all tokens``, for figure titles."""
        if self.analysis_start == 0:
            return "all tokens"
        return f"positions {self.analysis_start + 1}-{self.max_tokens - 1}"

    def region_text(self) -> str:
        """Where the statistics were computed, for messages."""
        if self.analysis_region is not None:
            return self.analysis_region.text()
        if self.analysis_start == 0:
            return "all scored tokens"
        return f"positions {self.analysis_start + 1}-{self.max_tokens - 1}"


class Hypothesis:
    """Base class. Subclasses set ``name`` and implement ``roles`` and ``judge``.

    ``title`` and ``acts_on`` come from the hypothesis' entry in
    :mod:`~anomaly_probe.hypotheses.catalog`, the one table the verdicts, the CLI and the report also
    read. ``acts_on`` says where the intervention is applied. ``"baseline"``: it changes the full cache,
    so its share says how much of the anomaly the baseline's own failure mode explains (the design's
    definition of a cause). ``"method"``: it changes the compressed cache (position handling, sinks), so
    its share says how much of the method's advantage depends on that ingredient. Causes are ranked
    before method-side checks.
    """

    name: str = ""

    @property
    def title(self) -> str:
        return catalog.title(self.name)

    @property
    def acts_on(self) -> str:
        return catalog.acts_on(self.name)

    def roles(self, ctx: PlanContext) -> dict[str, RoleSpec] | None:
        """Runs needed besides ``baseline`` and ``method`` (which every hypothesis gets); ``None`` when
        the hypothesis does not apply to ``ctx.method`` (it is then neither scored nor judged)."""
        raise NotImplementedError

    def judge(self, data: JudgeInput) -> Verdict:
        raise NotImplementedError
