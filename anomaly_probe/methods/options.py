"""``--method-arg key=value`` options, typed by the policy dataclass' field types.

>>> from anomaly_probe.methods.h2o import H2O
>>> typed_options(H2O, ["heavy_size=64", "position_mode=absolute"])
{'heavy_size': 64, 'position_mode': 'absolute'}
"""

from __future__ import annotations

import dataclasses
import typing

from anomaly_probe.errors import UserError

_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def split_options(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}``; a malformed or repeated pair is a UserError."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise UserError(f"--method-arg {pair!r}: expected key=value, e.g. heavy_size=128")
        if key in out:
            raise UserError(f"--method-arg {key} is given twice")
        out[key] = value.strip()
    return out


def option_fields(cls: type) -> dict[str, object]:
    """Field name -> type annotation of a dataclass (``ClassVar`` excluded); {} for other classes."""
    if not dataclasses.is_dataclass(cls):
        return {}
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - unresolvable annotations: fall back to their text
        hints = {}
    return {f.name: hints.get(f.name, f.type) for f in dataclasses.fields(cls) if f.init}


def convert(key: str, text: str, annotation: object) -> object:
    """``text`` as ``annotation`` (int, float, bool, str, or an optional of one); str when unknown."""
    names = _type_names(annotation)
    if "None" in names and text.lower() in ("none", "null"):
        return None
    for name, fn in (("bool", _bool), ("int", int), ("float", float)):
        if name in names:
            try:
                return fn(text)
            except ValueError:
                raise UserError(f"--method-arg {key}={text}: expected {name}") from None
    return text


def typed_options(cls: type, pairs: list[str] | tuple[str, ...], allowed: set[str] | None = None) -> dict[str, object]:
    """Parse ``pairs`` for ``cls``: every key must be one of its fields (or ``allowed``).

    Raises
    ------
    UserError
        An unknown key (listing the known ones) or a value of the wrong type.
    """
    fields = option_fields(cls)
    known = set(fields) if allowed is None else allowed
    out = {}
    for key, text in split_options(pairs).items():
        if key not in known:
            import difflib

            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UserError(f"--method-arg {key}: {getattr(cls, 'name', cls.__name__)} has no option {key!r}.{hint} "
                            f"Options: {', '.join(sorted(known)) or 'none'}")
        out[key] = convert(key, text, fields.get(key, str))
    return out


def _bool(text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise ValueError(text)


def _type_names(annotation: object) -> set[str]:
    """``int | None`` -> {"int", "None"}; works on types and on annotation strings."""
    if isinstance(annotation, str):
        return {part.strip().replace("NoneType", "None") for part in annotation.replace("Optional[", "").strip("]").split("|")}
    args = typing.get_args(annotation)
    if args:
        return set().union(*(_type_names(a) for a in args))
    if annotation is type(None):
        return {"None"}
    return {getattr(annotation, "__name__", str(annotation))}
