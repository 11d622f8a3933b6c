"""plan/openshift_trust.py and its desired objects: keys, the pointer, the proxy."""

from __future__ import annotations

from pathlib import Path

from airtrust.config import Config
from airtrust.plan import openshift_trust
from airtrust.plan.desired import ClusterFacts, build_desired, findings
from airtrust.plan.node_trust import parse_registry
from airtrust.plan.topology import CLUSTER
from airtrust.profiles import load_profile

PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def _config(tmp_path: Path, **node_trust: object) -> Config:
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(PEM)
    return Config.model_validate(
        {
            "domain": "runai.example.test",
            "ca": {"bundle": [str(bundle)]},
            "clusters": [{"context": "ocp"}],
            "registries": ["reg.local:5000"],
            "node_trust": {"runtime": "containerd", **node_trust},
        }
    )


def _desired(config: Config, *, openshift: bool, image: dict[str, object] | None = None) -> dict:
    facts = [ClusterFacts("ocp", frozenset({CLUSTER}), openshift, image_config=image)]
    out = build_desired(
        config, load_profile(), "2.20", bundle_pem=PEM, bundle_digest="d",
        control_plane_tls=None, facts=facts,
    )  # fmt: skip
    return {(d.kind, d.namespace, d.name): d for d in out}


def test_keys_are_host_dot_dot_port_and_hold_only_the_bundle() -> None:
    cm = openshift_trust.registry_ca_configmap(
        "x", [parse_registry("reg.local:5000"), parse_registry("mirror.local")], PEM
    )
    assert cm["metadata"] == {"name": "x", "namespace": "openshift-config"}
    assert cm["data"] == {"mirror.local": PEM.decode(), "reg.local..5000": PEM.decode()}


def test_openshift_gets_airtrusts_configmap_and_the_pointer(tmp_path: Path) -> None:
    desired = _desired(_config(tmp_path), openshift=True)
    assert ("ConfigMap", "openshift-config", "airtrust-registry-cas") in desired
    image = desired[("Image", None, "cluster")].manifest
    assert image is not None
    assert image["spec"] == {"additionalTrustedCA": {"name": "airtrust-registry-cas"}}
    assert not any(kind == "Proxy" for kind, _, _ in desired)


def test_a_named_configmap_is_used_and_the_pointer_left_alone(tmp_path: Path) -> None:
    named = {"spec": {"additionalTrustedCA": {"name": "corp"}}}
    desired = _desired(_config(tmp_path), openshift=True, image=named)
    assert ("ConfigMap", "openshift-config", "corp") in desired
    assert ("Image", None, "cluster") not in desired


def test_not_openshift_or_no_registries_writes_no_openshift_object(tmp_path: Path) -> None:
    assert not any(k == "Image" for k, _, _ in _desired(_config(tmp_path), openshift=False))
    config = _config(tmp_path).model_copy(update={"registries": ()})
    assert not any(k == "Image" for k, _, _ in _desired(config, openshift=True))


def test_the_proxy_only_when_asked_and_with_a_warning(tmp_path: Path) -> None:
    config = _config(tmp_path, openshift_proxy_ca=True)
    desired = _desired(config, openshift=True)
    proxy = desired[("Proxy", None, "cluster")].manifest
    assert proxy is not None and proxy["spec"] == {"trustedCA": {"name": "user-ca-bundle"}}
    cm = desired[("ConfigMap", "openshift-config", "user-ca-bundle")].manifest
    assert cm is not None and cm["data"] == {"ca-bundle.crt": PEM.decode()}
    facts = [ClusterFacts("ocp", frozenset({CLUSTER}), True)]
    assert any("roll every node" in n for n in findings(config, load_profile(), facts))
