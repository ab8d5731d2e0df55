"""A named registry: the one shape behind the backbone and SSL-method registries."""

from __future__ import annotations

from typing import Generic, TypeVar

from sslmem.errors import ConfigError

SpecT = TypeVar("SpecT")


class Registry(Generic[SpecT]):
    """Specs registered by name, looked up with errors that list the valid names.

    Args:
        kind: What is registered, for messages (e.g. ``"architecture"``, ``"SSL method"``).

    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._specs: dict[str, SpecT] = {}

    def add(self, name: str, spec: SpecT) -> None:
        """Register ``spec`` under ``name``.

        Raises:
            ConfigError: The name is already taken.

        """
        if name in self._specs:
            raise ConfigError(f"{self.kind} {name!r} is already registered", "choose another name")
        self._specs[name] = spec

    def copy(self) -> Registry[SpecT]:
        """A registry of the same kind holding the same specs (to extend without side effects)."""
        clone: Registry[SpecT] = Registry(self.kind)
        clone._specs = dict(self._specs)
        return clone

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._specs)

    def get(self, name: str) -> SpecT:
        """The spec registered as ``name``.

        Raises:
            ConfigError: Unknown name (the message lists the valid names).

        """
        try:
            return self._specs[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}", f"use one of: {', '.join(self.names())}"
            ) from None
