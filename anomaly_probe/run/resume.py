"""``anomaly-probe run --resume RUN_DIR``: continue a run folder, skipping every unit it already holds.

A run folder is a checkpoint: every finished unit has its ``tokens/<key>.npz`` and its record in
``results.json`` (rewritten atomically after every unit). Resuming reads the saved configuration back
(other run flags must repeat it exactly), loads the model, checks that it would score the same
samples on the same device and dtype, and puts every finished unit whose arrays are readable back
into the session; the pipeline then scores only what is missing and judges everything again.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path

from anomaly_probe.config import RunConfig
from anomaly_probe.errors import UserError
from anomaly_probe.rundir import RunFolder, check_writable, load_tokens, read
from anomaly_probe.run.paths import local_path


@dataclass
class SavedRun:
    """A run folder read back for ``--resume``: the folder and the configuration it ran with."""

    folder: RunFolder
    config: RunConfig

    @property
    def run_dir(self) -> Path:
        return self.folder.run_dir

    @property
    def status(self) -> str:
        return self.folder.status


def load_saved_run(path: str) -> SavedRun:
    """Read ``RUN_DIR/results.json`` for ``--resume``.

    Raises
    ------
    UserError
        No such folder, no or unreadable results.json, another schema (:func:`anomaly_probe.rundir.read`),
        an ``import`` folder, a saved configuration this version cannot use, or an unfinished run in a
        folder that cannot be written.
    """
    folder = read(path, resume=True)
    where = f"--resume {path!r}"
    config = folder.data.get("config")
    if isinstance(config, dict) and config.get("command") == "import":
        raise UserError(f"{where}: this folder was written by `anomaly-probe import`; there is nothing to resume")
    saved = SavedRun(folder, config_from_saved(config, where))
    if saved.status != "complete":
        try:
            check_writable(folder.run_dir)
        except OSError as exc:
            raise UserError(f"{where}: the folder is not writable ({exc.strerror or exc}); fix its permissions "
                            "or copy it somewhere writable and resume the copy") from None
    return saved


def config_from_saved(data, where: str) -> RunConfig:
    """The :class:`RunConfig` saved in results.json, with every field type-checked."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: results.json has no config object; start a new run")
    hints = typing.get_type_hints(RunConfig)
    names = {f.name for f in fields(RunConfig)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserError(f"{where}: the saved config has settings this version does not know "
                        f"({', '.join(unknown)}); resume it with the anomaly-probe that started it")
    for name, value in data.items():
        if not _matches(value, hints[name]):
            raise UserError(f"{where}: the saved config's {name} = {value!r} is not a valid value; start a new run")
    return RunConfig(**data)


def _matches(value, hint) -> bool:
    """Whether a JSON value fits a RunConfig annotation (int, str, float, None, unions, list[...])."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(hint) or (object,)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def check_flags(given: dict[str, object], saved: SavedRun) -> None:
    """Refuse run flags given with ``--resume`` that differ from the saved configuration.

    Parameters
    ----------
    given : dict
        Argparse destination -> value of every flag the user typed (``resume`` included).
    """
    from anomaly_probe.hypotheses.catalog import resolve_hypotheses

    for dest, value in given.items():
        flag = "--" + dest.replace("_", "-")
        if dest in ("resume", "retry_failed"):
            continue
        if dest == "out":
            if Path(str(value)).expanduser().resolve() != saved.run_dir.resolve():
                raise UserError(f"--out {value!r} with --resume: the run continues in its own folder "
                                f"{str(saved.run_dir)!r}; drop --out")
            continue
        field = "hypotheses" if dest == "hypothesis" else dest
        if field in ("text", "model"):  # saved absolute (run.paths): compare the same way
            value = local_path(value, field)
        if not hasattr(saved.config, field):
            raise UserError(f"{flag} cannot be combined with --resume: a resumed run keeps its saved settings")
        if field == "hypotheses":
            value = resolve_hypotheses(list(value))  # type: ignore[arg-type]
        kept = getattr(saved.config, field)
        if value != kept:
            raise UserError(f"{flag} {_show(value)} differs from the saved run ({_show(kept)}); --resume keeps the "
                            f"saved settings: drop {flag}, or start a new run with another --out")


def _show(value) -> str:
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return "unset" if value is None else str(value)


def restore(session, saved: SavedRun) -> list[str]:
    """Put the saved finished units back into ``session`` (``runs`` and ``arrays``).

    Parameters
    ----------
    session : Session
        The freshly loaded session of the same run folder.

    Returns
    -------
    list of str
        One note per saved unit that is scored again (missing or unreadable npz).

    Raises
    ------
    UserError
        The session would score other samples, or on another device or dtype, than the saved run.
    """
    _check_same_setup(session, saved)
    notes = []
    for run in saved.folder.results.runs:
        if not isinstance(run.key, str) or run.key in session.arrays:
            continue
        arrays = load_tokens(saved.run_dir, run.tokens_file, run.tokens_scored)
        if arrays is None:
            notes.append(f"{run.key}: its tokens file is missing or unreadable; scoring it again")
        elif run.trace_file and not (saved.run_dir / str(run.trace_file)).is_file():
            notes.append(f"{run.key}: its trace file is missing; scoring it again")
        else:
            session.runs.append(run)
            session.arrays[run.key] = arrays
    return notes


def _check_same_setup(session, saved: SavedRun) -> None:
    where = f"--resume {str(saved.run_dir)!r}"
    results = saved.folder.results
    for key in ("device", "dtype"):
        was, now = results.environment.get(key), session.environment.get(key)
        if was is not None and was != now:
            raise UserError(f"{where}: the run was scored with {key} {was} but here it resolves to {now}; resume it "
                            f"where {key} {was} is available (mixed units would not be comparable)")
    was = (results.inputs or {}).get("samples_sha256")
    if was is not None and was != session.inputs["samples_sha256"]:
        raise UserError(f"{where}: the text's samples changed since the run started (different --text file "
                        "content or tokenizer); restore the text, or start a new run")
    tc = results.model.get("trained_context")
    if tc is not None and tc != session.loaded.trained_context:
        raise UserError(f"{where}: the model's trained context was {tc}, now {session.loaded.trained_context}; "
                        "the model changed since the run started: start a new run")
