"""Which context plays which role, and which objects each role puts where (pure).

Every use case (apply, doctor, render, rotation, sync, helm) asks the same
questions of the config and the profile: what roles a context has, which
namespaces hold a CA secret there, what the TLS secrets are called and which
host names they must cover. They are answered here once, from data only, so
the answers cannot drift apart between plan and doctor.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from airtrust.errors import ConfigError
from airtrust.plan.inject import INJECT_TLS_SECRET, webhook_hosts
from airtrust.profiles import Profile

if TYPE_CHECKING:  # types only: a controller starting from flags needs no config models
    from airtrust.config import Cluster, Config

__all__ = [
    "CLUSTER",
    "CONTROL_PLANE",
    "CASecretTarget",
    "ClusterTLSSpec",
    "Role",
    "SyncScope",
    "ca_secret_targets",
    "cluster_entry",
    "cluster_tls_specs",
    "hostname_probe",
    "is_openshift",
    "roles_by_context",
    "rotation_location",
    "target_namespaces",
    "tls_secret_name",
    "workload_namespaces",
]


class Role(enum.StrEnum):
    """What a context is to the platform; the profile names its targets by these."""

    CONTROL_PLANE = "control-plane"
    CLUSTER = "cluster"


def is_openshift(setting: str, profile: Profile, api_groups: Callable[[], Iterable[str]]) -> bool:
    """``openshift: true|false`` as configured; ``auto`` asks the cluster for the API
    group only OpenShift serves (``api_groups`` is called only then)."""
    if setting != "auto":
        return setting == "true"
    group = profile.openshift.detect_group if profile.openshift else None
    return group is not None and group in set(api_groups())


CONTROL_PLANE = Role.CONTROL_PLANE
CLUSTER = Role.CLUSTER


def roles_by_context(config: Config) -> dict[str, frozenset[Role]]:
    """Each context of the config with its roles (one context may hold both)."""
    roles: dict[str, set[Role]] = {}
    if config.control_plane is not None:
        roles.setdefault(config.control_plane.context, set()).add(Role.CONTROL_PLANE)
    for cluster in config.clusters:
        roles.setdefault(cluster.context, set()).add(Role.CLUSTER)
    return {context: frozenset(r) for context, r in roles.items()}


def cluster_entry(config: Config, context: str) -> Cluster | None:
    return next((c for c in config.clusters if c.context == context), None)


@dataclass(frozen=True)
class CASecretTarget:
    """One namespace that must hold the CA secret, with the labels its version needs."""

    namespace: str
    labels: Mapping[str, str]
    purpose: str


def ca_secret_targets(
    profile: Profile,
    version: str,
    roles: Iterable[Role],
    *,
    openshift: bool,
    workloads: Iterable[str] = (),
) -> list[CASecretTarget]:
    """The profile's CA secret targets for these roles, then the workload namespaces."""
    out = [
        CASecretTarget(t.namespace, t.labels_for(version), f"CA bundle ({role})")
        for role in sorted(roles)
        for t in profile.ca_targets(role, openshift=openshift)
    ]
    out += [CASecretTarget(ns, {}, "CA bundle (workloads)") for ns in workloads]
    return out


def workload_namespaces(config: Config, context: str) -> list[str]:
    """The namespaces of a cluster context that hold the CA secret beside the profile's:
    the configured workloads, and the injection webhook's (``inject_namespace``), which
    mounts it as its local CA, so a rotation rewrites it as every other and the webhook
    follows (its bundles, its caBundle) before serving the reissued certificate."""
    if Role.CLUSTER not in roles_by_context(config).get(context, frozenset()):
        return []
    entry = cluster_entry(config, context)
    inject = [entry.inject_namespace] if entry is not None and entry.inject_namespace else []
    return list(dict.fromkeys((*config.workloads.namespaces, *inject)))


def tls_secret_name(config: Config, profile: Profile) -> str:
    """The control plane's TLS secret: the config may rename it, the profile names it."""
    return (config.tls.secret_name if config.tls else None) or profile.tls_secret.name


@dataclass(frozen=True)
class ClusterTLSSpec:
    """A cluster TLS secret and the host names its certificate must cover."""

    namespace: str
    name: str
    hosts: tuple[str, ...]

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


def cluster_tls_specs(
    profile: Profile, version: str, entry: Cluster | None
) -> list[ClusterTLSSpec]:
    """The cluster TLS secrets this cluster entry asks for: the profile's (none without
    a domain) and the injection webhook's (with an ``inject_namespace``)."""
    if entry is None:
        return []
    out = []
    if entry.inject_namespace:
        ns = entry.inject_namespace
        out.append(ClusterTLSSpec(ns, INJECT_TLS_SECRET, webhook_hosts(ns)))
    if not entry.domain:
        return out
    for spec in profile.cluster_tls_for(version):
        if "{inference_domain}" in "".join(spec.names) and not entry.inference_domain:
            continue
        hosts = tuple(
            n.format(cluster_domain=entry.domain, inference_domain=entry.inference_domain)
            for n in spec.names
        )
        out.append(ClusterTLSSpec(spec.namespace, spec.name, hosts))
    return out


def hostname_probe(host: str) -> str:
    """A concrete name a wildcard must cover: ``*.x.y`` -> ``x.x.y``."""
    return host.replace("*", "x", 1)


def target_namespaces(
    config: Config,
    profile: Profile,
    version: str,
    context: str,
    *,
    openshift: bool,
    workloads: Iterable[str] = (),
) -> list[str]:
    """Every namespace this context's roles read or write in (for the RBAC preflight)."""
    roles = roles_by_context(config).get(context, frozenset())
    out = {t.namespace for t in ca_secret_targets(profile, version, roles, openshift=openshift)}
    if Role.CONTROL_PLANE in roles:
        out.add(profile.tls_secret.namespace)
    out.update(workloads)
    if Role.CLUSTER in roles:
        out.update(
            s.namespace for s in cluster_tls_specs(profile, version, cluster_entry(config, context))
        )
    return sorted(out)


def rotation_location(config: Config, profile: Profile) -> tuple[str, str]:
    """(context, namespace) of the rotation record: beside the control plane."""
    if config.control_plane is not None:
        return config.control_plane.context, profile.tls_secret.namespace
    context = config.clusters[0].context
    return context, profile.ca_targets(Role.CLUSTER, openshift=False)[0].namespace


@dataclass(frozen=True)
class SyncScope:
    """What ``airtrust sync`` keeps converged in one cluster: the profile's CA targets for
    the context's roles (labels of the configured version) and the workload namespaces.

    The same scope is read from ``airtrust.yaml`` on a workstation and passed as
    arguments to the in-cluster controller (``render --controller``), so both keep the
    same objects.
    """

    roles: tuple[Role, ...] = (Role.CLUSTER,)
    version: str = ""
    #: auto (detect by the profile's API group), true or false
    openshift: str = "auto"
    namespaces: tuple[str, ...] = ()
    selector: str | None = None

    @classmethod
    def from_config(cls, config: Config, profile: Profile, context: str | None) -> SyncScope:
        roles = roles_by_context(config)
        chosen = context or next(iter(roles), "")
        if chosen not in roles:
            known = ", ".join(roles) or "none"
            raise ConfigError(
                f"context '{chosen}' plays no role in the config (its contexts: {known})",
                hint="pass --context with one of the config's contexts",
            )
        entry = cluster_entry(config, chosen)
        cluster = Role.CLUSTER in roles[chosen]
        return cls(
            roles=tuple(sorted(roles[chosen])),
            version=config.version or profile.default_version,
            openshift=entry.openshift if entry is not None else "auto",
            namespaces=tuple(config.workloads.namespaces) if cluster else (),
            selector=config.workloads.selector if cluster else None,
        )

    def with_options(
        self, *, namespaces: tuple[str, ...] = (), selector: str | None = None
    ) -> SyncScope:
        """Add command-line namespaces; a command-line selector wins."""
        return replace(
            self,
            namespaces=tuple(dict.fromkeys((*self.namespaces, *namespaces))),
            selector=selector or self.selector,
        )

    def args(self) -> list[str]:
        out = [a for role in self.roles for a in ("--role", str(role))]
        if self.version:
            out += ["--platform-version", self.version]
        out += ["--openshift", self.openshift]
        out += [a for ns in self.namespaces for a in ("--namespace", ns)]
        if self.selector:
            out += ["--selector", self.selector]
        return out

    def targets(self, profile: Profile, *, openshift: bool) -> dict[str, dict[str, str]]:
        """namespace -> labels of every CA secret this scope names (selector aside)."""
        version = self.version or profile.default_version
        found = ca_secret_targets(
            profile, version, self.roles, openshift=openshift, workloads=self.namespaces
        )
        out: dict[str, dict[str, str]] = {}
        for target in found:
            out.setdefault(target.namespace, dict(target.labels))
        return out
