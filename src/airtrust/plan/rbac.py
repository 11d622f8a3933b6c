"""What rights each step needs, derived from the plan (pure).

The preflight asks the apiserver about exactly these (SelfSubjectAccessReview)
before anything is written, so a user with too few rights learns all of them
at once and nothing is half-applied. ``render --controller`` and the sync
controller's Role are built from the same needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from airtrust.config import Config
from airtrust.errors import PermissionDenied
from airtrust.plan.model import Action, Change
from airtrust.plan.topology import Role, roles_by_context
from airtrust.profiles import Profile

__all__ = ["Need", "denied", "possible_write_needs", "read_needs", "write_needs"]


@dataclass(frozen=True)
class Need:
    verb: str
    resource: str
    namespace: str | None = None
    group: str = ""

    def __str__(self) -> str:
        where = f" in {self.namespace}" if self.namespace else " (cluster-wide)"
        res = f"{self.resource}.{self.group}" if self.group else self.resource
        return f"{self.verb} {res}{where}"


def read_needs(
    config: Config, profile: Profile, context: str, namespaces: Iterable[str]
) -> list[Need]:
    """What observing this context reads (plan, doctor, render)."""
    needs = [Need("get", "namespaces"), Need("list", "namespaces")]
    needs += [Need("get", "secrets", ns) for ns in namespaces]
    cc = profile.cluster_config
    roles = roles_by_context(config).get(context, frozenset())
    if cc is not None and Role.CLUSTER in roles and config.images.references:
        needs.append(Need("get", cc.plural, cc.namespace, cc.group))
    # The rotation record lives beside the control plane.
    if Role.CONTROL_PLANE in roles:
        needs.append(Need("get", "configmaps", profile.tls_secret.namespace))
    return needs


def possible_write_needs(namespaces: Iterable[str]) -> list[Need]:
    """Everything apply may write, listed when reads already fail (plan is impossible)."""
    needs = [Need("create", "namespaces")]
    for ns in namespaces:
        needs += [Need("create", "secrets", ns), Need("patch", "secrets", ns)]
    return needs


#: kinds applied besides Secrets (OpenShift node trust): (resource, API group)
_RESOURCES = {
    "ConfigMap": ("configmaps", ""),
    "Image": ("images", "config.openshift.io"),
    "Proxy": ("proxies", "config.openshift.io"),
}


def write_needs(change: Change, backup_mode: str, profile: Profile) -> list[Need]:
    """What carrying out one change writes (a backup Secret included)."""
    d = change.desired
    if d.kind == "Namespace":
        return [Need("create", "namespaces")] if change.action is Action.CREATE else []
    if d.manifest is None:
        cc = profile.cluster_config
        if cc is None or change.action is not Action.UPDATE:
            return []
        return [Need("patch", cc.plural, d.namespace, cc.group)]
    if d.kind in _RESOURCES:
        resource, group = _RESOURCES[d.kind]
        if change.action is Action.UNCHANGED:
            return []
        verbs = ("create", "patch") if change.action is Action.CREATE else ("patch",)
        return [Need(verb, resource, d.namespace, group) for verb in verbs]
    needs = []
    if change.action is Action.CREATE:
        needs += [Need("create", "secrets", d.namespace), Need("patch", "secrets", d.namespace)]
    elif change.action is Action.UPDATE:
        needs.append(Need("patch", "secrets", d.namespace))
        if change.overwrites_foreign_data and backup_mode == "secret":
            needs.append(Need("create", "secrets", d.namespace))
    return needs


def denied(missing: Mapping[str, Sequence[Need]]) -> PermissionDenied | None:
    """One error listing every missing right of every context, or None."""
    parts = [
        f"context '{ctx}': " + "; ".join(map(str, needs)) for ctx, needs in missing.items() if needs
    ]
    if not parts:
        return None
    return PermissionDenied(
        "missing permissions, nothing was changed: " + " | ".join(parts),
        hint="grant them to the user of each context (a Role/ClusterRole and binding), then rerun",
    )
