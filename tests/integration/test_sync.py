"""airtrust sync as real processes against a real apiserver: convergence, validation,
leader election, metrics, and an apiserver restart under the controller.

Leadership is judged from the Lease object the apiserver stores (its holder, renew
and acquire times, transitions), not from what the replicas say about themselves.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import DATA, run_cli
from tests.integration.conftest import free_port, wait_for
from tests.integration.kube import KubeCluster, run_script

pytestmark = pytest.mark.integration
SELECTOR = "airtrust.io/ca=true"
LEASE = ("-n", "airtrust-system", "get", "lease", "airtrust-sync", "-o", "json")


#: What the replicas of these tests run with (a short resync: changes show within seconds).
ARGS = (
    "--source", "secret/airtrust-system/local-ca", "--selector", SELECTOR,
    "--lease-namespace", "airtrust-system", "--resync", "5",
)  # fmt: skip


class Replica:
    """``airtrust sync`` as a process: ``args`` plus its own metrics port, a 3 s Lease
    and ``name`` as its identity; with ``kubeconfig`` (default: the admin's)."""

    def __init__(
        self,
        cluster: KubeCluster,
        name: str,
        log: Path,
        args: tuple[str, ...] = ARGS,
        kubeconfig: Path | None = None,
    ) -> None:
        self.port = free_port()
        self.log = log
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "airtrust", "sync",
                "--kubeconfig", str(kubeconfig or cluster.kubeconfig), *args,
                "--metrics-addr", f"127.0.0.1:{self.port}",
                "--lease-duration", "3", "--identity", name,
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(log, "wb"),
        )  # fmt: skip

    def metrics(self) -> dict[str, float]:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2).read()
        except OSError:
            return {}
        out = {}
        for line in text.decode().splitlines():
            if line and not line.startswith("#"):
                key, value = line.split()
                out[key] = float(value)
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def bundle_in(cluster: KubeCluster, namespace: str) -> bytes | None:
    proc = cluster.kubectl(
        "-n", namespace, "get", "secret", "runai-ca-cert", "-o", "json", check=False
    )
    if proc.returncode != 0:
        return None
    return base64.b64decode(yaml.safe_load(proc.stdout)["data"]["runai-ca.pem"])


def lease(cluster: KubeCluster) -> dict[str, Any]:
    """The Lease's spec as the apiserver stores it ({} while there is none)."""
    proc = cluster.kubectl(*LEASE, check=False)
    if proc.returncode != 0:
        return {}
    spec: dict[str, Any] = json.loads(proc.stdout)["spec"]
    return spec


def micro_time(value: object) -> dt.datetime:
    return dt.datetime.fromisoformat(str(value))


def set_source(cluster: KubeCluster, pem: bytes) -> None:
    manifest = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": "local-ca", "namespace": "airtrust-system"},
        "data": {"runai-ca.pem": base64.b64encode(pem).decode()},
    }
    cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        "-",
        stdin=yaml.safe_dump(manifest).encode(),
    )


@pytest.fixture
def pems(tmp_path: Path) -> tuple[bytes, bytes]:
    for name in ("one", "two"):
        assert run_cli("ca", "create", "--out", tmp_path / name, "--name", f"CA {name}").code == 0
    return (tmp_path / "one" / "ca.crt").read_bytes(), (tmp_path / "two" / "ca.crt").read_bytes()


@pytest.fixture
def replicas(
    request: pytest.FixtureRequest, tmp_path: Path, pems: tuple[bytes, bytes]
) -> Iterator[list[Replica]]:
    """One replica running on the test's cluster: its own when it asks for one (it
    stops the apiserver), else the module's shared one, tidied after it."""
    own = "cluster" in request.fixturenames
    cluster: KubeCluster = request.getfixturevalue("cluster" if own else "tidy_cluster")
    cluster.kubectl("create", "namespace", "airtrust-system")
    cluster.kubectl("create", "namespace", "runai")
    set_source(cluster, pems[0])
    running = [Replica(cluster, "replica-a", tmp_path / "a.log")]
    try:
        yield running
    finally:
        for r in running:
            r.stop()


def test_converges_restores_validates_and_reports(
    tidy_cluster: KubeCluster, replicas: list[Replica], pems: tuple[bytes, bytes]
) -> None:
    one, two = pems
    wait_for("runai gets the bundle", lambda: bundle_in(tidy_cluster, "runai") == one)
    tidy_cluster.kubectl("create", "namespace", "team-a")
    tidy_cluster.kubectl("label", "namespace", "team-a", SELECTOR)
    wait_for(
        "a new labelled namespace gets the secret", lambda: bundle_in(tidy_cluster, "team-a") == one
    )
    tidy_cluster.kubectl("-n", "team-a", "delete", "secret", "runai-ca-cert")
    wait_for("a deleted secret is restored", lambda: bundle_in(tidy_cluster, "team-a") == one)
    tidy_cluster.kubectl(
        "-n",
        "runai",
        "patch",
        "secret",
        "runai-ca-cert",
        "--type=merge",
        "-p",
        '{"data": {"runai-ca.pem": "' + base64.b64encode(two).decode() + '"}}',
    )
    wait_for("an edited secret is restored", lambda: bundle_in(tidy_cluster, "runai") == one)
    set_source(tidy_cluster, two)
    wait_for(
        "a changed source reaches every target",
        lambda: (
            bundle_in(tidy_cluster, "runai") == two and bundle_in(tidy_cluster, "team-a") == two
        ),
    )
    set_source(tidy_cluster, two + (DATA / "bad-input" / "key-in-bundle.pem").read_bytes())
    wait_for(
        "an invalid source is reported",
        lambda: replicas[0].metrics().get("airtrust_source_valid") == 0.0,
    )
    assert bundle_in(tidy_cluster, "runai") == two, "the last good bundle must stay"
    assert "private-key-in-bundle" in replicas[0].log.read_text()
    metrics = replicas[0].metrics()
    assert metrics["airtrust_ca_expiry_seconds"] > 300 * 86400
    assert metrics["airtrust_reconcile_total"] > 3 and metrics["airtrust_leader"] == 1
    assert lease(tidy_cluster)["holderIdentity"] == "replica-a"
    health = urllib.request.urlopen(f"http://127.0.0.1:{replicas[0].port}/healthz", timeout=2)
    assert health.status == 200


def test_between_full_passes_each_event_converges_its_namespace_alone(
    tidy_cluster: KubeCluster, tmp_path: Path, pems: tuple[bytes, bytes]
) -> None:
    """With no full pass due for an hour, the watches alone carry a new labelled
    namespace, a deleted Secret and a Secret edited by kubectl to their namespace; and
    the controller's own writes, seen again by its Secret watch, rewrite nothing (the
    apiserver's resourceVersion of a converged Secret stays as it was while other
    namespaces are written)."""
    cluster = tidy_cluster
    cluster.kubectl("create", "namespace", "airtrust-system")
    set_source(cluster, pems[0])
    cluster.kubectl("create", "namespace", "team-e")
    cluster.kubectl("label", "namespace", "team-e", SELECTOR)
    args = (*ARGS[:-1], "3600")  # --resync 3600
    replica = Replica(cluster, "replica-e", tmp_path / "e.log", args=args)
    try:
        wait_for("the first pass", lambda: bundle_in(cluster, "team-e") == pems[0])

        def version(namespace: str) -> str:
            secret = cluster.get("secret", "-n", namespace, "runai-ca-cert")
            return str(secret["metadata"]["resourceVersion"])

        cluster.kubectl("create", "namespace", "team-f")
        cluster.kubectl("label", "namespace", "team-f", SELECTOR)
        wait_for("a namespace labelled later", lambda: bundle_in(cluster, "team-f") == pems[0])
        cluster.kubectl("-n", "team-f", "delete", "secret", "runai-ca-cert")
        wait_for("a deleted Secret restored", lambda: bundle_in(cluster, "team-f") == pems[0])
        other = base64.b64encode(pems[1]).decode()
        cluster.kubectl(
            "-n", "team-f", "patch", "secret", "runai-ca-cert", "--type=merge",
            "-p", '{"data": {"runai-ca.pem": "' + other + '"}}',
        )  # fmt: skip
        wait_for("an edited Secret restored", lambda: bundle_in(cluster, "team-f") == pems[0])
        settled = version("team-e"), version("team-f")
        cluster.kubectl("create", "namespace", "team-g")
        cluster.kubectl("label", "namespace", "team-g", SELECTOR)
        wait_for("one more namespace", lambda: bundle_in(cluster, "team-g") == pems[0])
        assert (version("team-e"), version("team-f")) == settled
        assert replica.proc.poll() is None
    finally:
        replica.stop()


def test_two_replicas_one_leader_and_failover(
    tidy_cluster: KubeCluster, replicas: list[Replica], tmp_path: Path, pems: tuple[bytes, bytes]
) -> None:
    """The Lease has one holder while two replicas run, the holder keeps renewing it,
    and after the holder stops the other replica takes it (one more transition)."""
    wait_for(
        "replica-a holds the Lease",
        lambda: lease(tidy_cluster).get("holderIdentity") == "replica-a",
    )
    first = lease(tidy_cluster)
    second = Replica(tidy_cluster, "replica-b", tmp_path / "b.log")
    replicas.append(second)
    holders: list[object] = []

    def contested() -> bool:
        """Two passes of replica-b's loop (it asked for the Lease at least twice) and a
        renewal by the holder since replica-b started."""
        now = lease(tidy_cluster)
        holders.append(now.get("holderIdentity"))
        return second.metrics().get("airtrust_reconcile_total", 0) >= 2 and micro_time(
            now["renewTime"]
        ) > micro_time(first["renewTime"])

    wait_for("replica-b refused twice while replica-a renews", contested)
    held = lease(tidy_cluster)
    assert set(holders) == {"replica-a"}, holders
    assert held["acquireTime"] == first["acquireTime"]
    assert held.get("leaseTransitions", 0) == first.get("leaseTransitions", 0)
    # What the replicas report agrees with the Lease.
    assert second.metrics()["airtrust_leader"] == 0.0
    assert replicas[0].metrics()["airtrust_leader"] == 1.0
    replicas[0].stop()
    holders.clear()

    def taken_over() -> bool:
        holders.append(lease(tidy_cluster).get("holderIdentity"))
        return holders[-1] == "replica-b"

    wait_for("replica-b holds the Lease after replica-a stopped", taken_over)
    assert set(holders) <= {"replica-a", "replica-b"}, holders
    taken = lease(tidy_cluster)
    assert taken["leaseTransitions"] == first.get("leaseTransitions", 0) + 1
    assert micro_time(taken["acquireTime"]) > micro_time(held["renewTime"])
    wait_for(
        "replica-b reports itself leader", lambda: second.metrics().get("airtrust_leader") == 1.0
    )
    tidy_cluster.kubectl("create", "namespace", "team-b")
    tidy_cluster.kubectl("label", "namespace", "team-b", SELECTOR)
    wait_for("the new leader writes", lambda: bundle_in(tidy_cluster, "team-b") == pems[0])
    assert lease(tidy_cluster)["holderIdentity"] == "replica-b"


def test_apiserver_restart_under_the_controller(
    cluster: KubeCluster, replicas: list[Replica], pems: tuple[bytes, bytes]
) -> None:
    wait_for("initial convergence", lambda: bundle_in(cluster, "runai") == pems[0])
    run_script("stop-apiserver", cluster.folder)
    wait_for(
        "the controller notices the apiserver is gone",
        lambda: replicas[0].metrics().get("airtrust_reconcile_errors_total", 0) >= 1,
        timeout=30,
    )
    run_script("start-apiserver", cluster.folder)
    cluster.kubectl("create", "namespace", "after-restart")
    cluster.kubectl("label", "namespace", "after-restart", SELECTOR)
    set_source(cluster, pems[1])
    wait_for(
        "converges after the restart",
        lambda: (
            bundle_in(cluster, "after-restart") == pems[1]
            and bundle_in(cluster, "runai") == pems[1]
        ),
        timeout=40,
    )
    assert replicas[0].proc.poll() is None, "the controller died with the apiserver"
    assert replicas[0].metrics()["airtrust_reconcile_errors_total"] >= 1


def test_render_controller_manifests_are_accepted(
    cluster: KubeCluster, tmp_path: Path, pems: tuple[bytes, bytes]
) -> None:
    """The rendered objects are accepted, and the rendered RBAC is what the rendered
    arguments need: the controller run with them, as its ServiceAccount, takes the
    Lease and converges; the apiserver refuses that account what it must not do."""
    out = tmp_path / "controller"
    result = run_cli(
        "render",
        "--controller",
        "--image",
        "registry.local/airtrust:0.1",
        "--selector",
        SELECTOR,
        "--out",
        out,
    )
    assert result.code == 0, result.err
    cluster.kubectl("create", "namespace", "airtrust-system")
    applied = cluster.kubectl("apply", "--server-side", "-k", out)
    assert b"deployment.apps/airtrust-sync" in applied.stdout
    role = cluster.get("clusterrole", "airtrust-sync")
    verbs = {v for rule in role["rules"] for v in rule["verbs"]}
    assert "delete" not in verbs and "*" not in verbs
    deployment = cluster.get("deployment", "airtrust-sync", "-n", "airtrust-system")
    assert (
        deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        == "registry.local/airtrust:0.1"
    )
    sa = "system:serviceaccount:airtrust-system:airtrust-sync"
    cluster.kubectl("create", "namespace", "runai")
    cluster.kubectl("create", "namespace", "team-a")
    cluster.kubectl("label", "namespace", "team-a", SELECTOR)

    def allowed(*args: str) -> str:
        can = cluster.kubectl("auth", "can-i", *args, "--as", sa, check=False)
        return can.stdout.decode().strip()

    assert allowed("delete", "secrets", "-n", "team-a") == "no"
    assert allowed("update", "leases", "-n", "runai") == "no"
    assert allowed("create", "namespaces") == "no"
    # The Deployment's own arguments, with the account's token for --in-cluster and a
    # free metrics port (the container's 0.0.0.0:8080 is the host's here).
    args = list(deployment["spec"]["template"]["spec"]["containers"][0]["args"])
    assert args[0] == "sync" and "--in-cluster" in args, args
    at = args.index("--metrics-addr")
    del args[at : at + 2]
    args = [a for a in args[1:] if a != "--in-cluster"]
    set_source(cluster, pems[0])
    token = cluster.service_account_kubeconfig("airtrust-system", "airtrust-sync")
    controller = Replica(cluster, "in-cluster", tmp_path / "sa.log", tuple(args), token)
    try:
        wait_for(
            "the controller, as its ServiceAccount, holds the Lease and converges",
            lambda: (
                lease(cluster).get("holderIdentity") == "in-cluster"
                and bundle_in(cluster, "runai") == pems[0]
                and bundle_in(cluster, "team-a") == pems[0]
            ),
        )
    finally:
        controller.stop()
    log = controller.log.read_text()
    assert "Forbidden" not in log and "403" not in log, log[-2000:]


def test_sync_follows_the_config_roles_and_version(
    tidy_cluster: KubeCluster, tmp_path: Path, pems: tuple[bytes, bytes]
) -> None:
    """A control-plane-only config keeps runai-backend; an OpenShift tidy_cluster config keeps
    runai (with the configured version's labels) and openshift-monitoring."""
    for ns in ("airtrust-system", "runai-backend", "runai", "openshift-monitoring"):
        tidy_cluster.kubectl("create", "namespace", ns)
    set_source(tidy_cluster, pems[0])
    (tmp_path / "ca.pem").write_bytes(pems[0])
    base = {
        "domain": "runai.example.test",
        "ca": {"bundle": [str(tmp_path / "ca.pem")]},
        "kubeconfig": str(tidy_cluster.kubeconfig),
    }
    control_plane = tmp_path / "cp.yaml"
    control_plane.write_text(yaml.safe_dump({**base, "control_plane": {"context": "admin"}}))
    openshift = tmp_path / "ocp.yaml"
    openshift.write_text(
        yaml.safe_dump(
            {**base, "version": "2.18", "clusters": [{"context": "admin", "openshift": True}]}
        )
    )
    source = ["--source", "secret/airtrust-system/local-ca"]
    once = run_cli("sync", "-c", control_plane, *source, "--once")
    assert once.code == 0, once.err
    assert bundle_in(tidy_cluster, "runai-backend") == pems[0]
    assert (
        bundle_in(tidy_cluster, "runai") is None
        and bundle_in(tidy_cluster, "openshift-monitoring") is None
    )
    once = run_cli("sync", "-c", openshift, *source, "--once")
    assert once.code == 0, once.err
    assert bundle_in(tidy_cluster, "runai") == pems[0]
    assert bundle_in(tidy_cluster, "openshift-monitoring") == pems[0]
    labels = tidy_cluster.get("secret", "runai-ca-cert", "-n", "runai")["metadata"]["labels"]
    assert labels["run.ai/cluster-wide"] == "true" and labels["run.ai/name"] == "runai-ca-cert"
    monitoring = tidy_cluster.get("secret", "runai-ca-cert", "-n", "openshift-monitoring")
    assert "run.ai/name" not in monitoring["metadata"]["labels"]
    # The in-tidy_cluster controller gets the same scope as arguments.
    out = tmp_path / "controller"
    rendered = run_cli(
        "render",
        "--controller",
        "--image",
        "registry.local/airtrust:0.1",
        "-c",
        openshift,
        "--out",
        out,
    )
    assert rendered.code == 0, rendered.err
    deployment = next(yaml.safe_load(p.read_text()) for p in out.glob("*-deployment.yaml"))
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    joined = " ".join(args)
    assert "--role cluster" in joined and "--platform-version 2.18" in joined
    assert "--openshift true" in joined
    bad = run_cli(
        "sync", *source, "--role", "gpu", "--once", "--kubeconfig", tidy_cluster.kubeconfig
    )
    assert bad.code == 2 and "'--role': 'gpu' is not one of 'control-plane', 'cluster'" in bad.err
