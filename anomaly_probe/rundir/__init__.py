"""The run folder's one owner: its typed records, creating it, reading it back, writing its files.

``anomaly-probe run``, ``import``, ``run --resume`` and ``report`` all go through this package, so a
new ``results.json`` field is added in one place (:mod:`~anomaly_probe.rundir.records` or
:mod:`~anomaly_probe.rundir.schema`). Nothing here imports torch: ``report`` and ``import`` stay light.

Layout of a folder: docs/FORMATS.md. Schema: :mod:`anomaly_probe.rundir.schema`.
"""

from __future__ import annotations

from anomaly_probe.rundir.comparison import Comparison, compare
from anomaly_probe.rundir.files import (TOKEN_ARRAYS, load_npz, load_tokens, save_npz, save_tokens, write_json,
                                        write_results)
from anomaly_probe.rundir.prepare import REPORTS_DIR, check_out, check_writable, prepare
from anomaly_probe.rundir.read import RunFolder, read
from anomaly_probe.rundir.records import Failure, RoleEntry, UnitRecord
from anomaly_probe.rundir.schema import SCHEMA_VERSION, Results
from anomaly_probe.verdict import Verdict

__all__ = ["Comparison", "Failure", "REPORTS_DIR", "Results", "RoleEntry", "RunFolder", "SCHEMA_VERSION",
           "TOKEN_ARRAYS", "UnitRecord", "Verdict", "check_out", "check_writable", "compare", "load_npz",
           "load_tokens", "prepare", "read", "save_npz", "save_tokens", "write_json", "write_results"]
