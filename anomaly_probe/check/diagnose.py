"""Name the likely bug when a user's per-token NLL disagrees with the reference (pure numpy, no model).

The reference entry ``i`` is the NLL of token ``i + 1`` given tokens ``0..i`` (``T - 1`` entries for a
``T``-token sample). A user's series is tested against variants of the reference, each the signature of
one bug, in this order; the first that matches names the cause:

========================  =====================================================================
cause                     signature
========================  =====================================================================
``first-token-scored``    ``T`` values whose entries ``1..`` match the reference
``extra-value``           ``T`` values whose first ``T - 1`` match the reference
``missing-value``         ``T - 2`` values matching the reference without its first or last entry
``shifted-target``        the reference one position late or early, or the NLL of the token just
                          fed (``input_ids[idx]``) or of the token two ahead (``input_ids[idx+2]``)
``no-position-shift``     the reference of the same cache in the ``naive`` or ``absolute`` position
                          mode while ``in-cache`` was asked for (keys not re-rotated after eviction)
``wrong-position-mode``   the reference in another position mode (other requested modes)
``no-cache-reset``        the reference run on the previous sample followed by this one
``unknown``               none of these
========================  =====================================================================

"Matches" is deliberately loose (:func:`matches`): at least :data:`MATCH_FRACTION` of the compared
tokens within ``max(10 * tol, 1e-3)`` nats, so that one bug is still recognised when a second one
touches a few tokens (e.g. the first token after a cache that was not reset).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

MATCH_FRACTION = 0.95
MIN_COMPARED = 8  # tokens; fewer cannot tell a match from chance

MODE_TEXT = {
    "naive": "the `naive` position mode (evicted keys keep the positions they were rotated at, and new positions "
             "come from the cache length)",
    "absolute": "the `absolute` position mode (keys keep their original positions, queries their true position)",
    "in-cache": "the `in-cache` position mode (keys re-rotated to their cache slots after every eviction)",
}


@dataclass
class Diagnosis:
    """The likely cause of a mismatch.

    Attributes
    ----------
    cause : str
        A code from the module table (``ok`` when the series matches the reference).
    text : str
        One sentence naming the cause and the evidence.
    first_mismatch : int or None
        First entry (on the common length) where |user - reference| exceeds the tolerance.
    max_abs_dnll : float
        Largest |user - reference| on the common length (nats; inf where NaN appears).
    """

    cause: str
    text: str
    first_mismatch: int | None
    max_abs_dnll: float

    def to_dict(self) -> dict:
        return asdict(self)


def matches(a: np.ndarray, b: np.ndarray, tol: float) -> bool:
    """Whether ``a`` and ``b`` (compared on their common length) agree on most tokens (loose, for diagnosis)."""
    n = min(a.size, b.size)
    if n < MIN_COMPARED:
        return False
    close = np.abs(a[:n] - b[:n]) <= max(10 * tol, 1e-3)
    return bool(close.mean() >= MATCH_FRACTION)


def compare(user: np.ndarray, ref: np.ndarray, tol: float) -> tuple[int | None, float]:
    """First entry beyond ``tol`` and max |difference| on the common length (length differences count)."""
    n = min(user.size, ref.size)
    d = np.abs(user[:n] - ref[:n])
    bad = np.flatnonzero(~(d <= tol))
    first = int(bad[0]) if bad.size else (n if user.size != ref.size else None)
    biggest = float("inf") if np.isnan(d).any() else (float(d.max()) if n else 0.0)
    return first, biggest


def diagnose(user: np.ndarray, ref: np.ndarray, tol: float, *, variants: dict[str, np.ndarray] | None = None,
             requested_mode: str | None = None) -> Diagnosis:
    """Compare ``user`` with ``ref`` and name the likely cause of any difference.

    Parameters
    ----------
    user : np.ndarray
        The user's per-token NLL, shape (n,), nats.
    ref : np.ndarray
        The reference, shape (T-1,), nats.
    tol : float
        Max |dNLL| (nats) for a pass.
    variants : dict, optional
        Other reference series, each the signature of a bug (missing keys are skipped):
        ``same_token`` (NLL of ``input_ids[i]`` from step ``i``; may cover a prefix only),
        ``two_ahead`` (NLL of ``input_ids[i+2]``), ``mode:<mode>`` (the method in another position
        mode) and ``concat`` / ``concat_whole`` (the method run on the previous sample, without / with
        its last token, followed by this one; the entries of this sample only).
    requested_mode : str, optional
        The position mode the user was asked for (None for the full cache).
    """
    variants = variants or {}
    first, biggest = compare(user, ref, tol)
    n, m = user.size, ref.size
    if n == m and first is None:
        return Diagnosis("ok", f"matches the reference (max |dNLL| {biggest:.1e} <= {tol:.0e} nats)", None, biggest)
    where = f"first differs at token {first}, max |dNLL| {_fmt(biggest)} nats"

    def found(cause: str, text: str) -> Diagnosis:
        return Diagnosis(cause, f"{text} ({where})", first, biggest)

    if n == m + 1:
        if matches(user[1:], ref, tol):
            return found("first-token-scored", f"first token scored: {n} values for {m + 1} tokens, and entries 1.. "
                                               "match the reference (the first token has no prediction; return "
                                               "T-1 values)")
        if matches(user[:-1], ref, tol):
            return found("extra-value", f"{n} values for {m + 1} tokens; the first {m} match the reference, the last "
                                        "is extra")
    if n == m - 1:
        if matches(user, ref[1:], tol):
            return found("missing-value", f"{n} values; they match the reference from token 2 on: the prediction of "
                                          "token 1 is missing")
        if matches(user, ref[:-1], tol):
            return found("missing-value", f"{n} values; they match the reference without its last entry")
    if n == m:
        if matches(user[1:], ref[:-1], tol):
            return found("shifted-target", "target shifted by one: entry i holds the reference's entry i-1 (scores "
                                           "one position late)")
        if matches(user[:-1], ref[1:], tol):
            return found("shifted-target", "target shifted by one: entry i holds the reference's entry i+1 (scores "
                                           "one position early)")
        if "same_token" in variants and matches(user, variants["same_token"], tol):
            return found("shifted-target", "target shifted by one: it scores the token just fed (input_ids[idx]) "
                                           "instead of the next one (input_ids[idx + 1])")
        if "two_ahead" in variants and matches(user, variants["two_ahead"], tol):
            return found("shifted-target", "target shifted by one: it scores input_ids[idx + 2] instead of "
                                           "input_ids[idx + 1]")
        for key, series in variants.items():
            if key.startswith("mode:") and matches(user, series, tol):
                mode = key.split(":", 1)[1]
                if requested_mode == "in-cache" and mode in ("naive", "absolute"):
                    return found("no-position-shift", "positions not shifted after eviction: matches "
                                                      f"{MODE_TEXT[mode]}, not the requested in-cache mode")
                return found("wrong-position-mode", f"matches {MODE_TEXT.get(mode, mode)}, not the requested "
                                                    f"{requested_mode} mode")
        for key in ("concat", "concat_whole"):
            if key in variants and matches(user, variants[key], tol):
                return found("no-cache-reset", "cache not reset between samples: it matches the reference run on the "
                                               "previous sample followed by this one")
    return found("unknown", "no known bug matches")


def _fmt(x: float) -> str:
    return "inf (NaN in the scores)" if not np.isfinite(x) else f"{x:.3g}"
