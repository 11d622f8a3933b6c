"""Where ``airtrust sync`` reads the CA bundle it distributes (pure)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from airtrust.errors import InputError

__all__ = ["Source", "SourceKind"]


class SourceKind(enum.StrEnum):
    SECRET = "secret"
    CONFIGMAP = "configmap"


@dataclass(frozen=True)
class Source:
    kind: SourceKind
    namespace: str
    name: str
    key: str

    @classmethod
    def parse(cls, text: str, default_key: str) -> Source:
        """secret/NS/NAME[:KEY] or configmap/NS/NAME[:KEY]."""
        spec, _, key = text.partition(":")
        parts = spec.split("/")
        if len(parts) != 3 or parts[0] not in set(SourceKind) or not all(parts):
            raise InputError(
                f"--source {text} is not KIND/NAMESPACE/NAME[:KEY]",
                hint="e.g. --source secret/airtrust-system/local-ca:ca.pem",
            )
        return cls(SourceKind(parts[0]), parts[1], parts[2], key or default_key)

    @property
    def plural(self) -> str:
        return "secrets" if self.kind is SourceKind.SECRET else "configmaps"

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}:{self.key}"
