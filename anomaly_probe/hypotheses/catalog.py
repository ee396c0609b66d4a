"""The hypotheses, listed once: name, title, where the intervention acts, and whether it needs a model.

Every place that shows or ranks a hypothesis reads this table: the judges (``Hypothesis.title`` and
``acts_on``), the CLI (``--hypothesis`` choices), the report (section titles), the importer (which
hypotheses logs cannot settle) and the headline. Plain data only, so the CLI and the report import it
without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from anomaly_probe.errors import UserError


@dataclass(frozen=True)
class Entry:
    """One hypothesis.

    Attributes
    ----------
    name : str
        The ``--hypothesis`` name, also ``Verdict.hypothesis`` and the key of ``hypotheses.ALL``.
    title : str
        A noun phrase naming the cause, e.g. for "the gap is explained by <title>".
    acts_on : str
        ``"baseline"``: the intervention changes the full cache, so the hypothesis is a cause of the
        anomaly, ranked by explained share. ``"method"``: it changes the compressed cache (a
        method-side check, ranked after the causes).
    model_run : str
        What only a model run can score for this hypothesis (``anomaly-probe import`` cannot judge it
        from logs); empty when logs suffice.
    experiment : str
        ``module:Class`` of its :class:`~anomaly_probe.hypotheses.base.Hypothesis`, imported on first
        use of ``hypotheses.ALL`` (so this table stays plain data).
    logs : bool
        Whether ``anomaly-probe import`` lists it (False: it only exists for a policy run by ``run``).
    """

    name: str
    title: str
    acts_on: str = "baseline"
    model_run: str = ""
    experiment: str = ""
    logs: bool = True

    @property
    def needs_model(self) -> bool:
        """True when per-token logs alone cannot judge it (``anomaly-probe import`` leaves it INCONCLUSIVE)."""
        return bool(self.model_run)


CATALOG: dict[str, Entry] = {e.name: e for e in (
    Entry("numerics", "softmax precision loss over long caches",
          model_run="the baseline with attention in another precision",
          experiment="anomaly_probe.hypotheses.numerics:Numerics"),
    Entry("dilution", "attention diluted over too many keys",
          model_run="the full cache with each query limited to its top-k keys",
          experiment="anomaly_probe.hypotheses.dilution:Dilution"),
    Entry("memory", "memory pressure and swapping", experiment="anomaly_probe.hypotheses.memory:Memory"),
    Entry("eval-bias", "evaluation bias in the scoring loop", experiment="anomaly_probe.hypotheses.evalbias:EvalBias"),
    Entry("position", "positions beyond the trained context", experiment="anomaly_probe.hypotheses.position:Position"),
    Entry("handling", "position handling of the compressed cache", acts_on="method",
          model_run="the method in the other position modes", experiment="anomaly_probe.hypotheses.handling:Handling"),
    Entry("sinks", "attention sinks", acts_on="method",
          model_run="a window of the same capacity without sink tokens",
          experiment="anomaly_probe.hypotheses.sinks:Sinks"),
    Entry("ablation", "the policy's own ingredient", acts_on="method", logs=False,
          model_run="the policy's declared ablation (e.g. a recent-only window of the same capacity)",
          experiment="anomaly_probe.hypotheses.ablation:PolicyAblation"),
)}
"""Every hypothesis, in the order ``--hypothesis all`` runs them and the report lists untested ones."""

HYPOTHESES = tuple(CATALOG)
HYPOTHESIS_CHOICES = (*HYPOTHESES, "all", "none")
METHOD_SIDE = tuple(name for name, e in CATALOG.items() if e.acts_on == "method")
"""Method-side checks (their intervention changes the compressed cache), ranked after the causes."""


def acts_on(name: str) -> str:
    """``"method"`` for a method-side check, else ``"baseline"`` (also for a name not in the catalog)."""
    entry = CATALOG.get(name)
    return entry.acts_on if entry is not None else "baseline"


def title(name: str) -> str:
    """The hypothesis' title; a name not in the catalog (e.g. from a newer results.json) is its own title."""
    entry = CATALOG.get(name)
    return entry.title if entry is not None else name


def resolve_hypotheses(names: list[str]) -> list[str]:
    """Expand ``all``; ``none`` alone means baseline vs method only.

    Raises
    ------
    UserError
        An unknown name (with the closest match), or ``none`` combined with other names.
    """
    import difflib

    out: list[str] = []
    for name in names:
        if name not in HYPOTHESIS_CHOICES:
            close = difflib.get_close_matches(name, HYPOTHESIS_CHOICES, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UserError(f"Unknown hypothesis {name!r}.{hint} Available: {', '.join(HYPOTHESIS_CHOICES)}")
        if name == "all":
            out.extend(h for h in HYPOTHESES if h not in out)
        elif name != "none" and name not in out:
            out.append(name)
    if "none" in names and len(set(names)) > 1:
        raise UserError("--hypothesis none cannot be combined with other hypotheses")
    return out or ["none"]
