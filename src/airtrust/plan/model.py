"""What airtrust wants on a cluster, and what it would change to get there.

Frozen data only: building, diffing and rendering are pure functions over
these types, so a plan can be saved, shown and applied exactly as shown.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from airtrust.errors import InputError
from airtrust.plan.imagepaths import ImagePatch

__all__ = [
    "BACKUP_OF",
    "BUNDLE_HASH",
    "CERT_HASH",
    "MANAGED_BY",
    "Action",
    "Change",
    "Desired",
    "FailurePolicy",
    "JsonObj",
    "Plan",
    "SavedChange",
    "SavedPlan",
    "desired_digest",
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


class FailurePolicy(enum.StrEnum):
    """The injection webhook's ``failurePolicy`` (admissionregistration/v1): what the
    apiserver does with a pod while the webhook cannot answer. ``Ignore`` admits it
    uninjected, ``Fail`` refuses it. The values are the API's, spelled as it spells them."""

    IGNORE = "Ignore"
    FAIL = "Fail"


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
    #: True when live data keys would get other values (another CA, another certificate).
    replaces_data: bool = False
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

    def to_dict(self) -> dict[str, Any]:
        """The plan as ``plan -o json`` shows it: reasons by fingerprint, never key material."""
        return {
            "changes": [
                {
                    "context": c.context,
                    "kind": c.desired.kind,
                    "namespace": c.desired.namespace,
                    "name": c.desired.name,
                    "purpose": c.desired.purpose,
                    "action": str(c.action),
                    "reasons": list(c.reasons),
                    "foreign_managers": list(c.foreign_managers),
                }
                for c in self.changes
            ],
            "pending": len(self.pending),
            "warnings": list(self.warnings),
        }


def desired_digest(desired: Desired) -> str:
    """A digest of exactly what would be sent (manifest or patch operations): a saved
    plan records it instead of the object, which may hold a private key."""
    body: Any = desired.manifest
    if body is None:
        body = [op for patch in desired.patches for op in patch.ops()]
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class SavedChange:
    context: str
    ref: str
    action: str
    #: the live object's resourceVersion when planned (None: it did not exist)
    resource_version: str | None
    digest: str


@dataclass(frozen=True)
class SavedPlan:
    """``plan --out FILE``: what ``apply FILE`` must find unchanged before it writes,
    as terraform refuses a stale saved plan. No object, no key material: refs, actions,
    live resourceVersions and digests of what would be sent."""

    config: str
    changes: tuple[SavedChange, ...]

    FORMAT: ClassVar[str] = "airtrust-plan/v1"

    @classmethod
    def of(cls, plan: Plan, config: str) -> SavedPlan:
        return cls(
            config,
            tuple(
                SavedChange(
                    c.context,
                    c.desired.ref,
                    str(c.action),
                    c.live_resource_version,
                    desired_digest(c.desired),
                )
                for c in plan.changes
            ),
        )

    def to_json(self) -> str:
        data = {
            "format": self.FORMAT,
            "config": self.config,
            "changes": [vars(c) for c in self.changes],
        }
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, *, source: str) -> SavedPlan:
        try:
            data = json.loads(text)
            if data.get("format") != cls.FORMAT:
                raise ValueError(f"format is {data.get('format')!r}")
            changes = tuple(SavedChange(**c) for c in data["changes"])
            return cls(str(data["config"]), changes)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(
                f"{source} is not a plan airtrust saved ({exc})",
                hint="write one with 'airtrust plan --out FILE'",
                reference="bad-plan-file",
            ) from None

    def stale(self, current: SavedPlan) -> list[str]:
        """Why ``current`` (planned now) is not this plan; empty when it still is."""
        why = []
        before = {(c.context, c.ref): c for c in self.changes}
        now = {(c.context, c.ref): c for c in current.changes}
        for key in sorted(before.keys() | now.keys()):
            old, new = before.get(key), now.get(key)
            where = f"{key[1]} on '{key[0]}'"
            if old is None:
                why.append(f"{where} is new in the plan")
            elif new is None:
                why.append(f"{where} is no longer planned")
            elif old.resource_version != new.resource_version:
                why.append(
                    f"{where} changed on the cluster (resourceVersion "
                    f"{old.resource_version or 'none'} -> {new.resource_version or 'none'})"
                )
            elif old.digest != new.digest or old.action != new.action:
                why.append(
                    f"{where} would now be sent differently (the config or its files changed)"
                )
        return why
