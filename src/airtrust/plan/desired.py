"""Desired objects from config + profile + what was observed (pure).

``build_desired`` decides nothing by itself that depends on time or
randomness: certificates to (re)issue are decided by the engine and handed
in as material, so the same inputs always give the same manifests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from airtrust.config import Config
from airtrust.errors import ConfigError
from airtrust.pki.tlssecret import TLSMaterial
from airtrust.plan import openshift_trust
from airtrust.plan.imagepaths import ImagePatch, find_image_patches
from airtrust.plan.manifests import namespace_manifest, secret_manifest
from airtrust.plan.model import BUNDLE_HASH, CERT_HASH, Desired, JsonObj
from airtrust.plan.topology import CLUSTER, CONTROL_PLANE, Role, ca_secret_targets, tls_secret_name
from airtrust.profiles import Profile

__all__ = ["ClusterFacts", "TLSMaterial", "build_desired", "findings", "sidecar_images"]


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
    #: False for render --offline: nothing was read from the cluster
    observed: bool = True
    #: OpenShift: the live image.config.openshift.io/cluster (which ConfigMap it names)
    image_config: JsonObj | None = None


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

    def ca_secret(
        self,
        namespace: str,
        labels: Mapping[str, str],
        purpose: str,
        *,
        name: str | None = None,
        key: str | None = None,
    ) -> None:
        ca = self.profile.ca_secret
        name, key = name or ca.name, key or ca.key
        self.namespace(namespace, "namespace for the CA bundle")
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
                    secret_type="Opaque",
                    data={key: self.bundle_pem},
                    labels=labels,
                    annotations={BUNDLE_HASH: self.bundle_digest},
                ),
                bundle_key=key,
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
        extra = profile.sidecar_ca_values
        separate = config.images.sidecar_ca_secret
        if (
            separate
            and extra is not None
            and extra.role in fact.roles
            and config.images.strategy == "helm-values"
        ):
            namespace = profile.ca_targets(extra.role, openshift=False)[0].namespace
            ctx.ca_secret(
                namespace, {}, "CA bundle (Git/S3 sidecars)", name=separate, key=extra.secret_key
            )
        images, _ = sidecar_images(config, profile, fact)
        if images is not None:
            ctx.add(images)
        if fact.openshift:
            for item in _openshift_node_trust(config, fact, bundle_pem):
                ctx.add(item)
        out.extend(ctx.ordered())
    return out


def _openshift_node_trust(config: Config, fact: ClusterFacts, bundle_pem: bytes) -> list[Desired]:
    """The nodes' registry trust the OpenShift way (plan.openshift_trust): the CA under
    each registry's key in the ConfigMap the Image config names (or airtrust's, then
    named there), and with ``openshift_proxy_ca`` the proxy's trustedCA."""
    settings = config.node_trust_for(fact.context)
    if not settings.enabled or settings.node_trust is None:
        return []
    named = openshift_trust.trusted_ca_name(fact.image_config)
    name = named or openshift_trust.REGISTRY_CA_CONFIGMAP
    ns = openshift_trust.CONFIG_NAMESPACE
    out = [
        Desired(
            fact.context,
            "ConfigMap",
            ns,
            name,
            "registry CAs for the nodes (image.config.openshift.io additionalTrustedCA)",
            manifest=openshift_trust.registry_ca_configmap(name, settings.registries, bundle_pem),
        )
    ]
    if named is None:
        out.append(
            Desired(
                fact.context,
                "Image",
                None,
                "cluster",
                "the nodes trust the registry CAs ConfigMap",
                manifest=openshift_trust.image_config(name),
            )
        )
    if settings.node_trust.openshift_proxy_ca:
        out.append(
            Desired(
                fact.context,
                "ConfigMap",
                ns,
                openshift_trust.PROXY_CA_CONFIGMAP,
                "the cluster proxy's trusted CA bundle",
                manifest=openshift_trust.proxy_ca_configmap(bundle_pem),
            )
        )
        out.append(
            Desired(
                fact.context,
                "Proxy",
                None,
                "cluster",
                "the cluster proxy trusts user-ca-bundle",
                manifest=openshift_trust.proxy_config(),
            )
        )
    return out


def _pins(config: Config, profile: Profile) -> dict[str, str | None]:
    pins = config.cluster_config.pins()
    roles = {s.role for s in profile.sidecars}
    for pointer, role in pins.items():
        if role is not None and role not in roles:
            raise ConfigError(
                f"cluster_config.image_paths: '{role}' (for {pointer}) is not a sidecar of "
                f"profile {profile.name}",
                hint=f"use one of: {', '.join(sorted(roles))}",
            )
    return pins


def sidecar_images(
    config: Config, profile: Profile, fact: ClusterFacts
) -> tuple[Desired | None, list[str]]:
    """The cluster-config patch that points the sidecars at the patched images, and the
    findings a user must act on when it cannot be made (each with its fix)."""
    cc = profile.cluster_config
    if (
        CLUSTER not in fact.roles
        or cc is None
        or config.images.strategy != "patch"
        or not config.images.references
    ):
        return None, []
    where = f"context '{fact.context}': {cc.kind} {cc.namespace}/{cc.name}"
    pins = _pins(config, profile)
    pin_fix = (
        "pin the fields in airtrust.yaml, e.g. cluster_config.image_paths: "
        "{/spec/PATH/TO/S3/IMAGE: s3, /spec/PATH/TO/GIT/IMAGE: git}"
    )
    sidecars = {s.role: s.repository for s in profile.sidecars}
    if not fact.observed:
        named = {p: r for p, r in pins.items() if r is not None}
        if not named:
            return None, [
                f"{where}: render --offline cannot find the sidecar image fields without "
                f"reading the cluster, so no image patch is written; {pin_fix}, or render "
                "without --offline"
            ]
        patches = []
        for pointer, role in sorted(named.items()):
            new = config.images.references.get(sidecars.get(role or "", ""))
            if new is not None:
                # Unread, the field may or may not exist: 'add' sets it either way.
                patches.append(ImagePatch(pointer, None, new))
        desired = Desired(
            fact.context, cc.kind, cc.namespace, cc.name, "sidecar images", patches=tuple(patches)
        )
        return desired, []
    if fact.cluster_config is None:
        return None, []
    plan = find_image_patches(
        fact.cluster_config.get("spec", {}),
        config.images.references,
        pinned=pins,
        sidecars=sidecars,
    )
    notes = []
    if plan.nothing_found:
        notes.append(
            f"{where} names no S3/Git sidecar image airtrust recognises, so nothing points "
            f"at the patched images; {pin_fix}"
        )
    for pointer in plan.unresolved:
        notes.append(
            f"{where}: the pinned field {pointer} does not exist (or its parent is not an "
            f"object) and names no sidecar; write it as cluster_config.image_paths: "
            f"{{{pointer}: s3}} (or git) so airtrust adds it"
        )
    desired = Desired(
        fact.context, cc.kind, cc.namespace, cc.name, "sidecar images", patches=plan.patches
    )
    return desired, notes


def findings(config: Config, profile: Profile, facts: Sequence[ClusterFacts]) -> list[str]:
    """Everything about the sidecar images a user must act on, for plan and render."""
    notes = [note for fact in facts for note in sidecar_images(config, profile, fact)[1]]
    for fact in facts:
        trust = config.node_trust_for(fact.context)
        if fact.openshift and trust.enabled and trust.node_trust is not None:
            if trust.node_trust.openshift_proxy_ca:
                notes.append(f"context '{fact.context}': {openshift_trust.PROXY_WARNING}")
    return notes
