"""JSON from a user's file: a nesting too deep to handle fails like any other malformed JSON.

``json.loads`` raises ``RecursionError`` (not ``JSONDecodeError``) on a deeply nested document, and a
document nested just below Python's limit parses but breaks whatever walks it next (writing it back,
copying, rendering). :func:`loads` turns both into ``json.JSONDecodeError`` so that every reader's
existing "not valid JSON" line covers them. No file we write or read legitimately nests deeper than a
few levels; :data:`MAX_DEPTH` leaves a wide margin.
"""

from __future__ import annotations

import json

MAX_DEPTH = 100
"""Deepest nesting of arrays/objects accepted (results.json and per-token logs use fewer than 10)."""


def loads(text: str, object_pairs_hook=None):
    """``json.loads(text, object_pairs_hook=...)``, refusing nesting deeper than :data:`MAX_DEPTH`.

    Raises
    ------
    json.JSONDecodeError
        Malformed JSON, or nested too deeply (the message says so).
    """
    try:
        obj = json.loads(text, object_pairs_hook=object_pairs_hook)
    except RecursionError:
        raise json.JSONDecodeError(f"nested too deeply (more than {MAX_DEPTH} levels)", text, 0) from None
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth(obj) > MAX_DEPTH:  # count: cheap, in C
        raise json.JSONDecodeError(f"nested too deeply (more than {MAX_DEPTH} levels)", text, 0)
    return obj


def _depth(obj) -> int:
    """Nesting depth of arrays/objects in ``obj`` (a scalar is 0), without recursion."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            return level
        stack.extend((c, level + 1) for c in children if isinstance(c, (dict, list)))
    return deepest
