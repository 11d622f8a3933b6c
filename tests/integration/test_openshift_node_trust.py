"""OpenShift node trust on a real apiserver with the config.openshift.io CRDs (Image,
Proxy; ClusterVersion for detection): `airtrust apply` writes the registry CAs into
``openshift-config`` under ``host..port`` keys and points
``image.config.openshift.io/cluster`` at them, merges into a ConfigMap already named
there (its keys kept), writes the proxy's trustedCA only when asked, and a re-run
writes nothing. kubectl reads the live objects; airtrust's own output is not the
judge."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import run_cli
from tests.integration.kube import KubeCluster

pytestmark = pytest.mark.integration

NS = "openshift-config"
REGISTRIES = ["reg.local:5000", "mirror.local"]


def _openshift(cluster: KubeCluster, *, image_spec: dict[str, Any] | None = None) -> None:
    for crd in ("openshift-clusterversion.yaml", "openshift-config-image.yaml",
                "openshift-config-proxy.yaml"):  # fmt: skip
        cluster.install_crd(crd)
    cluster.kubectl("create", "namespace", NS)
    for kind, spec in (("Image", image_spec or {}), ("Proxy", {})):
        manifest = {"apiVersion": "config.openshift.io/v1", "kind": kind,
                    "metadata": {"name": "cluster"}, "spec": spec}  # fmt: skip
        cluster.kubectl("create", "-f", "-", stdin=json.dumps(manifest).encode())


def _config(folder: Path, pki: Path, cluster: KubeCluster, **node_trust: object) -> Path:
    path = folder / "airtrust.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "version": "2.20",
                "domain": "runai.example.test",
                "ca": {"bundle": [str(pki / "ca-bundle.pem")]},
                "kubeconfig": str(cluster.kubeconfig),
                "clusters": [{"context": "admin"}],
                "registries": REGISTRIES,
                "node_trust": {"runtime": "containerd", **node_trust},
            }
        )
    )
    return path


def _get(cluster: KubeCluster, *args: str) -> dict[str, Any]:
    found: dict[str, Any] = cluster.get(*args)
    return found


def _versions(cluster: KubeCluster) -> dict[str, str]:
    out = {
        f"cm/{c['metadata']['name']}": c["metadata"]["resourceVersion"]
        for c in _get(cluster, "configmaps", "-n", NS)["items"]
    }
    for kind in ("images.config.openshift.io", "proxies.config.openshift.io"):
        out[kind] = _get(cluster, kind, "cluster")["metadata"]["resourceVersion"]
    return out


def test_apply_writes_the_registry_cas_and_points_the_image_config_at_them(
    cluster: KubeCluster, pki: Path, tmp_path: Path
) -> None:
    _openshift(cluster)
    config = _config(tmp_path, pki, cluster)
    applied = run_cli("apply", "-c", config)
    assert applied.code == 0, applied.out + applied.err
    bundle = (pki / "ca-bundle.pem").read_text().strip()
    data = _get(cluster, "configmap", "-n", NS, "airtrust-registry-cas")["data"]
    assert sorted(data) == ["mirror.local", "reg.local..5000"]
    assert all(v.strip() == bundle and "PRIVATE KEY" not in v for v in data.values())
    image = _get(cluster, "images.config.openshift.io", "cluster")
    assert image["spec"]["additionalTrustedCA"] == {"name": "airtrust-registry-cas"}
    proxy = _get(cluster, "proxies.config.openshift.io", "cluster")
    assert "trustedCA" not in proxy.get("spec", {}), proxy  # off by default
    assert not cluster.exists("configmap", "user-ca-bundle", NS)
    before = _versions(cluster)
    again = run_cli("apply", "-c", config)
    assert again.code == 0, again.out + again.err
    assert _versions(cluster) == before


def test_a_configmap_already_named_keeps_its_keys_and_gets_ours(
    cluster: KubeCluster, pki: Path, tmp_path: Path
) -> None:
    _openshift(cluster, image_spec={"additionalTrustedCA": {"name": "corp-registries"}})
    theirs = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    cluster.kubectl("-n", NS, "create", "configmap", "corp-registries",
                    f"--from-literal=other.corp..443={theirs}")  # fmt: skip
    applied = run_cli("apply", "-c", _config(tmp_path, pki, cluster))
    assert applied.code == 0, applied.out + applied.err
    data = _get(cluster, "configmap", "-n", NS, "corp-registries")["data"]
    assert sorted(data) == ["mirror.local", "other.corp..443", "reg.local..5000"]
    assert data["other.corp..443"] == theirs
    image = _get(cluster, "images.config.openshift.io", "cluster")
    assert image["spec"]["additionalTrustedCA"] == {"name": "corp-registries"}
    assert not cluster.exists("configmap", "airtrust-registry-cas", NS)


def test_the_proxy_trusted_ca_only_when_asked_with_the_warning(
    cluster: KubeCluster, pki: Path, tmp_path: Path
) -> None:
    _openshift(cluster)
    applied = run_cli("apply", "-c", _config(tmp_path, pki, cluster, openshift_proxy_ca=True))
    assert applied.code == 0, applied.out + applied.err
    assert "roll every node" in applied.out + applied.err
    data = _get(cluster, "configmap", "-n", NS, "user-ca-bundle")["data"]
    assert data["ca-bundle.crt"].strip() == (pki / "ca-bundle.pem").read_text().strip()
    proxy = _get(cluster, "proxies.config.openshift.io", "cluster")
    assert proxy["spec"]["trustedCA"] == {"name": "user-ca-bundle"}


def _checks(config: Path) -> list[dict[str, str]]:
    result = run_cli("doctor", "-c", config, "-o", "json")
    assert "Traceback" not in result.err, result.err
    return [c for c in json.loads(result.out)["checks"] if c["name"] == "node-registry"]


def _set_key(cluster: KubeCluster, name: str, key: str, pem: str) -> None:
    """One of airtrust's keys changed as if airtrust had written it (its field manager):
    what a node would be given after a stale apply, with no ownership conflict."""
    data = {**_get(cluster, "configmap", "-n", NS, name)["data"], key: pem}
    manifest = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": NS}, "data": data}  # fmt: skip
    cluster.kubectl("apply", "--server-side", "--field-manager=airtrust", "--force-conflicts",
                    "-f", "-", stdin=json.dumps(manifest).encode())  # fmt: skip


def test_doctor_and_rotation_judge_the_configmap_the_nodes_are_given(
    cluster: KubeCluster, pki: Path, tmp_path: Path
) -> None:
    """No agent runs on OpenShift: doctor's node-registry check judges each registry's key
    in the ConfigMap image.config.openshift.io/cluster names (a Node without airtrust's
    annotation is not failed), rotate start finds old + new there, and rotate finish is
    refused while a key lacks the new CA."""
    _openshift(cluster, image_spec={"additionalTrustedCA": {"name": "corp-registries"}})
    cluster.kubectl("-n", NS, "create", "configmap", "corp-registries")
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "worker-0"}}
    cluster.kubectl("create", "-f", "-", stdin=json.dumps(node).encode())
    config = _config(tmp_path, pki, cluster)
    assert run_cli("apply", "-c", config).code == 0
    checks = _checks(config)
    assert [(c["target"], c["status"]) for c in checks] == [
        ("ConfigMap openshift-config/corp-registries registry mirror.local", "ok"),
        ("ConfigMap openshift-config/corp-registries registry reg.local:5000", "ok"),
    ]
    other = tmp_path / "other"
    assert run_cli("ca", "create", "--out", other, "--name", "Someone Else").code == 0
    _set_key(cluster, "corp-registries", "mirror.local", (other / "ca.crt").read_text())
    mirror, _ = _checks(config)
    assert mirror["status"] == "fail" and "key mirror.local holds bundle" in mirror["evidence"]
    assert mirror["fix"].startswith("airtrust apply") and "node install" not in mirror["fix"]
    new = tmp_path / "new"
    assert run_cli("ca", "create", "--out", new, "--name", "OpenShift Next CA").code == 0
    try:
        started = run_cli("rotate", "start", "--new-ca", new, "-c", config, "--node-timeout", "5")
        assert started.code == 0, started.out + started.err
        data = _get(cluster, "configmap", "-n", NS, "corp-registries")["data"]
        new_pem = (new / "ca.crt").read_text().strip()
        olds = (pki / "ca-bundle.pem").read_text().count("BEGIN CERTIFICATE")
        assert all(new_pem in v and v.count("BEGIN") == olds + 1 for v in data.values())
        # A key back to the old CA alone: the nodes would refuse the new certificate.
        _set_key(cluster, "corp-registries", "mirror.local", (pki / "ca-bundle.pem").read_text())
        refused = run_cli("rotate", "finish", "-c", config)
        assert refused.code == 1, refused.out + refused.err
        assert "the nodes are not given the new CA (mirror.local: ConfigMap" in refused.err
        again = run_cli("rotate", "start", "--new-ca", new, "-c", config, "--node-timeout", "5")
        assert again.code == 0, again.out + again.err  # continues: apply writes the key again
        finished = run_cli("rotate", "finish", "-c", config)
        assert finished.code == 0, finished.out + finished.err
        data = _get(cluster, "configmap", "-n", NS, "corp-registries")["data"]
        assert all(data[k].strip() == new_pem for k in data)
    finally:
        cluster.kubectl("-n", "runai", "delete", "configmap", "airtrust-rotation", check=False)
