"""A registered model version as the workflow steps pass it around."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class VersionInfo:
    """A registered version and its tags."""

    name: str
    version: str
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        """``models:/<name>/<version>``."""
        return f"models:/{self.name}/{self.version}"
