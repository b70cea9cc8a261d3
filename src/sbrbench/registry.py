"""A small name → object registry with "did you mean …" errors and deprecated aliases."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from sbrbench.errors import SbrError

T = TypeVar("T")

log = logging.getLogger(__name__)


def unknown_name_message(kind: str, name: str, known: list[str]) -> str:
    """Build the one-line error for an unknown name, with close matches first."""
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown {kind} {name!r}.{hint} Available: {', '.join(sorted(known)) or '(none)'}"


class Registry(Generic[T]):
    """Maps lower-case names to objects; lookups of unknown names raise a helpful `SbrError`.

    A renamed entry keeps its old name as a deprecated alias (`alias(old, new)`): `get(old)` returns
    the object registered as `new` and logs a one-line warning (once per name and registry; with no
    logging configured it goes to stderr, so the CLI shows it). `names()` lists canonical names only.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}
        self._warned: set[str] = set()

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering `obj` under `name` (names are unique)."""

        def deco(obj: T) -> T:
            key = name.lower()
            if key in self._items or key in self._aliases:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[key] = obj
            return obj

        return deco

    def alias(self, old: str, new: str) -> None:
        """Keep the deprecated name `old` working as another name of the registered `new`."""
        key, target = old.lower(), new.lower()
        if key in self._items or key in self._aliases:
            raise ValueError(f"{self.kind} {old!r} registered twice")
        if target not in self._items:
            raise ValueError(f"{self.kind} alias {old!r} names no registered {self.kind} {new!r}")
        self._aliases[key] = target

    def canonical(self, name: str) -> str:
        """The registered name that `name` (a name or a deprecated alias) stands for, or `SbrError`."""
        key = name.lower()
        if key in self._aliases:
            new = self._aliases[key]
            if key not in self._warned:
                self._warned.add(key)
                log.warning("warning: %s name %r is deprecated, use %r", self.kind, name, new)
            return new
        if key not in self._items:
            raise SbrError(unknown_name_message(self.kind, name, list(self._items)))
        return key

    def get(self, name: str) -> T:
        """Return the object registered as `name` (or under a deprecated alias) or raise `SbrError`."""
        return self._items[self.canonical(name)]

    def unregister(self, name: str) -> T:
        """Remove `name` and its aliases; returns the object (for tests registering temporary entries)."""
        key = name.lower()
        obj = self._items.pop(key)
        for old in [a for a, n in self._aliases.items() if n == key]:
            del self._aliases[old]
        return obj

    def aliases(self) -> dict[str, str]:
        """Deprecated name → registered name."""
        return dict(self._aliases)

    def names(self) -> list[str]:
        """All registered names, sorted (deprecated aliases are not listed)."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name.lower() in self._items or name.lower() in self._aliases)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
