"""Name -> factory tables for tasks, strategies, modalities, backbones and run formats.

One decorator registers; a duplicate or non-lowercase name raises at import time, so two
plug-ins can never silently shadow each other (DESIGN rule 3). Entries keep their registration
order, which is the order `select`-style lookups (backbones, run formats) try them in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")
_NAME = re.compile(r"^[a-z][a-z0-9-]*$")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        if not _NAME.match(name):
            raise ValueError(f"{self.kind} name {name!r} must be lowercase letters, digits and '-'")

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered by {self._items[name]!r}")
            self._items[name] = factory
            return factory

        return deco

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(f"unknown {self.kind} {name!r}; available: {', '.join(sorted(self._items))}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, Callable[..., T]]]:
        """(name, factory) in registration order."""
        return iter(list(self._items.items()))

    def __contains__(self, name: str) -> bool:
        return name in self._items
