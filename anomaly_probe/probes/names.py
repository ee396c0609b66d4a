"""The ``--probes`` flag: ``auto``, ``all``, ``none`` or a comma-separated list of probe names."""

from __future__ import annotations

import difflib

from anomaly_probe.errors import UserError

PROBE_NAMES = ("attention", "cache", "process")
"""Every probe, in the order they are attached (attention first: it wraps the forward)."""
AUTO_PROBES = ("cache", "process")
"""``--probes auto`` (the default): the per-forward probes, whose cost does not grow with the context. The
attention probe (``all`` or ``attention``; ``make demo`` uses ``all``) reads the scores of the fused
attention kernel in the chunked engines (no second pass over the keys), but its statistics still add
passes over every query's scores, O(T^2) per run; ``--probe-stride N`` records every Nth query."""


def parse_probes(text: str) -> tuple[str, ...]:
    """Resolve a ``--probes`` value to probe names.

    Parameters
    ----------
    text : str
        ``auto`` (:data:`AUTO_PROBES`), ``all``, ``none`` (or empty) or ``NAME,...`` with names from
        :data:`PROBE_NAMES`.

    Returns
    -------
    tuple of str
        Distinct names in :data:`PROBE_NAMES` order; empty for ``none``.

    Raises
    ------
    UserError
        An unknown name, or ``all``/``none`` mixed with names.
    """
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    if names in ([], ["none"]):
        return ()
    if names == ["all"]:
        return PROBE_NAMES
    if names == ["auto"]:
        return AUTO_PROBES
    for name in names:
        if name not in PROBE_NAMES:
            if name in ("all", "none", "auto"):
                raise UserError(f"--probes {text!r}: '{name}' cannot be combined with probe names")
            close = difflib.get_close_matches(name, PROBE_NAMES, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UserError(f"Unknown probe {name!r}.{hint} Available: auto, all, none, {', '.join(PROBE_NAMES)}")
    return tuple(n for n in PROBE_NAMES if n in names)
