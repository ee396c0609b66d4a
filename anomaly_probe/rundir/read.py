"""Reading a run folder back: ``results.json`` found, parsed and checked, with one-line errors.

Two commands read a folder and say different things when it is not usable: ``report`` names the path,
``run --resume`` names its flag and what to do instead. The checks are the same.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from anomaly_probe import json_input
from anomaly_probe.errors import UserError
from anomaly_probe.rundir.files import safe_rel
from anomaly_probe.rundir.schema import SCHEMA_VERSION, Results, validate

PATH_FIELDS = ("tokens_file", "trace_file")
"""Fields of a ``runs`` entry that name a file of the folder: relative, never absolute or with ``..``."""


@dataclass
class RunFolder:
    """A run folder read back.

    Attributes
    ----------
    run_dir : Path
        The folder.
    data : dict
        ``results.json`` as parsed (a JSON object with the supported ``schema_version``).
    """

    run_dir: Path
    data: dict
    _results: Results | None = field(default=None, repr=False)

    @property
    def results(self) -> Results:
        """The typed records (parsed once, leniently: see :meth:`Results.from_dict`)."""
        if self._results is None:
            self._results = Results.from_dict(self.data)
        return self._results

    @property
    def status(self) -> str:
        return str(self.data.get("status"))


def read(path: str | Path, *, resume: bool = False) -> RunFolder:
    """Read and check ``RUN_DIR/results.json``.

    Parameters
    ----------
    path : str or Path
        The run folder.
    resume : bool
        Word the errors for ``run --resume`` (else for ``report``).

    Raises
    ------
    UserError
        The folder is missing or a file, has no results.json, the file is not valid JSON or not an
        object, its ``schema_version`` is not :data:`SCHEMA_VERSION`, a run's file path is absolute or
        contains ``..`` (:func:`unsafe_path`), or (``report``) a field has the wrong type
        (:func:`~anomaly_probe.rundir.schema.validate`; ``--resume`` reads leniently).
    """
    run_dir = Path(path).expanduser()
    file = run_dir / "results.json"
    say = _ResumeWords(str(path)) if resume else _ReportWords(str(run_dir), str(file))
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(say.is_file())
    if not run_dir.is_dir():
        raise UserError(say.missing())
    if not file.is_file():
        raise UserError(say.no_results())
    try:
        data = json_input.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(say.bad_json(exc)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(say.unreadable(exc)) from None
    if not isinstance(data, dict):
        raise UserError(say.not_object(data))
    if data.get("schema_version") != SCHEMA_VERSION:
        raise UserError(say.schema(data.get("schema_version")))
    bad = unsafe_path(data)
    if bad is not None:
        raise UserError(say.unsafe(*bad))
    if not resume:
        try:
            validate(data)
        except ValueError as exc:
            raise UserError(f"{str(file)!r}: {exc} (was the file edited by hand or by another tool?)") from None
    return RunFolder(run_dir, data)


def unsafe_path(data: dict) -> tuple[str, str] | None:
    """The first file path in ``runs`` that is absolute or contains ``..`` (``("runs[3].tokens_file", path)``),
    or None. Such a path is refused, never followed: a folder only ever names its own files."""
    runs = data.get("runs")
    for i, run in enumerate(runs if isinstance(runs, list) else []):
        if not isinstance(run, dict):
            continue
        for name in PATH_FIELDS:
            rel = run.get(name)
            if isinstance(rel, str) and rel and not safe_rel(rel):
                return f"runs[{i}].{name}", rel
    return None


class _ReportWords:
    def __init__(self, run_dir: str, file: str) -> None:
        self.run_dir, self.file = run_dir, file

    def is_file(self) -> str:
        return self.missing()

    def missing(self) -> str:
        return f"{self.run_dir!r} is not a folder (expected a run folder holding results.json)"

    def no_results(self) -> str:
        return f"{self.run_dir!r} has no results.json; is it a run folder from `anomaly-probe run`?"

    def bad_json(self, exc: json.JSONDecodeError) -> str:
        return f"{self.file!r} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"

    def unreadable(self, exc: BaseException) -> str:
        return f"cannot read {self.file!r}: {exc}"

    def not_object(self, data) -> str:
        return f"{self.file!r} holds a {type(data).__name__}, not a results object"

    def schema(self, version) -> str:
        return (f"{self.file!r} has schema_version {version!r}; this anomaly-probe reads "
                f"schema_version {SCHEMA_VERSION} only")

    def unsafe(self, where: str, rel: str) -> str:
        return (f"{self.file!r}: {where} {rel!r} is absolute or leads out of the run folder; refusing to follow "
                "it (a run folder names its own files by relative paths)")


class _ResumeWords:
    def __init__(self, path: str) -> None:
        self.where = f"--resume {path!r}"

    def is_file(self) -> str:
        return f"{self.where} is a file; give the run folder printed by `anomaly-probe run`"

    def missing(self) -> str:
        return f"{self.where}: no such folder (give the run folder printed by `anomaly-probe run`)"

    def no_results(self) -> str:
        return f"{self.where}: no results.json in the folder, so nothing was saved to resume; start a new run"

    def bad_json(self, exc: json.JSONDecodeError) -> str:
        return (f"{self.where}: results.json is not valid JSON (line {exc.lineno}: {exc.msg}); "
                "start a new run with another --out")

    def unreadable(self, exc: BaseException) -> str:
        return f"{self.where}: cannot read results.json ({type(exc).__name__})"

    def not_object(self, data) -> str:
        return self.schema(None)

    def schema(self, version) -> str:
        return (f"{self.where}: results.json has schema_version {version!r}; this anomaly-probe resumes "
                f"schema_version {SCHEMA_VERSION} only")

    def unsafe(self, where: str, rel: str) -> str:
        return (f"{self.where}: results.json's {where} {rel!r} is absolute or leads out of the run folder; "
                "refusing to follow it: start a new run")
