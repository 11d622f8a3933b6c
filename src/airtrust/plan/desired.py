"""Desired objects from config + profile + what was observed (pure).

``build_desired`` decides nothing by itself that depends on time or
randomness: certificates to (re)issue are decided by the engine and handed
in as material, so the same inputs always give the same manifests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from airtrust.config import Config
from airtrust.pki.tlssecret import TLSMaterial
from airtrust.plan.imagepaths import find_image_patches
from airtrust.plan.manifests import namespace_manifest, secret_manifest
from airtrust.plan.model import BUNDLE_HASH, CERT_HASH, Desired, JsonObj
from airtrust.plan.topology import CLUSTER, CONTROL_PLANE, Role, ca_secret_targets, tls_secret_name
from airtrust.profiles import Profile

__all__ = ["ClusterFacts", "TLSMaterial", "build_desired"]


@dataclass(frozen=True)
class ClusterFacts:
    """What the engine learned about one context before planning."""

    context: str
    roles: frozenset[Role]
    openshift: bool
    workload_namespaces: tuple[str, ...] = ()
    #: secret name -> (namespace, material), decided by the engine (reuse or issue).
    cluster_tls: Mapping[tuple[str, str], TLSMaterial] = field(default_factory=dict)
    cluster_config: JsonObj | None = None


@dataclass
class _ContextObjects:
    """The desired objects of one context, deduplicated, namespaces first."""

    context: str
    profile: Profile
    bundle_pem: bytes
    bundle_digest: str
    objects: dict[tuple[str, str | None, str], Desired] = field(default_factory=dict)

    def add(self, item: Desired) -> None:
        self.objects.setdefault((item.kind, item.namespace, item.name), item)

    def namespace(self, name: str, purpose: str) -> None:
        self.add(
            Desired(
                self.context, "Namespace", None, name, purpose, manifest=namespace_manifest(name)
            )
        )

    def ca_secret(self, namespace: str, labels: Mapping[str, str], purpose: str) -> None:
        ca = self.profile.ca_secret
        self.namespace(namespace, "namespace for the CA bundle")
        self.add(
            Desired(
                self.context,
                "Secret",
                namespace,
                ca.name,
                purpose,
                manifest=secret_manifest(
                    namespace,
                    ca.name,
                    secret_type="Opaque",
                    data={ca.key: self.bundle_pem},
                    labels=labels,
                    annotations={BUNDLE_HASH: self.bundle_digest},
                ),
                bundle_key=ca.key,
            )
        )

    def tls_secret(self, namespace: str, name: str, material: TLSMaterial, purpose: str) -> None:
        self.namespace(namespace, "namespace for TLS")
        self.add(
            Desired(
                self.context,
                "Secret",
                namespace,
                name,
                purpose,
                manifest=secret_manifest(
                    namespace,
                    name,
                    secret_type="kubernetes.io/tls",
                    data={"tls.crt": material.chain_pem, "tls.key": material.key_pem},
                    annotations={CERT_HASH: material.fingerprint},
                ),
                cert_key="tls.crt",
            )
        )

    def ordered(self) -> list[Desired]:
        # Namespaces first: secrets cannot be applied before their namespace exists.
        return sorted(self.objects.values(), key=lambda d: d.kind != "Namespace")


def build_desired(
    config: Config,
    profile: Profile,
    version: str,
    *,
    bundle_pem: bytes,
    bundle_digest: str,
    control_plane_tls: TLSMaterial | None,
    facts: Sequence[ClusterFacts],
) -> list[Desired]:
    out: list[Desired] = []
    for fact in facts:
        ctx = _ContextObjects(fact.context, profile, bundle_pem, bundle_digest)
        workloads = fact.workload_namespaces
        profile_targets = ca_secret_targets(profile, version, fact.roles, openshift=fact.openshift)
        for target in profile_targets:
            ctx.ca_secret(target.namespace, target.labels, target.purpose)
        if CONTROL_PLANE in fact.roles and control_plane_tls is not None and not fact.openshift:
            ctx.tls_secret(
                profile.tls_secret.namespace,
                tls_secret_name(config, profile),
                control_plane_tls,
                "control-plane TLS",
            )
        for (namespace, name), material in sorted(fact.cluster_tls.items()):
            ctx.tls_secret(namespace, name, material, "cluster TLS")
        for target in ca_secret_targets(profile, version, (), openshift=False, workloads=workloads):
            ctx.ca_secret(target.namespace, target.labels, target.purpose)
        cc = profile.cluster_config
        if (
            CLUSTER in fact.roles
            and cc is not None
            and fact.cluster_config is not None
            and config.images.strategy == "patch"
            and config.images.references
        ):
            patches = find_image_patches(
                fact.cluster_config.get("spec", {}),
                config.images.references,
                pinned=config.cluster_config.image_paths,
            )
            ctx.add(
                Desired(
                    fact.context,
                    cc.kind,
                    cc.namespace,
                    cc.name,
                    "sidecar images",
                    patches=tuple(patches),
                )
            )
        out.extend(ctx.ordered())
    return out
