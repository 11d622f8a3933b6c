"""End to end on a real node: what airtrust produces runs as pods, and trust is proven there.

`scripts/testcluster up --node` gives the test apiserver kube-controller-manager,
kube-scheduler and a kubelet with Debian's containerd and runc, plus a registry
on 127.0.0.1 whose certificate an airtrust-made CA issued; the node pulls from
it through containerd's certs.d, trusting that CA. Pods use the host network
and 127.0.0.1 only. Container output is read from the kubelet's pod log files
(the apiserver cannot reach a kubelet whose node address is not loopback).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import run_cli
from tests.integration.aiimage import ai_layers, gzip_layer, push_oci
from tests.integration.conftest import (
    UNTRUSTED,
    bare_repository,
    free_port,
    git_https_server,
    openssl_server,
    wait_for,
    wait_for_port,
)
from tests.integration.gitsync import push_gitsync
from tests.integration.kube import KubeCluster, started_cluster
from tests.integration.registry import debian_rootfs, make_tar, push_tar

pytestmark = pytest.mark.integration
HOST = "runai.example.test"
GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


@dataclass
class Node:
    cluster: KubeCluster
    folder: Path
    registry: str
    registry_ca: Path
    pki: Path  # the local CA (quickstart) whose certificates the TLS servers serve

    def ref(self, path: str) -> str:
        return f"{self.registry}/{path}"

    def run_pod(self, pod: dict[str, Any], timeout: float = 180) -> tuple[str, str]:
        """Create ``pod`` and wait until it ends: (phase, its first container's log)."""
        self.cluster.kubectl("create", "-f", "-", stdin=json.dumps(pod).encode())
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        phase = ""

        def ended() -> bool:
            nonlocal phase
            phase = self.cluster.get("pod", "-n", ns, name)["status"].get("phase", "")
            return phase in ("Succeeded", "Failed")

        wait_for(f"pod {ns}/{name} to run to completion", ended, timeout=timeout)
        return phase, self.log(ns, name)

    def log(self, ns: str, name: str) -> str:
        return self.log_of(ns, name + "_", "main")

    def log_of(self, ns: str, prefix: str, container: str) -> str:
        """The kubelet's log files of the containers named ``container`` in pods whose
        name starts with ``prefix`` (the apiserver cannot reach this kubelet for them)."""
        pattern = f"{ns}_{prefix}*/{container}/*.log"
        logs = sorted((self.folder / "node" / "pod-logs").glob(pattern))
        return "".join(p.read_text() for p in logs)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    folder = tmp_path_factory.mktemp("node")
    pki = folder / "pki"
    result = run_cli("quickstart", "--domain", HOST, "--ip", "127.0.0.1", "--out", pki)
    assert result.code == 0, result.err
    started = time.monotonic()
    with started_cluster(folder / "cluster", node=True) as cluster:
        print(f"\nnode Ready {time.monotonic() - started:.1f} s after `up --node`")
        d = folder / "cluster"
        yield Node(cluster, d, (d / "registry").read_text().strip(), d / "registry-ca.crt", pki)


def _pod(
    name: str,
    ns: str,
    image: str,
    *,
    args: list[str] | None = None,
    command: list[str] | None = None,
    container: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A host-network pod that runs once; its container is named ``main``."""
    main: dict[str, Any] = {"name": "main", "image": image, **(container or {})}
    if args is not None:
        main["args"] = args
    if command is not None:
        main["command"] = command
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, **spec.pop("metadata", {})},
        "spec": {
            "hostNetwork": True,
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "containers": [main],
            **spec,
        },
    }


def test_the_patched_git_sync_from_the_runai_config_clones_on_the_node(
    node: Node, tmp_path: Path
) -> None:
    """The documented sidecars for real: the faithful git-sync v4.4.0, mirrored and
    patched by airtrust, named in the RunaiConfig by `airtrust apply`, runs as a pod
    (65533, its entrypoint) and clones over TLS; the unpatched image fails."""
    root = tmp_path / "git"
    bare_repository(root, "synced on the node\n")
    base = node.ref("git-sync/git-sync:v4.4.0")
    push_gitsync(base)
    goofys = make_tar(tmp_path / "goofys.tar", {"goofys": b"#!/bin/sh\n"})
    push_tar(node.ref("run-ai-prod/goofys:master"), goofys)
    patched = run_cli(
        "image", "patch", "--sidecars", "--registry", node.registry, "--ca",
        node.pki / "ca-bundle.pem", "--registry-ca", node.registry_ca, "-o", "json",
    )  # fmt: skip
    assert patched.code == 0, patched.err
    references = json.loads(patched.out)["references"]
    node.cluster.install_crd("runaiconfig.yaml")
    if not node.cluster.exists("namespace", "runai"):
        node.cluster.kubectl("create", "namespace", "runai")
    runai_config = {
        "apiVersion": "run.ai/v1",
        "kind": "RunaiConfig",
        "metadata": {"name": "runai", "namespace": "runai"},
        "spec": {"s3": {"image": node.ref("run-ai-prod/goofys:master")}, "git": {"image": base}},
    }
    node.cluster.kubectl("apply", "-f", "-", stdin=json.dumps(runai_config).encode())
    config = tmp_path / "airtrust.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "domain": HOST,
                "version": "2.20",
                "ca": {"bundle": [str(node.pki / "ca-bundle.pem")]},
                "kubeconfig": str(node.cluster.kubeconfig),
                "clusters": [{"context": "admin"}],
                "images": {"references": references},
            }
        )
    )
    applied = run_cli("apply", "-c", config)
    assert applied.code == 0, applied.err
    live = node.cluster.get("runaiconfig", "-n", "runai", "runai")["spec"]["git"]["image"]
    assert live != base and live.startswith(node.ref("git-sync/git-sync:"))
    with git_https_server(node.pki / "tls.crt", node.pki / "tls.key", root) as server:
        for name, image in (("patched", live), ("unpatched", base)):
            out = tmp_path / f"out-{name}"
            out.mkdir()
            out.chmod(0o777)
            pod = _pod(
                f"git-sync-{name}", "runai", image,
                args=[f"--repo=https://127.0.0.1:{server.port}/repo.git", "--one-time",
                      "--root=/git", "--link=current"],
                container={"volumeMounts": [{"name": "git", "mountPath": "/git"}]},
                volumes=[{"name": "git", "hostPath": {"path": str(out)}}],
            )  # fmt: skip
            phase, log = node.run_pod(pod)
            if name == "patched":
                assert phase == "Succeeded", log[-2000:]
                assert (out / "current" / "README").read_text() == "synced on the node\n"
            else:
                assert phase == "Failed"
                # git-sync logs what the image's git (libcurl-gnutls) said.
                assert UNTRUSTED["git"] in log, log[-2000:]
                assert not (out / "current").exists()


@pytest.fixture(scope="module")
def debian_image(node: Node) -> str:
    ref = node.ref("library/debian:bookworm")
    push_tar(ref, debian_rootfs())
    return ref


def test_doctor_probe_runs_on_the_node_and_reports_a_wrong_ca(
    node: Node, debian_image: str, tmp_path: Path
) -> None:
    config = tmp_path / "airtrust.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "domain": HOST,
                "version": "2.20",
                "ca": {"bundle": [str(node.pki / "ca-bundle.pem")]},
                "tls": {"cert": str(node.pki / "tls.crt"), "key": str(node.pki / "tls.key")},
                "kubeconfig": str(node.cluster.kubeconfig),
                "control_plane": {"context": "admin"},
                "clusters": [{"context": "admin"}],
                "doctor": {"probe_image": debian_image, "probe_host_network": True},
            }
        )
    )
    applied = run_cli("apply", "-c", config)
    assert applied.code == 0, applied.err
    with openssl_server(node.pki / "tls.crt", node.pki / "tls.key") as endpoint:
        connect = ["--connect-to", f"{HOST}:443:127.0.0.1:{endpoint.port}"]

        def probe() -> dict[str, str]:
            result = run_cli("doctor", "-c", config, "--probe", *connect, "-o", "json")
            assert "Traceback" not in result.err, result.err
            (check,) = [
                c for c in json.loads(result.out)["checks"] if c["name"] == "in-cluster-probe"
            ]
            return check

        good = probe()
        assert good["status"] == "ok", good
        assert "mounted bundle: 1 certificate(s)" in good["evidence"]
        assert f"handshake with https://{HOST}/: ok" in good["evidence"]
        # The secret in the cluster's namespace now holds another CA.
        other = tmp_path / "other"
        assert run_cli("ca", "create", "--out", other, "--name", "Some Other CA").code == 0
        wrong = node.cluster.kubectl(
            "create", "secret", "generic", "runai-ca-cert", "-n", "runai",
            f"--from-file=runai-ca.pem={other / 'ca.crt'}", "--dry-run=client", "-o", "json",
        ).stdout  # fmt: skip
        node.cluster.kubectl("replace", "-f", "-", stdin=wrong)
        bad = probe()
        assert bad["status"] == "fail", bad
        assert "handshake" in bad["evidence"] and "failed" in bad["evidence"], bad
        assert "not airtrust's bundle" in bad["fix"] and "airtrust apply" in bad["fix"], bad
    # Put the right CA back (the hand-made secret is kubectl's now: airtrust will not
    # take it over without being asked, so it goes first).
    node.cluster.kubectl("delete", "secret", "runai-ca-cert", "-n", "runai")
    restored = run_cli("apply", "-c", config)
    assert restored.code == 0, restored.out + restored.err


@dataclass
class Webhook:
    process: subprocess.Popen[bytes]
    url: str


@pytest.fixture(scope="module")
def webhook(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    folder = tmp_path_factory.mktemp("webhook")
    issued = run_cli(
        "cert", "issue", "--ca-dir", node.pki, "--domain", "airtrust-inject.airtrust-system.svc",
        "--ip", "127.0.0.1", "--out", folder / "tls",
    )  # fmt: skip
    assert issued.code == 0, issued.err
    port = free_port()
    log = open(folder / "webhook.log", "ab")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "airtrust", "inject", "serve", "--listen", f"127.0.0.1:{port}",
            "--cert", str(folder / "tls" / "tls.crt"), "--key", str(folder / "tls" / "tls.key"),
            "--ca", str(node.pki / "ca-bundle.pem"), "--kubeconfig", str(node.cluster.kubeconfig),
            "--context", "admin", "--interval", "1",
        ],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for_port(port, process, timeout=30)
        url = f"https://127.0.0.1:{port}/mutate"
        rendered = run_cli(
            "render", "--inject", "--url", url, "--ca", node.pki / "ca-bundle.pem",
            "--out", folder / "rendered",
        )  # fmt: skip
        assert rendered.code == 0, rendered.err
        node.cluster.kubectl("apply", "--server-side", "-k", str(folder / "rendered"))
        yield Webhook(process, url)
    finally:
        process.terminate()
        process.wait(20)


@pytest.fixture(scope="module")
def workload_image(node: Node) -> str:
    """The AI workload image, unpatched: Debian's curl and a venv with requests."""
    base, opt = ai_layers()
    ref = node.ref("research/notebook:plain")
    push_oci(ref, [(*gzip_layer(base), GZIP), (*gzip_layer(opt), GZIP)], ["PATH=/usr/bin:/bin"])
    return ref


def test_an_injected_stock_image_reaches_the_tls_server_and_an_uninjected_one_fails(
    node: Node, webhook: Webhook, workload_image: str, tmp_path: Path
) -> None:
    www = tmp_path / "www"
    www.mkdir()
    (www / "hello.txt").write_text("hello\n")
    node.cluster.kubectl("create", "namespace", "research")
    node.cluster.kubectl("label", "namespace", "research", "airtrust.io/inject=enabled")
    node.cluster.kubectl("create", "namespace", "research-plain")
    wait_for(
        "the bundle ConfigMap in the injected namespace",
        lambda: node.cluster.exists("configmap", "airtrust-ca-bundle", "research"),
    )
    with openssl_server(node.pki / "tls.crt", node.pki / "tls.key", www_root=www) as server:
        url = f"https://127.0.0.1:{server.port}/hello.txt"
        fetch = f"import requests; requests.get('{url}', timeout=10).raise_for_status()"
        script = f'curl -sSf -o /dev/null {url} && /opt/venv/bin/python -c "{fetch}"'
        for ns in ("research", "research-plain"):
            pod = _pod("fetch", ns, workload_image, command=["sh", "-c", script])
            phase, log = node.run_pod(pod)
            if ns == "research":
                assert phase == "Succeeded", log[-2000:]
                annotations = node.cluster.get("pod", "-n", ns, "fetch")["metadata"]["annotations"]
                assert "airtrust.io/injected" in annotations
            else:
                assert phase == "Failed", log[-2000:]
                assert UNTRUSTED["curl"] in log, log[-2000:]  # the script's first client


def test_the_node_survives_kubelet_and_containerd_restarts(node: Node, debian_image: str) -> None:
    """A running pod outlives a kubelet restart and a containerd restart; the node comes
    back Ready and new pods still pull from the trusted registry and run."""
    from tests.integration.kube import run_script

    node.cluster.kubectl("create", "namespace", "reliability")
    long_running = _pod("sleeper", "reliability", debian_image, command=["sleep", "3600"])
    node.cluster.kubectl("create", "-f", "-", stdin=json.dumps(long_running).encode())

    def running() -> bool:
        status = node.cluster.get("pod", "-n", "reliability", "sleeper")["status"]
        return status.get("phase") == "Running"

    wait_for("the sleeper pod running", running, timeout=120)
    before = node.cluster.get("pod", "-n", "reliability", "sleeper")["status"]["containerStatuses"]
    for what in ("kubelet", "containerd"):
        run_script(f"stop-{what}", node.folder)
        run_script(f"start-{what}", node.folder)
        if what == "containerd":  # the kubelet reconnects; wait for it to say Ready
            wait_for("the node Ready again", lambda: _ready(node), timeout=120)
        wait_for(f"the sleeper still running after a {what} restart", running, timeout=120)
    after = node.cluster.get("pod", "-n", "reliability", "sleeper")["status"]["containerStatuses"]
    assert after[0]["restartCount"] == before[0]["restartCount"]  # never restarted
    fresh = _pod("after", "reliability", debian_image, command=["true"])
    phase, log = node.run_pod(fresh)
    assert phase == "Succeeded", log


def _ready(node: Node) -> bool:
    conditions = node.cluster.get("node", "airtrust-node")["status"]["conditions"]
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_down_leaves_nothing_behind(tmp_path: Path) -> None:
    """A second node cluster, brought up and down: no processes, mounts or cgroups left."""
    folder = tmp_path / "cluster"
    with started_cluster(folder, node=True):
        cgroup_root = (folder / "node" / "cgroup-root").read_text().strip()
    mounts = Path("/proc/mounts").read_text()
    assert str(folder) not in mounts
    leftovers = [p for p in Path("/sys/fs/cgroup").glob(f"*{cgroup_root}") if p.exists()]
    assert not leftovers, leftovers
    ps = subprocess.run(["ps", "-eo", "stat,args"], capture_output=True, text=True, check=True)
    alive = [
        line for line in ps.stdout.splitlines()
        if str(folder) in line and not line.lstrip().startswith("Z")
    ]  # fmt: skip
    assert not alive, alive
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def controller_image(
    node: Node, debian_image: str, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """The controller image as an admin builds it across the gap: the offline bundle's
    wheels (scripts/release, this machine's platform) on the Debian base, no Docker."""
    import tarfile

    from tests.conftest import ROOT

    out = tmp_path_factory.mktemp("release")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "release"), str(out / "dist"),
         "--platform", "x86_64", "--python", "3.11"],
        capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    (archive,) = (out / "dist").glob("airtrust-offline-*.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(out / "unpacked", filter="data")
    (bundle,) = (out / "unpacked").iterdir()
    ref = node.ref("airtrust/controller:test")
    built = run_cli(
        "image", "build-controller", "--base", debian_image, "--to", ref,
        "--wheels", bundle / "wheels", "--registry-ca", node.registry_ca,
    )  # fmt: skip
    assert built.code == 0, built.err
    return ref


def test_the_rendered_controller_runs_on_the_node_and_keeps_secrets_converged(
    node: Node, controller_image: str, tmp_path: Path
) -> None:
    """`render --controller` as users deploy it, with its ServiceAccount and RBAC (not
    admin credentials): a new labelled namespace gets the secret, a deleted secret comes
    back, a deleted namespace causes no error loop, and after kubelet and containerd
    restarts the controller is back and still converging."""
    from tests.integration.kube import run_script

    cluster = node.cluster
    for ns in ("airtrust-system", "team-a"):
        cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("label", "namespace", "team-a", "airtrust.io/ca=true")
    cluster.kubectl(
        "-n", "airtrust-system", "create", "secret", "generic", "local-ca",
        f"--from-file=runai-ca.pem={node.pki / 'ca-bundle.pem'}",
    )  # fmt: skip
    rendered = tmp_path / "rendered"
    result = run_cli(
        "render", "--controller", "--image", controller_image, "--source",
        "secret/airtrust-system/local-ca", "--selector", "airtrust.io/ca=true",
        "--out", rendered,
    )  # fmt: skip
    assert result.code == 0, result.err
    # The one adaptation this cluster needs, as a kustomize overlay over what was
    # rendered: no pod network here, so the host's, the apiserver at 127.0.0.1 (no
    # kube-proxy), metrics on a free loopback port, one replica (both would bind it).
    port = cluster.kubeconfig.read_text().split("https://127.0.0.1:")[1].split()[0]
    metrics = free_port()
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    patch = [
        {"op": "replace", "path": "/spec/replicas", "value": 1},
        {"op": "add", "path": "/spec/template/spec/hostNetwork", "value": True},
        {
            "op": "add",
            "path": "/spec/template/spec/containers/0/env",
            "value": [
                {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
                {"name": "KUBERNETES_SERVICE_PORT", "value": port},
            ],
        },
        {"op": "remove", "path": "/spec/template/spec/containers/0/readinessProbe"},
        {"op": "remove", "path": "/spec/template/spec/containers/0/livenessProbe"},
    ]
    deployment = yaml.safe_load((rendered / next(
        p.name for p in rendered.glob("*-deployment.yaml")
    )).read_text())  # fmt: skip
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    index = args.index("--metrics-addr") + 1
    patch.append(
        {"op": "replace", "path": f"/spec/template/spec/containers/0/args/{index}",
         "value": f"127.0.0.1:{metrics}"}
    )  # fmt: skip
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": ["../rendered"],
                "patches": [
                    {
                        "target": {"kind": "Deployment", "name": "airtrust-sync"},
                        "patch": yaml.safe_dump(patch),
                    }
                ],
            }
        )
    )
    cluster.kubectl("apply", "--server-side", "-k", str(overlay))
    try:
        pod_spec = cluster.get("deployment", "-n", "airtrust-system", "airtrust-sync")["spec"]
        assert pod_spec["template"]["spec"]["serviceAccountName"] == "airtrust-sync"

        def secret_in(ns: str) -> bool:
            return cluster.exists("secret", "runai-ca-cert", ns)

        wait_for("the controller to write the secret into team-a", lambda: secret_in("team-a"), 180)
        cluster.kubectl("create", "namespace", "team-b")
        cluster.kubectl("label", "namespace", "team-b", "airtrust.io/ca=true")
        wait_for("a new labelled namespace to get the secret", lambda: secret_in("team-b"), 60)
        cluster.kubectl("delete", "secret", "runai-ca-cert", "-n", "team-a")
        wait_for("the deleted secret to come back", lambda: secret_in("team-a"), 60)

        def errors() -> float:
            text = subprocess.run(
                ["curl", "-sf", f"http://127.0.0.1:{metrics}/metrics"],
                capture_output=True, text=True, check=False,
            ).stdout  # fmt: skip
            for line in text.splitlines():
                if line.startswith("airtrust_reconcile_errors_total "):
                    return float(line.split()[1])
            return -1.0

        cluster.kubectl("delete", "namespace", "team-b", "--wait=true", "--timeout=120s")
        assert not cluster.exists("namespace", "team-b")  # the controller-manager finished it
        before = errors()
        assert before >= 0, "the controller's metrics are not served"
        cluster.kubectl("delete", "secret", "runai-ca-cert", "-n", "team-a")
        wait_for("a pass after the namespace deletion", lambda: secret_in("team-a"), 60)
        assert errors() == before, "deleting a namespace made the controller fail"
        # Reliability: the node's agents restart under the running controller.
        for what in ("kubelet", "containerd"):
            run_script(f"stop-{what}", node.folder)
            run_script(f"start-{what}", node.folder)
            cluster.kubectl("delete", "secret", "runai-ca-cert", "-n", "team-a")
            wait_for(
                f"the controller converging after a {what} restart",
                lambda: secret_in("team-a"),
                120,
            )
        logs = node.log_of("airtrust-system", "airtrust-sync-", "sync")
        assert "Traceback" not in logs, logs[-3000:]
        assert "401" not in logs and "Forbidden" not in logs, logs[-3000:]
    finally:
        # The controller keeps every runai-ca-cert as it was told: gone before the next
        # test, which may change one on purpose (foreground: its pod is gone too).
        cluster.kubectl(
            "-n", "airtrust-system", "delete", "deployment", "airtrust-sync",
            "--cascade=foreground", "--wait=true", "--timeout=120s",
        )  # fmt: skip
