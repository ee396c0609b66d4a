"""Select and run the checks; a crash in one check is an ERROR result and the others still run."""

from __future__ import annotations

import dataclasses
import fnmatch
import time
import traceback
from typing import Callable

from anomaly_probe.check.context import CheckContext
from anomaly_probe.check.engine_checks import Check, engine_checks
from anomaly_probe.check.result import ERROR, CheckResult
from anomaly_probe.check.scorer_load import ScorerError
from anomaly_probe.errors import UserError


def selected(checks: list[Check], only: tuple[str, ...]) -> list[Check]:
    """The checks whose name matches one of ``only`` (all without patterns).

    A pattern is an ``fnmatch`` glob (``engines.*``); a plain word also matches as a dotted prefix
    (``scorer`` selects ``scorer.full`` and ``scorer.streaming_llm.in-cache``).

    Raises
    ------
    UserError
        A pattern that matches no check (the message lists the names).
    """
    if not only:
        return checks
    keep = []
    for pattern in only:
        hits = [c for c in checks if fnmatch.fnmatchcase(c.name, pattern) or c.name.startswith(pattern + ".")]
        if not hits:
            raise UserError(f"--only {pattern!r} matches no check. Available: {', '.join(c.name for c in checks)}")
        keep += [c for c in hits if c not in keep]
    return [c for c in checks if c in keep]  # the suite's order (numerics.finite stays last)


def all_checks(method, scorer_suite=None) -> list[Check]:
    """Engine checks, then the scorer's checks when a scorer is given (``numerics.finite`` last)."""
    checks = engine_checks()
    finite = [c for c in checks if c.name == "numerics.finite"]
    checks = [c for c in checks if c.name != "numerics.finite"]
    if scorer_suite is not None:
        checks += scorer_suite.checks(method)
    return checks + finite


def run_suite(ctx: CheckContext, checks: list[Check],
              on_result: Callable[[CheckResult], None] | None = None) -> list[CheckResult]:
    """Run ``checks`` in order.

    Raises
    ------
    ScorerError
        The user's scorer cannot be called as documented (bad input: the command exits with 2).
    """
    results = []
    for check in checks:
        start = time.perf_counter()
        try:
            result = check.run(ctx)
        except ScorerError:
            raise
        except (UserError, Exception) as exc:  # noqa: BLE001 - one broken check must not stop the suite
            result = CheckResult("", ERROR, f"{type(exc).__name__}: {_first_line(exc)}{_location(exc)}")
        result = dataclasses.replace(result, name=check.name, seconds=time.perf_counter() - start)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else "(no message)"


def _location(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    return f" at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else ""
