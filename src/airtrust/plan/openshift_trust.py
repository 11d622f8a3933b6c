"""OpenShift's own way for nodes to trust a registry: no node files (the Machine Config
Operator owns them), but a ConfigMap in ``openshift-config`` whose keys are registry
hosts (``host..port``: a key cannot hold a colon), named by the cluster's
``image.config.openshift.io/cluster`` ``spec.additionalTrustedCA.name``; the
operator then writes every node's ``/etc/docker/certs.d`` itself.

When the Image config already names a ConfigMap (someone else's registry CAs), airtrust
adds its keys to that ConfigMap and leaves the pointer alone: server-side apply keeps
the keys another manager owns. The cluster-wide proxy's ``spec.trustedCA``
(``user-ca-bundle``, key ``ca-bundle.crt``) is optional and off by default, because
changing it rolls every node.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from airtrust.plan.node_trust import Registry, registry_ca_digest

__all__ = [
    "CONFIG_API",
    "CONFIG_NAMESPACE",
    "PROXY_CA_CONFIGMAP",
    "PROXY_CA_KEY",
    "PROXY_WARNING",
    "REGISTRY_CA_CONFIGMAP",
    "image_config",
    "openshift_lacks",
    "proxy_ca_configmap",
    "proxy_config",
    "registry_ca_configmap",
    "trusted_ca_name",
]

CONFIG_API = "config.openshift.io/v1"
CONFIG_NAMESPACE = "openshift-config"
#: the ConfigMap airtrust names when the Image config names none yet
REGISTRY_CA_CONFIGMAP = "airtrust-registry-cas"
PROXY_CA_CONFIGMAP = "user-ca-bundle"
PROXY_CA_KEY = "ca-bundle.crt"
PROXY_WARNING = (
    "node_trust.openshift_proxy_ca: the cluster proxy's trustedCA changes roll every "
    "node (the Machine Config Operator reboots them one by one)"
)


def trusted_ca_name(image: Mapping[str, Any] | None) -> str | None:
    """The ConfigMap the live Image config already names, if any."""
    spec = (image or {}).get("spec") or {}
    name = (spec.get("additionalTrustedCA") or {}).get("name")
    return str(name) if name else None


def registry_ca_configmap(name: str, registries: Sequence[Registry], bundle_pem: bytes) -> Any:
    """The keys airtrust owns in ``openshift-config/name``: one per registry."""
    pem = bundle_pem.decode()
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": CONFIG_NAMESPACE},
        "data": {r.openshift_key: pem for r in sorted(set(registries), key=str)},
    }


def image_config(name: str) -> Any:
    """``image.config.openshift.io/cluster`` pointing at ``name`` (only that field)."""
    return {
        "apiVersion": CONFIG_API,
        "kind": "Image",
        "metadata": {"name": "cluster"},
        "spec": {"additionalTrustedCA": {"name": name}},
    }


def proxy_ca_configmap(bundle_pem: bytes) -> Any:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": PROXY_CA_CONFIGMAP, "namespace": CONFIG_NAMESPACE},
        "data": {PROXY_CA_KEY: bundle_pem.decode()},
    }


def proxy_config() -> Any:
    return {
        "apiVersion": CONFIG_API,
        "kind": "Proxy",
        "metadata": {"name": "cluster"},
        "spec": {"trustedCA": {"name": PROXY_CA_CONFIGMAP}},
    }


def openshift_lacks(
    configmap: str | None,
    data: Mapping[str, str],
    registries: Sequence[Registry],
    digests: Collection[str],
) -> dict[Registry, str]:
    """Per registry the nodes do not get one of ``digests`` (bundle digests, as the node
    agent reports them) for, why: the Image config names no ConfigMap, the ConfigMap has
    no key for the registry, or its key holds another bundle. What the Machine Config
    Operator then writes to every node is what these say."""
    out: dict[Registry, str] = {}
    for registry in sorted(set(registries), key=str):
        key = registry.openshift_key
        if configmap is None:
            out[registry] = "image.config.openshift.io/cluster names no additionalTrustedCA"
        elif key not in data:
            out[registry] = f"ConfigMap {CONFIG_NAMESPACE}/{configmap} has no key {key}"
        elif (held := registry_ca_digest(data[key].encode())) not in digests:
            out[registry] = (
                f"ConfigMap {CONFIG_NAMESPACE}/{configmap} key {key} holds bundle sha256 "
                f"{held[:12]}…"
            )
    return out
