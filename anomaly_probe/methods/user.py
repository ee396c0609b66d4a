"""The user's own policy: ``--method path/to/file.py:ClassName`` or ``--method module:ClassName``.

Loaded with the same loader and errors as ``check --scorer`` (:mod:`anomaly_probe.check.scorer_load`).
The class is either

* a :class:`~anomaly_probe.methods.base.CacheMethod` subclass (a frozen dataclass, e.g. a
  :class:`~anomaly_probe.methods.scored.ScoredEviction` with its own ``score``), built with the
  ``--method-arg key=value`` options typed by its field types; or
* a kvpress ``ScorerPress``-like class or instance (anything with ``score(module, hidden_states, keys,
  values, attentions, kwargs)``), wrapped by :class:`~anomaly_probe.methods.press.PressPolicy`: the
  options ``sink_size``, ``heavy_size``, ``recent_size``, ``position_mode`` and ``compress_every`` go to
  the policy, every other one to the press class.
"""

from __future__ import annotations

from anomaly_probe.errors import UserError
from anomaly_probe.methods.base import CacheMethod
from anomaly_probe.methods.options import option_fields, split_options, typed_options
from anomaly_probe.methods.press import PressPolicy, is_press

POLICY_OPTIONS = ("sink_size", "heavy_size", "recent_size", "position_mode", "compress_every")


def is_user_spec(name: str) -> bool:
    """True for ``file.py:Class`` or ``module:Class`` (built-in names have no colon)."""
    return ":" in name


def load_policy(spec: str, pairs: list[str] | tuple[str, ...], defaults: dict) -> CacheMethod:
    """Import ``spec`` and build the policy.

    Parameters
    ----------
    spec : str
        ``path/to/file.py:ClassName`` or ``module:ClassName``.
    pairs : list of str
        ``--method-arg`` values (``key=value``).
    defaults : dict
        ``position_mode`` and ``compress_every`` from the command line (options override them).

    Raises
    ------
    UserError
        Bad spec, import failure, an object that is no policy or press, unknown or mistyped options,
        or a constructor that rejects them.
    """
    from anomaly_probe.check.scorer_load import ScorerError, load_scorer

    try:
        obj = load_scorer(spec)
    except ScorerError as exc:
        raise UserError(str(exc).replace("--scorer", "--method", 1).replace("module:function", "module:ClassName")
                        .replace("file.py:function", "file.py:ClassName")) from None
    if isinstance(obj, type) and issubclass(obj, CacheMethod):
        if "name" not in vars(obj):
            obj.name = obj.__name__  # the label names the user's class, not its base class
        fields = option_fields(obj)
        kwargs = {k: v for k, v in defaults.items() if k in fields} | typed_options(obj, pairs)
        return _construct(spec, obj, kwargs)
    if is_press(obj):
        return _press(spec, obj, pairs, defaults)
    raise UserError(f"--method {spec!r}: {type(obj).__name__} is neither a CacheMethod subclass nor a press with "
                    "score(module, hidden_states, keys, values, attentions, kwargs)")


def _press(spec: str, obj: object, pairs, defaults: dict) -> CacheMethod:
    options = split_options(pairs)
    mine = [f"{k}={v}" for k, v in options.items() if k in POLICY_OPTIONS]
    theirs = [f"{k}={v}" for k, v in options.items() if k not in POLICY_OPTIONS]
    if isinstance(obj, type):
        press = _construct(spec, obj, typed_options(obj, theirs, allowed=set(option_fields(obj)))) if theirs \
            else _construct(spec, obj, {})
    elif theirs:
        raise UserError(f"--method {spec!r} is a press instance; it takes no options ({', '.join(theirs)})")
    else:
        press = obj
    name = spec.rpartition(":")[2] + (f"[{','.join(theirs)}]" if theirs else "")
    kwargs = {k: v for k, v in defaults.items() if k in POLICY_OPTIONS} | typed_options(
        PressPolicy, mine, allowed=set(POLICY_OPTIONS))
    return _construct(spec, PressPolicy, kwargs | {"press": press, "spec": name})


def _construct(spec: str, cls, kwargs: dict):
    try:
        return cls(**kwargs)
    except UserError:
        raise
    except (TypeError, ValueError) as exc:
        raise UserError(f"--method {spec!r}: {cls.__name__}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}) "
                        f"failed: {exc}") from None


__all__ = ["POLICY_OPTIONS", "is_user_spec", "load_policy"]
