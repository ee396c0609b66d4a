"""The check results as a rich table, a one-line summary and the ``--json`` payload."""

from __future__ import annotations

from anomaly_probe.check.result import ERROR, FAIL, PASS, SKIP, CheckResult
from anomaly_probe.reports.status import styled

JSON_SCHEMA_VERSION = 1


def counts(results: list[CheckResult]) -> dict[str, int]:
    return {s: sum(r.status == s for r in results) for s in (PASS, FAIL, ERROR, SKIP)}


def exit_code(results: list[CheckResult]) -> int:
    """0 when nothing failed or errored (skips do not fail), else 1."""
    return 1 if any(r.failed for r in results) else 0


def results_table(results: list[CheckResult]):
    """A rich table: check, status (in the one status style of every command), observed value, bound, time and
    the one-line reason."""
    from rich.table import Table

    from anomaly_probe.console import safe

    table = Table(title="anomaly-probe check", title_justify="left")
    for col, just in (("check", "left"), ("status", "left"), ("observed", "right"), ("bound", "right"),
                      ("time", "right"), ("reason", "left")):
        table.add_column(col, justify=just, overflow="fold", no_wrap=col not in ("reason", "check"),
                         ratio=3 if col == "reason" else None)
    for r in results:
        table.add_row(safe(r.name), styled(r.status), _num(r.observed), _num(r.threshold),
                      f"{r.seconds:.1f}s", safe(r.reason))
    return table


def _num(x) -> str:
    if x is None:
        return ""
    if x == 0:
        return "0"
    return f"{x:.2g}" if abs(x) < 1e-2 or abs(x) >= 1e4 else f"{x:.4g}"


def summary_line(results: list[CheckResult]) -> str:
    c = counts(results)
    word = "FAILED" if exit_code(results) else "PASSED"
    parts = [f"{c[PASS]} passed"] + [f"{c[s]} {name}" for s, name in ((FAIL, "failed"), (ERROR, "errors"),
                                                                     (SKIP, "skipped")) if c[s]]
    return f"{word}: " + ", ".join(parts)


def json_payload(results: list[CheckResult], options: dict, environment: dict, model: dict,
                 tolerance: float) -> dict:
    """Everything a CI system or a script needs: per-check records, counts, the exit code, the setup."""
    return {"schema_version": JSON_SCHEMA_VERSION, "command": "check", "passed": exit_code(results) == 0,
            "exit_code": exit_code(results), "counts": counts(results), "tolerance_nats": tolerance,
            "options": options, "model": model, "environment": environment,
            "checks": [r.to_dict() for r in results]}
