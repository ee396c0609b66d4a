"""Load a user's scorer (``--scorer module:function`` or ``path/to/file.py:function``) and call it safely.

The contract (also in the README)::

    fn(model, input_ids, method) -> sequence of T-1 per-token NLL (nats)

``model`` is the loaded HF causal LM (eval mode, on its device and dtype), ``input_ids`` a
``torch.LongTensor`` of shape (1, T) on the model's device, and ``method`` the plain description of the
cache policy (``CacheMethod.describe()`` plus ``label``), e.g. ``{"method": "streaming_llm",
"sink_size": 4, "recent_size": 252, "position_mode": "in-cache", "capacity": 256, "label": ...}``.
Entry ``i`` of the result is the NLL of token ``i + 1``. The call runs under ``torch.no_grad()``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from anomaly_probe.errors import UserError

Scorer = Callable[[torch.nn.Module, torch.Tensor, dict], object]


class ScorerError(UserError):
    """The scorer cannot be loaded or returned something that is not per-token NLL (exit code 2)."""


def load_scorer(spec: str) -> Scorer:
    """Import the scorer named by ``spec``.

    Parameters
    ----------
    spec : str
        ``package.module:function`` (importable from the current folder or the environment) or
        ``path/to/file.py:function``.

    Raises
    ------
    ScorerError
        Malformed spec, missing file or module, an import that raises, or no such callable.
    """
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name or not name.isidentifier():
        raise ScorerError(f"--scorer {spec!r}: expected module:function or path/to/file.py:function")
    if where.endswith(".py") or "/" in where or "\\" in where:
        module = _load_file(spec, Path(where).expanduser())
    else:
        module = _load_module(spec, where)
    fn = getattr(module, name, None)
    if fn is None:
        names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        import difflib

        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ScorerError(f"--scorer {spec!r}: {where} has no {name!r}.{hint}")
    if not callable(fn):
        raise ScorerError(f"--scorer {spec!r}: {name!r} is a {type(fn).__name__}, not a function")
    return fn


def _load_file(spec: str, path: Path):
    if not path.is_file():
        raise ScorerError(f"--scorer {spec!r}: no such file {str(path)!r}")
    mod_name = f"anomaly_probe_user_scorer_{abs(hash(str(path.resolve())))}"
    try:
        loader_spec = importlib.util.spec_from_file_location(mod_name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise ScorerError(f"--scorer {spec!r}: {str(path)!r} is not a Python file")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[mod_name] = module
        loader_spec.loader.exec_module(module)
    except ScorerError:
        raise
    except BaseException as exc:  # noqa: BLE001 - any failure while importing user code is bad input
        sys.modules.pop(mod_name, None)
        raise ScorerError(f"--scorer {spec!r}: importing {str(path)!r} failed ({_short(exc)})") from None
    return module


def _load_module(spec: str, where: str):
    cwd = str(Path.cwd())
    added = cwd not in sys.path
    if added:  # a console script does not put the current folder on sys.path; `python -m` does
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(where)
    except BaseException as exc:  # noqa: BLE001
        raise ScorerError(f"--scorer {spec!r}: cannot import {where!r} ({_short(exc)})") from None
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def _short(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg[:200]}" if msg else type(exc).__name__


def call_scorer(fn: Scorer, spec: str, model: torch.nn.Module, ids: torch.Tensor, method: dict) -> np.ndarray:
    """Call the scorer on one sample and return its per-token NLL as float64.

    Parameters
    ----------
    ids : torch.Tensor
        Token ids of one sample, shape (T,).

    Returns
    -------
    np.ndarray
        Shape (n,), float64, with ``n`` in ``T-2 .. T`` (other lengths are rejected; ``T`` and ``T-2``
        are kept so that the diagnosis can name an off-by-one).

    Raises
    ------
    ScorerError
        Not a 1-D sequence of numbers, or a length that is not within one of ``T - 1``.
    Exception
        Whatever the scorer itself raises (the caller reports it as an ERROR result).
    """
    T = int(ids.numel())
    device = next(model.parameters()).device
    with torch.no_grad():
        out = fn(model, ids.to(device)[None].clone(), dict(method))
    values = to_array(out, spec, T)
    if not T - 2 <= values.size <= T:
        raise ScorerError(f"--scorer {spec!r} returned {values.size} values for a {T}-token sample; expected "
                          f"T-1 = {T - 1} per-token NLLs (the first token is never scored)")
    return values


def to_array(out, spec: str, T: int) -> np.ndarray:
    """``out`` (list, tuple, numpy array or tensor of numbers) as a float64 array of shape (n,)."""
    what = type(out).__name__
    if isinstance(out, torch.Tensor):
        if out.is_complex() or out.dtype == torch.bool:
            raise ScorerError(f"--scorer {spec!r} returned a {out.dtype} tensor; expected floats (NLL, nats)")
        arr = out.detach().to("cpu", torch.float64).numpy()
    elif isinstance(out, (list, tuple, np.ndarray)):
        try:
            arr = np.asarray([float(v) for v in np.asarray(out, dtype=object).ravel()], dtype=np.float64)
            arr = arr.reshape(np.asarray(out, dtype=object).shape)
        except (TypeError, ValueError):
            bad = next((v for v in np.asarray(out, dtype=object).ravel() if not _is_number(v)), None)
            raise ScorerError(f"--scorer {spec!r} returned a {what} holding {type(bad).__name__} values; expected "
                              f"{T - 1} numbers (per-token NLL, nats)") from None
    else:
        raise ScorerError(f"--scorer {spec!r} returned a {what}; expected a list, numpy array or tensor of "
                          f"{T - 1} per-token NLLs (nats)")
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]  # (1, T-1), the batch dimension kept
    if arr.ndim != 1:
        raise ScorerError(f"--scorer {spec!r} returned shape {tuple(arr.shape)}; expected ({T - 1},) per-token NLLs")
    return arr


def _is_number(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False
