"""JUnit XML for CI systems: one ``<testcase>`` per check, failures and errors with their reason."""

from __future__ import annotations

import json
import re
import socket
import time
import xml.etree.ElementTree as ET

from anomaly_probe.check.result import ERROR, FAIL, SKIP, CheckResult

SUITE_NAME = "anomaly-probe check"
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def junit_xml(results: list[CheckResult], properties: dict[str, str] | None = None) -> str:
    """The results as a JUnit XML document (``testsuites`` > ``testsuite`` > ``testcase``).

    A check's group (the first part of its dotted name) is the test case's ``classname`` so that CI
    systems group them; ``fail`` becomes ``<failure>``, ``error`` ``<error>`` and ``skip`` ``<skipped>``.
    """
    total = f"{sum(r.seconds for r in results):.3f}"
    n = {s: str(sum(r.status == s for r in results)) for s in (FAIL, ERROR, SKIP)}
    root = ET.Element("testsuites", name=SUITE_NAME, tests=str(len(results)), failures=n[FAIL], errors=n[ERROR],
                      skipped=n[SKIP], time=total)
    suite = ET.SubElement(root, "testsuite", name=SUITE_NAME, tests=str(len(results)), failures=n[FAIL],
                          errors=n[ERROR], skipped=n[SKIP], time=total, hostname=socket.gethostname(),
                          timestamp=time.strftime("%Y-%m-%dT%H:%M:%S"))
    if properties:
        props = ET.SubElement(suite, "properties")
        for k, v in properties.items():
            ET.SubElement(props, "property", name=str(k), value=str(v))
    for r in results:
        case = ET.SubElement(suite, "testcase", classname=f"anomaly_probe.{r.name.split('.', 1)[0]}", name=r.name,
                             time=f"{r.seconds:.3f}")
        if r.status == FAIL:
            ET.SubElement(case, "failure", message=_clean(r.reason), type="CheckFailed").text = _detail(r)
        elif r.status == ERROR:
            ET.SubElement(case, "error", message=_clean(r.reason), type="CheckError").text = _detail(r)
        elif r.status == SKIP:
            ET.SubElement(case, "skipped", message=_clean(r.reason))
        ET.SubElement(case, "system-out").text = _clean(r.reason)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _detail(r: CheckResult) -> str:
    body = {"observed": r.observed, "threshold": r.threshold, "unit": r.unit, **r.details}
    return _clean(json.dumps(body, indent=1, default=str, allow_nan=True))


def _clean(text: str) -> str:
    """Drop characters XML 1.0 cannot hold (control characters from an exception message)."""
    return _NOT_XML.sub("?", text)
