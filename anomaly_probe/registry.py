"""A tiny name -> object registry with "did you mean" errors (lm-evaluation-harness style)."""

from __future__ import annotations

import difflib
from typing import Generic, Iterator, TypeVar

from anomaly_probe.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Map user-facing names to objects.

    Parameters
    ----------
    kind : str
        What the names denote ("method", "position mode", ...); used in error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        if name in self._items:
            return self._items[name]
        close = difflib.get_close_matches(name, list(self._items), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UserError(f"Unknown {self.kind} {name!r}.{hint} Available: {', '.join(self._items)}")

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)
