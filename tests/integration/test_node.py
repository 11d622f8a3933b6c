"""End to end on a real node: what airtrust produces runs as pods, and trust is proven there.

`scripts/testcluster up --node` runs a whole cluster in a network namespace of its
own (tests/integration/node.py): a kubelet with Debian's containerd and runc, a pod
network, kube-proxy, and a registry whose certificate an airtrust-made CA issued,
which the node trusts through containerd's certs.d. Pods run on the pod network and
the in-cluster parts exactly as `airtrust render` writes them; container output is
read with kubectl logs, through the kubelet. The module's own node, brought down at
the end, must leave nothing behind (node.py checks it after the pods ran).
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_cli
from tests.integration.conftest import (
    UNTRUSTED,
    bare_repository,
    git_https_server,
    openssl_server,
    wait_for,
)
from tests.integration.gitsync import push_gitsync
from tests.integration.kube import run_script
from tests.integration.node import (
    HOST,
    Node,
    build_airtrust_image,
    host_aliases,
    pod,
    push_debian,
    started_node,
    trust_points,
)
from tests.integration.registry import make_tar, push_tar

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def node(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Node]:
    with started_node(tmp_path_factory.mktemp("node"), request) as n:
        yield n


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
    with (
        git_https_server(node.pki / "tls.crt", node.pki / "tls.key", root) as server,
        node.exposed(server.port),
    ):
        for name, image in (("patched", live), ("unpatched", base)):
            out = tmp_path / f"out-{name}"
            out.mkdir()
            out.chmod(0o777)
            sidecar = pod(
                f"git-sync-{name}", "runai", image,
                args=[f"--repo=https://{HOST}:{server.port}/repo.git", "--one-time",
                      "--root=/git", "--link=current"],
                container={"volumeMounts": [{"name": "git", "mountPath": "/git"}]},
                volumes=[{"name": "git", "hostPath": {"path": str(out)}}],
                hostAliases=host_aliases(node),
            )  # fmt: skip
            phase, log = node.run_pod(sidecar)
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
    return push_debian(node)


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
                "doctor": {"probe_image": debian_image},
            }
        )
    )
    applied = run_cli("apply", "-c", config)
    assert applied.code == 0, applied.err
    with (
        openssl_server(node.pki / "tls.crt", node.pki / "tls.key") as endpoint,
        node.exposed(endpoint.port),
    ):
        # This machine reaches the endpoint on its loopback, the probe pod at the node's
        # address (no DNS here: each side is told its route, as split DNS would).
        connect = [
            "--connect-to", f"{HOST}:443:127.0.0.1:{endpoint.port}",
            "--probe-connect-to", f"{HOST}:443:{node.ip}:{endpoint.port}",
        ]  # fmt: skip

        def probe() -> dict[str, str]:
            """The in-cluster probe's check, the same in doctor's JSON and its HTML page."""
            page = tmp_path / "doctor.html"
            result = run_cli(
                "doctor", "-c", config, "--probe", *connect, "-o", "json", "--html", page
            )
            assert "Traceback" not in result.err, result.err
            (check,) = [
                c for c in json.loads(result.out)["checks"] if c["name"] == "in-cluster-probe"
            ]
            (shown,) = [p for p in trust_points(page) if p["check"] == "in-cluster-probe"]
            assert (shown["target"], shown["status"], shown["evidence"]) == (
                check["target"], check["status"], check["evidence"]
            ), shown  # fmt: skip
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


def test_the_node_survives_kubelet_and_containerd_restarts(node: Node, debian_image: str) -> None:
    """A running pod outlives a kubelet restart and a containerd restart; the node comes
    back Ready and new pods still pull from the trusted registry and run."""
    node.cluster.kubectl("create", "namespace", "reliability")
    long_running = pod("sleeper", "reliability", debian_image, command=["sleep", "3600"])
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
    fresh = pod("after", "reliability", debian_image, command=["true"])
    phase, log = node.run_pod(fresh)
    assert phase == "Succeeded", log


def _ready(node: Node) -> bool:
    conditions = node.cluster.get("node", "airtrust-node")["status"]["conditions"]
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


@pytest.fixture(scope="module")
def controller_image(node: Node, debian_image: str, offline_bundle: Path) -> str:
    """The controller image as an admin builds it across the gap: the session's offline
    bundle's wheels on the Debian base, no Docker."""
    return build_airtrust_image(node, debian_image, offline_bundle / "wheels")


def _lease(node: Node) -> dict[str, object]:
    found = node.cluster.get("lease", "-n", "airtrust-system", "airtrust-sync")
    return dict(found.get("spec") or {})


def _sync_pods(node: Node) -> list[str]:
    pods = node.cluster.get(
        "pods", "-n", "airtrust-system", "-l", "app.kubernetes.io/name=airtrust-sync"
    )["items"]
    return [p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")]


def test_the_rendered_controller_runs_as_written_and_keeps_secrets_converged(
    node: Node, controller_image: str, tmp_path: Path
) -> None:
    """`render --controller` applied as is: two replicas Ready (their probes pass on the
    named metrics port), one Lease holder, which is one of them; metrics through
    port-forward; a new labelled namespace gets the secret, a deleted secret comes back,
    a deleted namespace causes no error loop; the holder's pod deleted, the other takes
    the Lease and keeps converging; after kubelet and containerd restarts still so."""
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
    cluster.kubectl("apply", "--server-side", "-k", str(rendered))
    try:
        node.wait_rollout("airtrust-system", "airtrust-sync")
        deployment = cluster.get("deployment", "-n", "airtrust-system", "airtrust-sync")
        assert deployment["status"]["readyReplicas"] == 2
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "airtrust-sync"
        source = (node.pki / "ca-bundle.pem").read_bytes()

        def secret_in(ns: str) -> bool:
            found = cluster.kubectl("get", "secret", "runai-ca-cert", "-n", ns, "-o", "json",
                                    check=False)  # fmt: skip
            if found.returncode != 0:
                return False
            data = json.loads(found.stdout)["data"]["runai-ca.pem"]
            return base64.b64decode(data) == source

        wait_for("the controller to write the secret into team-a", lambda: secret_in("team-a"), 180)
        wait_for("one replica to hold the Lease", lambda: bool(_lease(node).get("holderIdentity")))
        holder = str(_lease(node)["holderIdentity"])
        pods = _sync_pods(node)
        assert len(pods) == 2 and any(holder.startswith(p) for p in pods), (holder, pods)
        cluster.kubectl("create", "namespace", "team-b")
        cluster.kubectl("label", "namespace", "team-b", "airtrust.io/ca=true")
        wait_for("a new labelled namespace to get the secret", lambda: secret_in("team-b"), 60)
        cluster.kubectl("delete", "secret", "runai-ca-cert", "-n", "team-a")
        wait_for("the deleted secret to come back", lambda: secret_in("team-a"), 60)
        (leader,) = [p for p in pods if holder.startswith(p)]

        def errors(port: int) -> float:
            text = subprocess.run(
                ["curl", "-sf", f"http://127.0.0.1:{port}/metrics"],
                capture_output=True, text=True, check=False,
            ).stdout  # fmt: skip
            for line in text.splitlines():
                if line.startswith("airtrust_reconcile_errors_total "):
                    return float(line.split()[1])
            return -1.0

        with node.port_forward("airtrust-system", f"pod/{leader}", "metrics") as port:
            cluster.kubectl("delete", "namespace", "team-b", "--wait=true", "--timeout=120s")
            assert not cluster.exists("namespace", "team-b")  # the controller-manager finished it
            before = errors(port)
            assert before >= 0, "the controller's metrics are not served through port-forward"
            cluster.kubectl("delete", "secret", "runai-ca-cert", "-n", "team-a")
            wait_for("a pass after the namespace deletion", lambda: secret_in("team-a"), 60)
            assert errors(port) == before, "deleting a namespace made the controller fail"
        # Failover: the holder's pod goes; the other replica takes the Lease and converges.
        cluster.kubectl("-n", "airtrust-system", "delete", "pod", leader, "--wait=false")
        wait_for(
            "another replica to take the Lease",
            lambda: not str(_lease(node).get("holderIdentity", "")).startswith(leader),
            120,
        )
        cluster.kubectl("delete", "secret", "runai-ca-cert", "-n", "team-a")
        wait_for("the new holder converging", lambda: secret_in("team-a"), 60)
        # doctor sees the controller's health from the cluster: the Deployment and the
        # Lease (the new holder), in its JSON and in the HTML report.
        config = tmp_path / "airtrust.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "domain": HOST,
                    "version": "2.20",
                    "ca": {"bundle": [str(node.pki / "ca-bundle.pem")]},
                    "kubeconfig": str(cluster.kubeconfig),
                    "clusters": [{"context": "admin"}],
                }
            )
        )
        node.wait_rollout("airtrust-system", "airtrust-sync")  # the replacement replica too
        new_holder = str(_lease(node)["holderIdentity"])
        page = tmp_path / "doctor.html"
        doctor = run_cli("doctor", "-c", config, "--html", page, "-o", "json")
        assert "Traceback" not in doctor.err, doctor.err
        (health,) = [c for c in json.loads(doctor.out)["checks"] if c["name"] == "sync-controller"]
        assert health["status"] == "ok", health
        assert f"Lease held by {new_holder}" in health["evidence"], health
        assert "sync-controller" in page.read_text() and new_holder in page.read_text()
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
        logs = "".join(node.logs("airtrust-system", f"pod/{p}", "sync") for p in _sync_pods(node))
        assert "Traceback" not in logs, logs[-3000:]
        assert "401" not in logs and "Forbidden" not in logs, logs[-3000:]
        # Through all of it no controller container was restarted (no failed liveness
        # probe, no exit); a restart is told with how the last one ended and its output.
        pods = cluster.get(
            "pods", "-n", "airtrust-system", "-l", "app.kubernetes.io/name=airtrust-sync"
        )["items"]

        def previous(name: str) -> str:
            args = ("-n", "airtrust-system", "logs", "--previous", name)
            return cluster.kubectl(*args, check=False).stdout.decode()[-2000:]

        restarted = {
            p["metadata"]["name"]: (
                s["restartCount"],
                s.get("lastState"),
                previous(p["metadata"]["name"]),
            )
            for p in pods
            for s in p["status"]["containerStatuses"]
            if s["restartCount"]
        }
        assert len(pods) == 2 and not restarted, restarted
    finally:
        # The controller keeps every runai-ca-cert as it was told: gone before the next
        # test, which may change one on purpose (foreground: its pods are gone too).
        cluster.kubectl(
            "-n", "airtrust-system", "delete", "deployment", "airtrust-sync",
            "--cascade=foreground", "--wait=true", "--timeout=120s",
        )  # fmt: skip
