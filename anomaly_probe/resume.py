"""``anomaly-probe run --resume RUN_DIR``: continue a run folder, skipping every unit it already holds.

A run folder is a checkpoint: every finished unit has its ``tokens/<key>.npz`` and its record in
``results.json`` (rewritten atomically after every unit). Resuming reads the saved configuration back
(other run flags must repeat it exactly), loads the model, checks that it would score the same
samples on the same device and dtype, and puts every finished unit whose arrays are readable back
into the session; the pipeline then scores only what is missing and judges everything again.
"""

from __future__ import annotations

import json
import types
import typing
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from anomaly_probe.config import RunConfig
from anomaly_probe.errors import UserError
from anomaly_probe.results import SCHEMA_VERSION

TOKEN_ARRAYS = ("nll", "correct", "query_pos", "n_keys")


@dataclass
class SavedRun:
    """A run folder read back: its path, its ``results.json`` and the configuration it ran with."""

    run_dir: Path
    results: dict
    config: RunConfig

    @property
    def status(self) -> str:
        return str(self.results.get("status"))


def load_saved_run(path: str) -> SavedRun:
    """Read ``RUN_DIR/results.json`` for ``--resume``.

    Raises
    ------
    UserError
        No such folder, no or unreadable results.json, another schema, an ``import`` folder, or a
        saved configuration this version cannot use.
    """
    run_dir = Path(path).expanduser()
    where = f"--resume {path!r}"
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{where} is a file; give the run folder printed by `anomaly-probe run`")
    if not run_dir.is_dir():
        raise UserError(f"{where}: no such folder (give the run folder printed by `anomaly-probe run`)")
    file = run_dir / "results.json"
    if not file.is_file():
        raise UserError(f"{where}: no results.json in the folder, so nothing was saved to resume; start a new run")
    try:
        results = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: results.json is not valid JSON (line {exc.lineno}: {exc.msg}); "
                        "start a new run with another --out") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{where}: cannot read results.json ({type(exc).__name__})") from None
    if not isinstance(results, dict) or results.get("schema_version") != SCHEMA_VERSION:
        version = results.get("schema_version") if isinstance(results, dict) else None
        raise UserError(f"{where}: results.json has schema_version {version!r}; this anomaly-probe resumes "
                        f"schema_version {SCHEMA_VERSION} only")
    config = results.get("config")
    if isinstance(config, dict) and config.get("command") == "import":
        raise UserError(f"{where}: this folder was written by `anomaly-probe import`; there is nothing to resume")
    saved = SavedRun(run_dir, results, config_from_saved(config, where))
    if saved.status != "complete":
        try:
            probe = run_dir / ".write-test"
            probe.write_text("ok")
            probe.unlink()
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
        if dest == "resume":
            continue
        if dest == "out":
            if Path(str(value)).expanduser().resolve() != saved.run_dir.resolve():
                raise UserError(f"--out {value!r} with --resume: the run continues in its own folder "
                                f"{str(saved.run_dir)!r}; drop --out")
            continue
        field = "hypotheses" if dest == "hypothesis" else dest
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
    for run in saved.results.get("runs") or []:
        key = run.get("key") if isinstance(run, dict) else None
        if not isinstance(key, str) or key in session.arrays:
            continue
        arrays = _load_tokens(saved.run_dir, run)
        trace = run.get("trace_file")
        if arrays is None:
            notes.append(f"{key}: its tokens file is missing or unreadable; scoring it again")
        elif trace and not (saved.run_dir / str(trace)).is_file():
            notes.append(f"{key}: its trace file is missing; scoring it again")
        else:
            session.runs.append(run)
            session.arrays[key] = arrays
    return notes


def _check_same_setup(session, saved: SavedRun) -> None:
    where = f"--resume {str(saved.run_dir)!r}"
    env = saved.results.get("environment")
    env = env if isinstance(env, dict) else {}
    for key in ("device", "dtype"):
        was, now = env.get(key), session.environment.get(key)
        if was is not None and was != now:
            raise UserError(f"{where}: the run was scored with {key} {was} but here it resolves to {now}; resume it "
                            f"where {key} {was} is available (mixed units would not be comparable)")
    inputs = saved.results.get("inputs")
    was = inputs.get("samples_sha256") if isinstance(inputs, dict) else None
    if was is not None and was != session.inputs["samples_sha256"]:
        raise UserError(f"{where}: the text's samples changed since the run started (different --text file "
                        "content or tokenizer); restore the text, or start a new run")
    model = saved.results.get("model")
    tc = model.get("trained_context") if isinstance(model, dict) else None
    if tc is not None and tc != session.loaded.trained_context:
        raise UserError(f"{where}: the model's trained context was {tc}, now {session.loaded.trained_context}; "
                        "the model changed since the run started: start a new run")


def _load_tokens(run_dir: Path, run: dict) -> dict[str, np.ndarray] | None:
    rel = run.get("tokens_file")
    if not isinstance(rel, str) or not rel:
        return None
    try:
        with np.load(run_dir / rel, allow_pickle=False) as z:
            arrays = {k: z[k] for k in TOKEN_ARRAYS}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return None
    n = run.get("tokens_scored")
    if any(a.ndim != 1 for a in arrays.values()) or len({a.size for a in arrays.values()}) != 1 \
            or (isinstance(n, int) and arrays["nll"].size != n):
        return None
    return arrays
