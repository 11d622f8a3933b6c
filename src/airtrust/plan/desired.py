"""Desired objects from config + profile + what was observed (pure).

``build_desired`` decides nothing by itself that depends on time or
randomness: certificates to (re)issue are decided by the engine and handed
in as material, so the same inputs always give the same manifests.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from airtrust.config import Config
from airtrust.plan.imagepaths import find_image_patches
from airtrust.plan.model import BUNDLE_HASH, CERT_HASH, MANAGED_BY, Desired, JsonObj
from airtrust.profiles import Profile

CONTROL_PLANE = "control-plane"
CLUSTER = "cluster"


@dataclass(frozen=True)
class TLSMaterial:
    """A certificate chain and key as they go into a kubernetes.io/tls Secret."""

    chain_pem: bytes
    key_pem: bytes
    fingerprint: str


@dataclass(frozen=True)
class ClusterFacts:
    """What the engine learned about one context before planning."""

    context: str
    roles: frozenset[str]
    openshift: bool
    workload_namespaces: tuple[str, ...] = ()
    #: secret name -> (namespace, material), decided by the engine (reuse or issue).
    cluster_tls: Mapping[tuple[str, str], TLSMaterial] = field(default_factory=dict)
    cluster_config: JsonObj | None = None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def namespace_manifest(name: str) -> JsonObj:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def secret_manifest(
    namespace: str,
    name: str,
    *,
    secret_type: str,
    data: Mapping[str, bytes],
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> JsonObj:
    """A Secret exactly as airtrust applies and renders it."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {**(labels or {}), MANAGED_BY[0]: MANAGED_BY[1]},
            "annotations": dict(annotations or {}),
        },
        "type": secret_type,
        "data": {k: _b64(v) for k, v in sorted(data.items())},
    }


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
        for role in sorted(fact.roles):
            for target in profile.ca_targets(role, openshift=fact.openshift):
                ctx.ca_secret(target.namespace, target.labels_for(version), f"CA bundle ({role})")
        if CONTROL_PLANE in fact.roles and control_plane_tls is not None and not fact.openshift:
            name = (config.tls.secret_name if config.tls else None) or profile.tls_secret.name
            ctx.tls_secret(
                profile.tls_secret.namespace, name, control_plane_tls, "control-plane TLS"
            )
        for (namespace, name), material in sorted(fact.cluster_tls.items()):
            ctx.tls_secret(namespace, name, material, "cluster TLS")
        for namespace in fact.workload_namespaces:
            ctx.ca_secret(namespace, {}, "CA bundle (workloads)")
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
