"""A tiny name -> factory registry, shared by models, losses and teacher-output sources.

Lookups by name keep configs plain data (a string in YAML) and keep ``if name == ...`` ladders out of
the training loop: adding a model or a loss touches one module and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from cxrdistill.errors import CxrDistillError

T = TypeVar("T")


class UnknownNameError(CxrDistillError, KeyError):
    """A name (model, loss, ...) that is not registered; the message lists the known ones."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""  # KeyError would quote the whole sentence


class Registry(Generic[T]):
    """Maps names to objects (usually factories); ``register`` is a decorator."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise KeyError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries))
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
