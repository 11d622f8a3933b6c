"""What airtrust wants on a cluster, and what it would change to get there.

Frozen data only: building, diffing and rendering are pure functions over
these types, so a plan can be saved, shown and applied exactly as shown.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from airtrust.plan.imagepaths import ImagePatch

__all__ = [
    "BACKUP_OF",
    "BUNDLE_HASH",
    "CERT_HASH",
    "MANAGED_BY",
    "Action",
    "Change",
    "Desired",
    "JsonObj",
    "Plan",
]

JsonObj = dict[str, Any]

MANAGED_BY = ("app.kubernetes.io/managed-by", "airtrust")
BUNDLE_HASH = "airtrust.io/bundle-sha256"
CERT_HASH = "airtrust.io/certificate-sha256"
BACKUP_OF = "airtrust.io/backup-of"


class Action(enum.StrEnum):
    CREATE = "create"
    UPDATE = "update"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class Desired:
    """One object airtrust wants on one context."""

    context: str
    kind: str  # Namespace, Secret, or the cluster-config kind
    namespace: str | None
    name: str
    purpose: str
    #: Full manifest for Namespace/Secret (sent as is); None for cluster-config patches.
    manifest: JsonObj | None = None
    #: Fields of a cluster-config object to point at patched images.
    patches: tuple[ImagePatch, ...] = ()
    #: Secret key that holds a CA bundle / certificate chain, for fingerprint diffs.
    bundle_key: str | None = None
    cert_key: str | None = None

    @property
    def ref(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}"


@dataclass(frozen=True)
class Change:
    desired: Desired
    action: Action
    reasons: tuple[str, ...] = ()
    #: Field managers other than airtrust that own fields apply would change.
    foreign_managers: tuple[str, ...] = ()
    #: True when live data exists that airtrust did not write and would overwrite.
    overwrites_foreign_data: bool = False
    live_resource_version: str | None = None
    #: The live object this change was planned against (for backups), never shown.
    live: JsonObj | None = field(default=None, repr=False, compare=False)

    @property
    def context(self) -> str:
        return self.desired.context


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]
    #: findings that need the user (e.g. sidecar images not found), each with its fix
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def pending(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.action is not Action.UNCHANGED)

    @property
    def has_changes(self) -> bool:
        return bool(self.pending)

    def for_context(self, context: str) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.context == context)
