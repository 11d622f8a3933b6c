"""The test node as test modules use it: a whole cluster on a pod network of its own.

`scripts/testcluster up --node` runs etcd, the apiserver, controller-manager,
scheduler, a kubelet with Debian's containerd and runc, kube-proxy and a registry in a
network namespace it creates (see scripts/testnode.sh). Pods get addresses on a CNI
bridge and reach Services through kube-proxy, as in a real cluster; `kubectl logs`,
`exec` and `port-forward` go through the kubelet. The test process stays on the
host's 127.0.0.1: the apiserver and the registry are relayed out, and a server a test
starts is relayed in with `Node.exposed` (pods reach it at the node's address, by the
name its certificate holds through ``hostAliases``).
"""

from __future__ import annotations

import contextlib
import html.parser
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, run_cli
from tests.integration.conftest import wait_for
from tests.integration.kube import KubeCluster, started_cluster
from tests.integration.registry import Registry, debian_rootfs, push_tar, started_registry

HOST = "runai.example.test"


@dataclass
class Node:
    cluster: KubeCluster
    folder: Path
    registry: str
    registry_ca: Path
    pki: Path  # the local CA (quickstart) whose certificates the TLS servers serve

    @property
    def ip(self) -> str:
        """The node's address: where pods reach what `exposed` relays in."""
        return (self.folder / "node-ip").read_text().strip()

    @property
    def netns(self) -> str:
        return (self.folder / "netns").read_text().strip()

    def ref(self, path: str) -> str:
        return f"{self.registry}/{path}"

    @contextlib.contextmanager
    def exposed(self, *ports: int) -> Iterator[str]:
        """The host's 127.0.0.1:PORT relayed into the node's namespace at NODE-IP:PORT for
        as long as the block runs; yields the node address."""
        proc = subprocess.run(
            [str(ROOT / "scripts" / "testcluster"), "expose", str(self.folder), *map(str, ports)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            pytest.fail(f"testcluster expose failed: {proc.stderr}")
        pid = int(proc.stdout.strip())
        try:
            yield self.ip
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    @contextlib.contextmanager
    def port_forward(self, ns: str, target: str, port: str | int) -> Iterator[int]:
        """``kubectl port-forward`` (through the apiserver and the kubelet) to ``target``'s
        ``port``; yields the local port kubectl picked."""
        from tests.integration.kube import kubectl_path

        proc = subprocess.Popen(
            [str(kubectl_path()), "--kubeconfig", str(self.cluster.kubeconfig), "-n", ns,
             "port-forward", target, f":{port}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # "Forwarding from 127.0.0.1:PORT -> REMOTE"
            if "Forwarding from 127.0.0.1:" not in line:
                proc.kill()
                said = proc.stderr.read() if proc.stderr else ""
                pytest.fail(f"kubectl port-forward {target}: {line}{said}")
            yield int(line.split("127.0.0.1:")[1].split()[0])
        finally:
            proc.terminate()
            proc.wait(10)

    def in_netns(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """A command in the node's network namespace (what the node itself sees)."""
        return subprocess.run(
            ["nsenter", f"--net=/run/netns/{self.netns}", *args],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def run_pod(self, pod: dict[str, Any], timeout: float = 180) -> tuple[str, str]:
        """Create ``pod`` and wait until it ends: (phase, its ``main`` container's log, read
        through the kubelet with kubectl logs)."""
        self.cluster.kubectl("create", "-f", "-", stdin=json.dumps(pod).encode())
        return self.ended(pod["metadata"]["namespace"], pod["metadata"]["name"], timeout)

    def ended(self, ns: str, name: str, timeout: float = 180) -> tuple[str, str]:
        """Wait until the pod ``ns/name`` (created by the caller) ends: as `run_pod`."""
        phase = ""

        def ended() -> bool:
            nonlocal phase
            phase = self.cluster.get("pod", "-n", ns, name)["status"].get("phase", "")
            return phase in ("Succeeded", "Failed")

        wait_for(f"pod {ns}/{name} to run to completion", ended, timeout=timeout)
        return phase, self.logs(ns, f"pod/{name}", "main")

    def logs(self, ns: str, target: str, container: str | None = None) -> str:
        args = ["logs", "-n", ns, target, *(["-c", container] if container else [])]
        return self.cluster.kubectl(*args, check=False).stdout.decode(errors="replace")

    def wait_rollout(self, ns: str, deployment: str, timeout: int = 240) -> None:
        """Every replica Ready: its readiness probe passed on the pod network."""
        proc = self.cluster.kubectl(
            "-n", ns, "rollout", "status", f"deployment/{deployment}", f"--timeout={timeout}s",
            check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            described = self.cluster.kubectl("-n", ns, "describe", "pods", check=False).stdout
            pytest.fail(
                f"deployment {ns}/{deployment} not ready: {proc.stderr.decode()}\n"
                f"{described.decode()[-4000:]}"
            )


@contextlib.contextmanager
def started_node(folder: Path, request: pytest.FixtureRequest | None = None) -> Iterator[Node]:
    """A node cluster for a module; when the module is done it is brought down and must
    leave nothing behind after the pods it ran (checked here, on this very node).

    Two timings go to the test output (`tell`): `up --node` to node Ready, and a first
    pod (the pause image every sandbox needs anyway) from create to Running with a pod
    IP: what a user waits for before a new node does any work."""
    pki = folder / "pki"
    result = run_cli("quickstart", "--domain", HOST, "--ip", "127.0.0.1", "--out", pki)
    assert result.code == 0, result.err
    d = folder / "cluster"
    host_rules = _host_iptables()
    started = time.monotonic()
    with started_cluster(d, node=True) as cluster:
        ready = time.monotonic() - started
        node = Node(cluster, d, (d / "registry").read_text().strip(), d / "registry-ca.crt", pki)
        netns, cgroup_root = node.netns, (d / "node" / "cgroup-root").read_text().strip()
        netns_id = _inode(Path("/run/netns") / netns)
        first = _first_pod(node)
        tell(
            request,
            f"node Ready after {ready:.1f} s (`testcluster up --node`); first pod Running "
            f"with IP after {first:.1f} s (kubectl create to Running with status.podIP)",
        )
        yield node
    _assert_nothing_left(d, netns, netns_id, cgroup_root, host_rules)


def tell(request: pytest.FixtureRequest | None, text: str) -> None:
    """``text`` in the run's output, passing or not: around pytest's capture, to the
    process's stderr, which xdist workers share with the controller (so CI shows it).
    Without a request: a plain print (shown with ``-s``)."""
    capture = request.config.pluginmanager.getplugin("capturemanager") if request else None
    if capture is None:
        print(f"\n{text}")
        return
    with capture.global_and_fixture_disabled():
        sys.stderr.write(f"\n{text}\n")
        sys.stderr.flush()


def _first_pod(node: Node) -> float:
    """Seconds from the first create of a pause pod to Running with ``status.podIP``.
    Created until admitted: the controller-manager makes the default ServiceAccount a
    moment after the apiserver is up."""
    name, manifest = "first-pod", pod("first-pod", "default", node.ref("pause:3.10"))
    manifest["spec"]["terminationGracePeriodSeconds"] = 0
    body = json.dumps(manifest).encode()
    started = time.monotonic()

    def created() -> bool:
        made = node.cluster.kubectl("create", "-f", "-", stdin=body, check=False)
        return made.returncode == 0

    wait_for("the first pod admitted (the default ServiceAccount made)", created, timeout=60)

    def running() -> bool:
        status = node.cluster.get("pod", "-n", "default", name).get("status") or {}
        return status.get("phase") == "Running" and bool(status.get("podIP"))

    wait_for("the first pod Running with a pod IP", running, timeout=120)
    took = time.monotonic() - started
    node.cluster.kubectl("-n", "default", "delete", "pod", name, "--wait=false")
    return took


def _inode(path: Path) -> tuple[int, int]:
    found = path.stat()  # follows the link: the namespace itself (nsfs), not the name
    return found.st_dev, found.st_ino


def _host_iptables() -> str:
    proc = subprocess.run(["iptables-save"], capture_output=True, text=True, check=False)
    # The counters change with any traffic; the rules are what must stay.
    return "\n".join(line for line in proc.stdout.splitlines() if line[:1] not in "#:")


def _assert_nothing_left(
    folder: Path, netns: str, netns_id: tuple[int, int], cgroup_root: str, host_rules: str
) -> None:
    mounts = [m for m in Path("/proc/mounts").read_text().splitlines() if str(folder) in m]
    assert not mounts, f"mounts left by `testcluster down`: {mounts}"
    netns_list = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert netns not in netns_list, f"network namespace {netns} left: {netns_list}"
    # The name is gone; the namespace itself lives on while any process is in it.
    inside = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if _inode(proc / "ns" / "net") == netns_id and not _zombie(proc):
                    inside.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
    assert not inside, f"processes left in the node's network namespace: {inside}"
    leftovers = [p for p in Path("/sys/fs/cgroup").glob(f"*{cgroup_root}") if p.exists()]
    assert not leftovers, f"cgroups left: {leftovers}"
    ps = subprocess.run(["ps", "-eo", "stat,args"], capture_output=True, text=True, check=True)
    # Every process `up` starts names DIR, or (the relays, scripts/nsrelay) the namespace.
    alive = [
        line for line in ps.stdout.splitlines()
        if (str(folder) in line or f"/run/netns/{netns}" in line)
        and not line.lstrip().startswith("Z")
    ]  # fmt: skip
    assert not alive, f"processes left: {alive}"
    assert _host_iptables() == host_rules, "the host's iptables rules changed"


def _zombie(proc: Path) -> bool:
    return (proc / "stat").read_text().rpartition(")")[2].split()[0] == "Z"


class _Page(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.points: list[dict[str, str]] = []
        self.evidence = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        classes = found.get("class", "").split()
        if "trust-point" in classes:
            self.points.append({k[5:]: v for k, v in found.items() if k.startswith("data-")})
        self.evidence = "evidence-inline" in classes and bool(self.points)

    def handle_endtag(self, tag: str) -> None:
        self.evidence = False

    def handle_data(self, data: str) -> None:
        if self.evidence:
            self.points[-1]["evidence"] = self.points[-1].get("evidence", "") + data


def trust_points(page: Path) -> list[dict[str, str]]:
    """The trust points of a `doctor --html` page as a reader sees them: each one's
    check, target, context and status (its ``data-`` attributes) and its evidence."""
    parser = _Page()
    parser.feed(page.read_text())
    return parser.points


def pod(
    name: str,
    ns: str,
    image: str,
    *,
    args: list[str] | None = None,
    command: list[str] | None = None,
    container: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A pod on the pod network that runs once; its container is named ``main``."""
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
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "containers": [main],
            **spec,
        },
    }


def host_aliases(node: Node, *names: str) -> list[dict[str, Any]]:
    """What pods need to reach an exposed server by the name its certificate holds (the
    test cluster has no DNS)."""
    return [{"ip": node.ip, "hostnames": list(names or (HOST,))}]


def push_debian(node: Node) -> str:
    ref = node.ref("library/debian:bookworm")
    push_tar(ref, debian_rootfs())
    return ref


def build_airtrust_image(node: Node, base: str, wheels: Path, tag: str = "test") -> str:
    """The airtrust image as an admin builds it across the gap: the offline bundle's
    wheels on the Debian base, no Docker."""
    ref = node.ref(f"airtrust/controller:{tag}")
    built = run_cli(
        "image", "build-controller", "--base", base, "--to", ref,
        "--wheels", wheels, "--registry-ca", node.registry_ca,
    )  # fmt: skip
    assert built.code == 0, built.err
    return ref


X509 = "x509: certificate signed by unknown authority"


@dataclass
class Untrusted:
    """A registry whose certificate comes from a CA the node's runtime does not know."""

    registry: Registry
    ca: Path  # that CA's certificate
    name: str  # HOST:PORT as the node reaches it
    image: str
    node_ip: str = ""

    def reissue(self, ca_dir: Path) -> None:
        """Serve a certificate from ``ca_dir`` from now on, on the same HOST:PORT (the
        registry restarted on its storage), as an admin does after a CA rotation."""
        tls = self.registry.folder.parent / "island-tls"
        issued = run_cli(
            "cert", "issue", "--ca-dir", ca_dir, "--domain", "localhost", "--ip", "127.0.0.1",
            "--ip", self.node_ip, "--out", tls, "--force",
        )  # fmt: skip
        assert issued.code == 0, issued.err
        self.registry.stop()
        self.registry.start()
        self.ca = ca_dir / "ca.crt"


@contextlib.contextmanager
def island_registry(node: Node, ca_dir: Path, folder: Path) -> Iterator[Untrusted]:
    """A second real registry serving a certificate from ``ca_dir`` (an airtrust CA
    folder), holding library/debian:bookworm, reached by the node at its own address:
    the registry an admin would bring up with the local CA that no node trusts yet."""
    issued = run_cli(
        "cert", "issue", "--ca-dir", ca_dir, "--domain", "localhost",
        "--ip", "127.0.0.1", "--ip", node.ip, "--out", folder / "island-tls",
    )  # fmt: skip
    assert issued.code == 0, issued.err
    tls = (folder / "island-tls" / "tls.crt", folder / "island-tls" / "tls.key")
    with started_registry(folder / "island-registry", tls=tls) as registry:
        port = registry.host.rsplit(":", 1)[1]
        push_tar(
            registry.ref("library/debian:bookworm"),
            debian_rootfs(),
            env={"SSL_CERT_FILE": str(ca_dir / "ca.crt")},
        )
        with node.exposed(int(port)):
            name = f"{node.ip}:{port}"
            yield Untrusted(
                registry, ca_dir / "ca.crt", name, f"{name}/library/debian:bookworm", node.ip
            )


def pull_events(node: Node, ns: str, name: str) -> str:
    events = node.cluster.get("events", "-n", ns, "--field-selector", f"involvedObject.name={name}")
    return "\n".join(str(e.get("message", "")) for e in events["items"])


def pulls(
    node: Node, ns: str, name: str, image: str, *, tolerations: list[dict[str, str]] | None = None
) -> tuple[bool, str]:
    """Create a pod of ``image`` (always pulled) and wait until containerd decided: (ran,
    the kubelet's events for it)."""
    spec = pod(name, ns, image, command=["true"])
    if tolerations:
        spec["spec"]["tolerations"] = tolerations
    spec["spec"]["containers"][0]["imagePullPolicy"] = "Always"
    node.cluster.kubectl("create", "-f", "-", stdin=json.dumps(spec).encode())
    outcome = ""

    def decided() -> bool:
        nonlocal outcome
        status = node.cluster.get("pod", "-n", ns, name)["status"]
        if status.get("phase") in ("Succeeded", "Running"):
            outcome = "ran"
            return True
        waiting = [
            (s.get("state") or {}).get("waiting", {}).get("reason", "")
            for s in status.get("containerStatuses") or []
        ]
        if any(r in ("ErrImagePull", "ImagePullBackOff") for r in waiting):
            outcome = "refused"
            return True
        return False

    wait_for(f"containerd to pull or refuse {image}", decided, timeout=120)
    return outcome == "ran", pull_events(node, ns, name)
