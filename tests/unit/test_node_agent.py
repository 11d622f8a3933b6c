"""The node agent's objects (``render --node-trust``) and node trust in airtrust.yaml.

The DaemonSet must run on every node (GPU nodes are tainted) with no more power than
writing one host folder takes, and its account must read one secret: both are
properties of the manifests, checked here; tests/integration/test_node_trust.py has
the real node run them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from airtrust.config import parse_config
from airtrust.errors import ConfigError, NodeTrustError
from airtrust.plan.node_agent import node_agent_objects
from airtrust.plan.node_trust import Registry, Runtime
from airtrust.plan.source import Source
from tests.conftest import run_cli

SOURCE = Source.parse("secret/airtrust-nodes/registry-ca", "runai-ca.pem")
REGS = [Registry("reg.local", 5000), Registry("10.0.0.7", 443)]


def objects(**kw: Any) -> dict[str, dict[str, Any]]:
    args: dict[str, Any] = {
        "image": "reg.local:5000/airtrust:1",
        "source": SOURCE,
        "registries": REGS,
        "runtime": Runtime.CONTAINERD,
        **kw,
    }
    return {doc["kind"]: doc for doc in node_agent_objects(**args)}


def test_the_agent_runs_on_every_node_whatever_its_taints() -> None:
    spec = objects()["DaemonSet"]["spec"]["template"]["spec"]
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert spec["priorityClassName"] == "system-node-critical"
    assert "nodeSelector" not in spec and "affinity" not in spec


def test_only_the_runtimes_folder_is_mounted_from_the_host() -> None:
    spec = objects()["DaemonSet"]["spec"]["template"]["spec"]
    (volume,) = spec["volumes"]
    assert volume["hostPath"]["path"] == "/etc/containerd/certs.d"
    (container,) = spec["containers"]
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == "/host/etc/containerd/certs.d"
    assert "readOnly" not in mount
    args = container["args"]
    assert args[args.index("--root") + 1] == "/host"
    assert args[args.index("--certs-dir") + 1] == "/etc/containerd/certs.d"


@pytest.mark.parametrize(
    ("runtime", "folder"),
    [
        (Runtime.CRIO, "/etc/containers/certs.d"),
        (Runtime.DOCKER, "/etc/docker/certs.d"),
    ],
)
def test_each_runtime_mounts_its_own_folder(runtime: Runtime, folder: str) -> None:
    spec = objects(runtime=runtime)["DaemonSet"]["spec"]["template"]["spec"]
    assert [v["hostPath"]["path"] for v in spec["volumes"]] == [folder]
    args = spec["containers"][0]["args"]
    assert args[args.index("--runtime") + 1] == str(runtime)


@pytest.mark.parametrize(
    ("runtime", "kubeconfig", "generated"),
    [
        (Runtime.K3S, "/etc/rancher/k3s/k3s.yaml", "/var/lib/rancher/k3s/agent/etc/containerd"),
        (Runtime.RKE2, "/etc/rancher/rke2/rke2.yaml", "/var/lib/rancher/rke2/agent/etc/containerd"),
    ],
)
def test_k3s_and_rke2_mount_registries_yaml_alone_never_the_kubeconfigs_folder(
    runtime: Runtime, kubeconfig: str, generated: str
) -> None:
    """A server keeps its cluster-admin kubeconfig beside registries.yaml: the pod gets
    that one file (FileOrCreate), airtrust's folder for the CA files and record, and
    read-only what the service renders on start (to see whether it loaded the file)."""
    spec = objects(runtime=runtime)["DaemonSet"]["spec"]["template"]["spec"]
    folder = kubeconfig.rsplit("/", 1)[0]
    volumes = {v["name"]: v["hostPath"] for v in spec["volumes"]}
    assert volumes == {
        "registries-yaml": {"path": f"{folder}/registries.yaml", "type": "FileOrCreate"},
        "airtrust-ca": {"path": "/var/lib/airtrust/registry-ca", "type": "DirectoryOrCreate"},
        "runtime-config": {"path": generated, "type": "DirectoryOrCreate"},
    }
    for host in volumes.values():  # no host path reaches the kubeconfig
        assert not (kubeconfig + "/").startswith(host["path"].rstrip("/") + "/"), host
    (container,) = spec["containers"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert {n: (m["mountPath"], m.get("readOnly", False)) for n, m in mounts.items()} == {
        n: (f"/host{h['path']}", n == "runtime-config") for n, h in volumes.items()
    }
    args = container["args"]
    assert args[args.index("--certs-dir") + 1] == folder  # where registries.yaml is


def test_a_given_certs_dir_is_the_one_host_path() -> None:
    spec = objects(certs_dir="/var/lib/containerd/hosts/")["DaemonSet"]["spec"]["template"]["spec"]
    assert [v["hostPath"]["path"] for v in spec["volumes"]] == ["/var/lib/containerd/hosts"]


def test_root_without_privilege_nothing_but_the_folder_writable() -> None:
    spec = objects()["DaemonSet"]["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsUser"] == 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
    (container,) = spec["containers"]
    sc = container["securityContext"]
    assert sc["privileged"] is False
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}  # root owns the folder: no DAC override
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


def test_the_account_reads_exactly_the_ca_secret_and_gets_and_patches_nodes() -> None:
    docs = objects()
    role = docs["Role"]
    assert role["metadata"]["namespace"] == "airtrust-nodes"
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["registry-ca"],
            "verbs": ["get"],
        }
    ]
    assert docs["ClusterRole"]["rules"] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]}
    ]
    for kind in ("RoleBinding", "ClusterRoleBinding"):
        assert docs[kind]["subjects"] == [
            {"kind": "ServiceAccount", "name": "airtrust-node", "namespace": "airtrust-nodes"}
        ]
    ds = docs["DaemonSet"]
    assert ds["metadata"]["namespace"] == docs["ServiceAccount"]["metadata"]["namespace"]
    assert ds["spec"]["template"]["spec"]["serviceAccountName"] == "airtrust-node"


def test_every_registry_once_in_the_order_given() -> None:
    regs = [*REGS, REGS[0], Registry("reg.local")]
    args = objects(registries=regs)["DaemonSet"]["spec"]["template"]["spec"]
    given = args["containers"][0]["args"]
    names = [given[i + 1] for i, a in enumerate(given) if a == "--registry"]
    assert names == ["reg.local:5000", "10.0.0.7:443", "reg.local"]


@pytest.mark.parametrize(
    ("kw", "said"),
    [
        ({"certs_dir": "etc/containerd/certs.d"}, "not an absolute path"),
        ({"certs_dir": "/etc/../root"}, "not an absolute path"),
        ({"registries": []}, "at least one registry"),
    ],
)
def test_bad_agent_input_is_refused(kw: dict[str, Any], said: str) -> None:
    with pytest.raises(NodeTrustError, match=said):
        objects(**kw)


# --- the CLI -----------------------------------------------------------------------------


def _ca(tmp_path: Path) -> Path:
    out = tmp_path / "ca"
    assert run_cli("ca", "create", "--out", out, "--name", "Node Agent Test CA").code == 0
    return out


def test_render_node_trust_writes_a_kustomization_of_everything(tmp_path: Path) -> None:
    ca = _ca(tmp_path)
    out = tmp_path / "out"
    result = run_cli(
        "render", "--node-trust", "--image", "reg.local:5000/airtrust:1",
        "--source", "secret/airtrust-nodes/registry-ca", "--registry", "reg.local:5000",
        "--ca", ca / "ca.crt", "--out", out,
    )  # fmt: skip
    assert result.code == 0, result.err
    listed = yaml.safe_load((out / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in out.iterdir() if p.name != "kustomization.yaml")
    kinds = [yaml.safe_load((out / name).read_text())["kind"] for name in listed]
    assert kinds[0] == "Namespace" and "DaemonSet" in kinds and "Secret" in kinds
    (secret,) = [yaml.safe_load((out / n).read_text()) for n in listed if "secret" in n]
    assert "PRIVATE KEY" not in str(secret) and secret["type"] == "Opaque"


def test_render_node_trust_takes_registries_and_runtime_from_the_config(tmp_path: Path) -> None:
    ca = _ca(tmp_path)
    config = tmp_path / "airtrust.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "domain": "runai.example.test",
                "ca": {"bundle": [str(ca / "ca.crt")]},
                "clusters": [{"context": "gpu-1", "registries": ["Reg.Local:5000"]}],
                "registries": ["mirror.local"],
                "node_trust": {
                    "runtime": "crio",
                    "source": "secret/airtrust-nodes/registry-ca",
                },
            }
        )
    )
    out = tmp_path / "out"
    result = run_cli(
        "render", "--node-trust", "--image", "img", "-c", config, "--out", out, "-o", "json"
    )
    assert result.code == 0, result.err
    (ds,) = [doc for p in out.glob("*-daemonset.yaml") if (doc := yaml.safe_load(p.read_text()))]
    args = ds["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [args[i + 1] for i, a in enumerate(args) if a == "--registry"] == [
        "mirror.local",
        "reg.local:5000",
    ]
    assert args[args.index("--runtime") + 1] == "crio"
    assert ds["spec"]["template"]["spec"]["volumes"][0]["hostPath"]["path"] == (
        "/etc/containers/certs.d"
    )


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--registry", "https://reg.local:5000"], "has a scheme"),
        (["--registry", "reg.local/team"], "has a path"),
        (["--registry", "reg.local", "--runtime", "auto"], "not auto"),
        (["--registry", "reg.local", "--runtime", "kata"], "Invalid value for '--runtime'"),
        (["--registry", "reg.local", "--certs-dir", "certs.d"], "not an absolute path"),
        ([], "needs --registry"),
        (["--registry", "reg.local", "--ca", "KEY"], "private key"),
    ],
)
def test_bad_render_input_is_one_line_and_writes_nothing(
    args: list[str], said: str, tmp_path: Path
) -> None:
    ca = _ca(tmp_path)
    args = [str(ca / "ca.key") if a == "KEY" else a for a in args]
    out = tmp_path / "out"
    result = run_cli(
        "render", "--node-trust", "--image", "img", "--source", "secret/ns/ca", *args,
        "--out", out,
    )  # fmt: skip
    assert result.code == 2, result.out + result.err
    assert said in result.err, result.err
    assert "Traceback" not in result.err and "-----BEGIN" not in result.err
    assert not out.exists()


# --- airtrust.yaml -----------------------------------------------------------------------

BASE = "domain: runai.example.test\nca: {bundle: [ca.pem]}\nclusters: [{context: gpu-1}]\n"


def config(extra: str) -> Any:
    return parse_config(BASE + extra, source="airtrust.yaml", base=Path("/cfg"))


def test_registries_are_normalised_and_per_cluster_ones_are_added() -> None:
    text = (
        "domain: runai.example.test\nca: {bundle: [ca.pem]}\n"
        "registries: [Reg.Local:5000, reg.local:5000]\n"
        "clusters: [{context: gpu-1, registries: ['[fd00::1]:5000']}, {context: gpu-2}]\n"
        "node_trust: {runtime: docker}\n"
    )
    loaded = parse_config(text, source="airtrust.yaml", base=Path("/cfg"))
    assert loaded.registries == ("reg.local:5000",)
    one = loaded.node_trust_for("gpu-1")
    assert [str(r) for r in one.registries] == ["reg.local:5000", "[fd00::1]:5000"]
    assert one.enabled and one.runtime is Runtime.DOCKER
    assert [str(r) for r in loaded.node_trust_for("gpu-2").registries] == ["reg.local:5000"]


def test_a_clusters_own_node_trust_wins_and_absent_means_not_configured() -> None:
    loaded = config("registries: [reg.local]\nnode_trust: {runtime: containerd, enabled: false}\n")
    assert not loaded.node_trust_for("gpu-1").enabled
    assert not config("registries: [reg.local]\n").node_trust_for("gpu-1").enabled
    text = (
        "domain: d.test\nca: {bundle: [ca.pem]}\nregistries: [reg.local]\n"
        "node_trust: {runtime: containerd}\n"
        "clusters: [{context: k, node_trust: {runtime: k3s, certs_dir: /etc/rancher/k3s}}]\n"
    )
    own = parse_config(text, source="airtrust.yaml", base=Path("/cfg")).node_trust_for("k")
    assert own.runtime is Runtime.K3S and own.certs_dir == "/etc/rancher/k3s"


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        ("registries: [https://reg.local]\n", "registries: Value error, registry"),
        ("registries: [reg.local/x]\n", "has a path"),
        ("registries: [reg.local:0]\n", "is not 1-65535"),
        ("node_trust: {runtime: kata}\n", "node_trust.runtime: Input should be"),
        ("node_trust: {certs_dir: certs.d}\n", "not an absolute path on the node"),
        ("node_trust: {restart: yes}\n", "node_trust.restart"),
    ],
)
def test_bad_node_trust_config_is_one_line(extra: str, said: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config(extra)
    line = caught.value.one_line()
    assert said in line and "\n" not in line


# --- doctor --probe's pull pod ------------------------------------------------------------


def test_the_pull_pod_is_pinned_tolerant_and_always_pulls() -> None:
    from airtrust.plan.node_agent import pull_probe_pod

    pod = pull_probe_pod("airtrust-nodes", "airtrust-pull-probe-x", node="gpu-7", image="r/i:1")
    spec = pod["spec"]
    assert spec["nodeName"] == "gpu-7"
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert spec["automountServiceAccountToken"] is False and spec["restartPolicy"] == "Never"
    (container,) = spec["containers"]
    assert container["imagePullPolicy"] == "Always" and container["image"] == "r/i:1"
    assert pod["metadata"]["labels"]["airtrust.io/inject"] == "false"


KUBELET_X509 = (
    'Failed to pull image "10.0.0.7:5000/library/debian:bookworm": failed to pull and unpack '
    'image: failed to resolve reference: failed to do request: Head "https://10.0.0.7:5000/v2/'
    'library/debian/manifests/bookworm": tls: failed to verify certificate: x509: certificate '
    "signed by unknown authority"
)


@pytest.mark.parametrize(
    ("pod", "events", "expected"),
    [
        (None, [{"reason": "Pulling", "message": "Pulling image"}], None),
        (None, [{"reason": "Failed", "message": KUBELET_X509}], ("fail", "x509: certificate")),
        (None, [{"reason": "Failed", "message": "Error: ErrImagePull"}], ("fail", "ErrImagePull")),
        (
            None,
            [{"reason": "Pulled", "message": 'Successfully pulled image "r/i:1" in 1s'}],
            ("ok", "Successfully pulled"),
        ),
        (
            {
                "status": {
                    "containerStatuses": [
                        {"state": {"waiting": {"reason": "ErrImagePull", "message": KUBELET_X509}}}
                    ]
                }
            },
            [],
            ("fail", "signed by unknown authority"),
        ),
        (
            {"status": {"containerStatuses": [{"image": "r/i:1", "imageID": "r/i@sha256:1"}]}},
            [],
            ("ok", "pulled r/i:1"),
        ),
        (
            {
                "status": {
                    "containerStatuses": [{"state": {"waiting": {"reason": "ContainerCreating"}}}]
                }
            },
            [],
            None,
        ),
    ],
)
def test_the_kubelets_words_decide_the_pull(
    pod: dict[str, Any] | None, events: list[dict[str, Any]], expected: tuple[str, str] | None
) -> None:
    from airtrust.usecases.doctor.node_registry import judge_pull

    verdict = judge_pull(pod, events)
    if expected is None:
        assert verdict is None
        return
    assert verdict is not None
    assert (str(verdict[0]), expected[1] in verdict[1]) == (expected[0], True), verdict


def test_the_failed_event_that_says_most_is_the_evidence() -> None:
    from airtrust.usecases.doctor.node_registry import judge_pull

    verdict = judge_pull(
        None,
        [
            {"reason": "Failed", "message": "Error: ErrImagePull"},
            {"reason": "Failed", "message": KUBELET_X509},
        ],
    )
    assert verdict is not None and "x509: certificate signed by unknown authority" in verdict[1]
