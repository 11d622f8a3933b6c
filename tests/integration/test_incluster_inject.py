"""The injection webhook in the cluster, exactly as `airtrust render --inject --service`
writes it, on a real node (tests/integration/node.py): two replicas behind their
Service on the pod network, called by the apiserver through kube-proxy, their
serving certificate from `airtrust apply` (``inject_namespace``).

Nothing is overlaid: no hostNetwork, no env, no patched manifest. Trust is judged by
curl in injected and uninjected pods against a TLS server the local CA signed;
admission by the apiserver's own answers (kubectl's text, the stored pod); the
disruption budget by the disruption controller's status; a slow webhook by freezing
the real container processes (SIGSTOP, found by their pod's cgroup on this node).
The rotation test rotates to a new CA and back, so the module's CA is the same for
every test in any order.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from airtrust.errors import AirtrustError
from airtrust.kube.api import KubeAPI
from tests.conftest import run_cli
from tests.integration.conftest import UNTRUSTED, openssl_server, wait_for
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

pytestmark = pytest.mark.integration

NS = "airtrust-system"
NAME = "airtrust-inject"
INJECTED = "airtrust.io/injected"
LABEL = "airtrust.io/inject=enabled"
BUNDLE = "/etc/airtrust/ca/ca-bundle.pem"


@pytest.fixture(scope="module")
def node(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Node]:
    with started_node(tmp_path_factory.mktemp("inject-node"), request) as n:
        yield n


@pytest.fixture(scope="module")
def debian_image(node: Node) -> str:
    return push_debian(node)


@pytest.fixture(scope="module")
def wheels(offline_bundle: Path) -> Path:
    """The session's offline bundle's wheels (read-only)."""
    return offline_bundle / "wheels"


@dataclass
class Webhook:
    node: Node
    folder: Path
    config: Path
    image: str
    api: KubeAPI
    rendered: dict[str, Path] = field(default_factory=dict)

    def kubectl(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        return self.node.cluster.kubectl(*args, check=check)

    def get(self, *args: str) -> Any:
        return self.node.cluster.get(*args)

    def policy(self, policy: str) -> None:
        """The folder rendered with ``--failure-policy policy``, applied as is."""
        if policy not in self.rendered:
            out = self.folder / f"rendered-{policy}"
            result = run_cli(
                "render", "--inject", "--service", f"{NS}/{NAME}", "--image", self.image,
                "--ca", self.node.pki / "ca-bundle.pem", "--failure-policy", policy,
                "--out", out,
            )  # fmt: skip
            assert result.code == 0, result.err
            self.rendered[policy] = out
        # The webhook owns caBundle once it has patched it (a rotation): applying the
        # rendered folder again takes the field back, as --force-conflicts says.
        self.kubectl("apply", "--server-side", "--force-conflicts", "-k", self.rendered[policy])
        config = self.get("mutatingwebhookconfiguration", NAME)
        assert config["webhooks"][0]["failurePolicy"] == policy

    def pods(self, *, terminating: bool = False) -> list[dict[str, Any]]:
        """The webhook's pods; with ``terminating``, also those deleted but still
        draining (they answer through the Service until their --drain ends)."""
        items = self.get("pods", "-n", NS, "-l", f"app.kubernetes.io/name={NAME}")["items"]
        return [p for p in items if terminating or not p["metadata"].get("deletionTimestamp")]

    def ready(self) -> None:
        self.node.wait_rollout(NS, NAME, timeout=120)
        wait_for("both webhook pods Ready", lambda: len(self.pods()) == 2 and all(
            _is_ready(p) for p in self.pods()), timeout=120)  # fmt: skip

    def namespace(self, name: str, *, in_scope: bool = True) -> str:
        self.kubectl("create", "namespace", name)
        if in_scope:
            self.kubectl("label", "namespace", name, LABEL)
            wait_for(
                f"the bundle ConfigMap in {name}",
                lambda: self.node.cluster.exists("configmap", "airtrust-ca-bundle", name),
                timeout=60,
            )
        return name

    def create(self, manifest: dict[str, Any]) -> subprocess.CompletedProcess[bytes]:
        return self.node.cluster.kubectl(
            "create", "-f", "-", stdin=json.dumps(manifest).encode(), check=False
        )

    def stored(self, ns: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.get("pod", "-n", ns, name)
        return found


def _is_ready(p: dict[str, Any]) -> bool:
    conditions = (p.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _injected(p: dict[str, Any]) -> bool:
    return INJECTED in (p["metadata"].get("annotations") or {})


def _restarts(webhook: Webhook) -> dict[str, tuple[int, Any]]:
    """Each webhook pod's container restarts (a liveness probe that failed kills it), with
    how the last one ended."""
    return {
        p["metadata"]["name"]: (s.get("restartCount", 0), s.get("lastState"))
        for p in webhook.pods()
        for s in (p.get("status") or {}).get("containerStatuses", [])
    }


def held(name: str, ns: str, image: str) -> dict[str, Any]:
    """A pod that is admitted and stored but never scheduled (a scheduling gate): many
    can be created on two cores, and admission is all that is judged."""
    return pod(name, ns, image, command=["true"], schedulingGates=[{"name": "airtrust.test/hold"}])


@pytest.fixture(scope="module")
def webhook(
    node: Node, debian_image: str, wheels: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Webhook]:
    """`airtrust apply` with ``inject_namespace`` (the serving certificate and the CA secret
    the webhook mounts), then the rendered folder applied as is; both replicas Ready."""
    folder = tmp_path_factory.mktemp("inject")
    image = build_airtrust_image(node, debian_image, wheels, tag="inject")
    pki = node.pki
    config = folder / "airtrust.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "domain": HOST,
                "version": "2.20",
                "ca": {"bundle": [str(pki / "ca-bundle.pem")]},
                "tls": {"cert": str(pki / "tls.crt"), "key": str(pki / "tls.key")},
                "issue_from": str(pki),
                "kubeconfig": str(node.cluster.kubeconfig),
                "control_plane": {"context": "admin"},
                "clusters": [{"context": "admin", "inject_namespace": NS}],
            }
        )
    )
    applied = run_cli("apply", "-c", config)
    assert applied.code == 0, applied.out + applied.err
    api = KubeAPI.connect("admin", kubeconfig=node.cluster.kubeconfig)
    hook = Webhook(node, folder, config, image, api)
    started = time.monotonic()
    hook.policy("Ignore")
    hook.ready()
    print(f"\nrendered webhook Ready {time.monotonic() - started:.1f} s after kubectl apply")
    try:
        yield hook
        # Whatever the module's tests did (frozen replicas, rotations, restarts under
        # Fail), no liveness probe ever killed a webhook container.
        restarts = _restarts(hook)
        assert restarts and all(n == 0 for n, _ in restarts.values()), restarts
    finally:
        api.close()


def test_the_rendered_webhook_runs_as_written_and_injected_pods_trust_the_ca(
    webhook: Webhook, debian_image: str, tmp_path: Path
) -> None:
    """Two replicas Ready (probes on the named https port), called through the Service:
    a pod in a labelled namespace comes back injected, and curl in it (and in its init
    container, beside a ConfigMap's envFrom) trusts the local CA; the ConfigMap's
    REQUESTS_CA_BUNDLE is overridden by the injected env, as kubectl's warning said; the
    same pod in an unlabelled namespace is untouched and curl refuses the server in its
    own words. `kubectl exec` into each replica (through the kubelet on the pod network)
    shows the serving certificate `apply` issued, mounted; neither container restarted."""
    deployment = webhook.get("deployment", "-n", NS, NAME)
    assert deployment["status"]["readyReplicas"] == 2
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == "https", container[probe]
    assert "hostNetwork" not in deployment["spec"]["template"]["spec"]
    service = webhook.get("service", "-n", NS, NAME)
    assert service["spec"]["clusterIP"].startswith("10.0.0.")
    config = webhook.get("mutatingwebhookconfiguration", NAME)["webhooks"][0]["clientConfig"]
    assert config["service"] == {"namespace": NS, "name": NAME, "path": "/mutate", "port": 443}
    trusted = webhook.namespace("trust-in")
    plain = webhook.namespace("trust-out", in_scope=False)
    for ns in (trusted, plain):
        webhook.kubectl(
            "-n", ns, "create", "configmap", "settings", "--from-literal=MODEL=llama",
            "--from-literal=REQUESTS_CA_BUNDLE=/etc/own/ca.pem",
        )  # fmt: skip
    with (
        openssl_server(webhook.node.pki / "tls.crt", webhook.node.pki / "tls.key") as server,
        webhook.node.exposed(server.port),
    ):
        url = f"https://{HOST}:{server.port}/"
        curl = (
            f'echo "model=$MODEL requests=$REQUESTS_CA_BUNDLE"; '
            f"curl -sS -o /dev/null {url} && echo trusted"
        )
        for ns in (trusted, plain):
            client = pod(
                "client", ns, debian_image, command=["sh", "-c", curl],
                container={"envFrom": [{"configMapRef": {"name": "settings"}}]},
                initContainers=[{"name": "fetch", "image": debian_image,
                                 "command": ["curl", "-sS", "-o", "/dev/null", url]}],
                hostAliases=host_aliases(webhook.node),
            )  # fmt: skip
            created = webhook.create(client)
            said = created.stderr.decode()
            assert created.returncode == 0, said
            phase, log = webhook.node.ended(ns, "client")
            stored = webhook.stored(ns, "client")
            if ns == trusted:
                assert phase == "Succeeded", log[-2000:]
                assert f"model=llama requests={BUNDLE}" in log and "trusted" in log, log
                (warning,) = [line for line in said.splitlines() if line.startswith("Warning:")]
                assert (
                    warning.startswith(
                        f"Warning: airtrust inject: pod {ns}/client container main: the injected "
                        "env SSL_CERT_FILE, REQUESTS_CA_BUNDLE,"
                    )
                    and "its envFrom (configMap settings) sets; to keep your own" in warning
                ), said
                assert _injected(stored)
                record = json.loads(stored["metadata"]["annotations"][INJECTED])
                assert set(record["containers"]) == {"fetch", "main"}
                for c in stored["spec"]["initContainers"] + stored["spec"]["containers"]:
                    env = {e["name"]: e.get("value") for e in c["env"]}
                    assert env["CURL_CA_BUNDLE"] == env["SSL_CERT_FILE"] == BUNDLE
                    assert {"name": "airtrust-ca", "mountPath": "/etc/airtrust/ca",
                            "readOnly": True} in c["volumeMounts"]  # fmt: skip
                volume = next(v for v in stored["spec"]["volumes"] if v["name"] == "airtrust-ca")
                assert volume["configMap"]["name"] == "airtrust-ca-bundle"
            else:
                # The init container is the first to try: curl's own words, and no more.
                assert phase == "Failed"
                init_log = webhook.node.logs(ns, "pod/client", "fetch")
                assert UNTRUSTED["curl"] in init_log, init_log
                assert not _injected(stored)
                assert all("env" not in c for c in stored["spec"]["containers"])
                assert "Warning" not in said, said

    def mounted_as_issued() -> bool:
        """kubectl exec into each replica: the serving certificate it mounts is the one in
        the Secret (the kubelet may still be syncing one an earlier rotation changed)."""
        secret = webhook.get("secret", "-n", NS, "airtrust-inject-tls")["data"]["tls.crt"]
        return all(
            webhook.kubectl("-n", NS, "exec", f"pod/{p['metadata']['name']}", "-c", "inject",
                            "--", "cat", "/tls/tls.crt").stdout == base64.b64decode(secret)
            for p in webhook.pods()
        )  # fmt: skip

    wait_for("each replica mounting the serving certificate apply issued", mounted_as_issued, 90)
    restarts = _restarts(webhook)
    assert len(restarts) == 2 and all(n == 0 for n, _ in restarts.values()), restarts


def _doctor_inject(webhook: Webhook) -> dict[str, dict[str, str]]:
    """doctor's inject checks from its JSON, and the same from its HTML page: each
    trust point there with its status and evidence."""
    page = webhook.folder / "doctor.html"
    result = run_cli("doctor", "-c", webhook.config, "-o", "json", "--html", page)
    assert "Traceback" not in result.err, result.err
    checks = [c for c in json.loads(result.out)["checks"] if c["name"] == "inject"]
    shown = [p for p in trust_points(page) if p["check"] == "inject"]
    assert sorted((p["target"], p["status"], p["evidence"]) for p in shown) == sorted(
        (c["target"], c["status"], c["evidence"]) for c in checks
    ), shown
    return {c["target"]: c for c in checks}


def test_doctor_judges_the_webhook_through_its_service(webhook: Webhook) -> None:
    """doctor cannot dial a ClusterIP, so it asks what the apiserver needs on the same
    path: the Service's ready endpoints (EndpointSlices), the serving certificate
    verified by the webhook's own caBundle for NAME.NS.svc, and a dry-run pod the
    apiserver sends through the Service. With no replica left, the endpoints and the
    dry run fail, named, with where to look. Every answer is read from doctor's JSON and
    checked against its --html page (`_doctor_inject`)."""
    ns = webhook.namespace(f"doctor-{int(time.monotonic() * 1000) % 100000}")
    service, secret, dry_run = (
        f"Service {NS}/{NAME}",
        f"Secret {NS}/airtrust-inject-tls",
        (f"Pod {ns}/(dry-run)"),
    )
    checks = _doctor_inject(webhook)
    assert (
        checks[service]["status"] == "ok" and "2 ready endpoint(s)" in (checks[service]["evidence"])
    ), checks[service]
    assert checks[secret]["status"] == "ok", checks[secret]
    assert f"{NAME}.{NS}.svc" in checks[secret]["evidence"], checks[secret]
    assert checks[dry_run]["status"] == "ok", checks[dry_run]
    webhook.kubectl("-n", NS, "scale", "deployment", NAME, "--replicas=0")
    try:
        wait_for(
            "no webhook pod left, draining or not",
            lambda: not webhook.pods(terminating=True),
            timeout=120,
        )
        wait_for("doctor to see no ready endpoint", lambda: _doctor_inject(webhook)[service][
            "status"] == "fail", timeout=60)  # fmt: skip
        checks = _doctor_inject(webhook)
        assert "no ready endpoint" in checks[service]["evidence"], checks[service]
        assert f"logs deploy/{NAME}" in checks[service]["fix"], checks[service]
        assert checks[dry_run]["status"] == "fail", checks[dry_run]
    finally:
        webhook.kubectl("-n", NS, "scale", "deployment", NAME, "--replicas=2")
        webhook.ready()


def test_the_disruption_budget_keeps_one_webhook_pod(webhook: Webhook) -> None:
    """The rendered PodDisruptionBudget, judged by the disruption controller: with two
    ready replicas one may be evicted, and an eviction beyond that is refused."""
    webhook.ready()

    def allowed() -> int:
        status = webhook.get("pdb", "-n", NS, NAME).get("status") or {}
        return int(status.get("disruptionsAllowed", -1))

    wait_for("the controller-manager to allow one disruption", lambda: allowed() == 1, 60)
    pdb = webhook.get("pdb", "-n", NS, NAME)
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["status"]["currentHealthy"] == 2 and pdb["status"]["expectedPods"] == 2


def _frozen_pids(webhook: Webhook) -> list[int]:
    """The `inject serve` processes of the webhook's pods on this node, found by their
    pods' cgroups (so nothing of another test run is touched)."""
    uids = [p["metadata"]["uid"] for p in webhook.pods()]
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cgroup = (proc / "cgroup").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
            if b"inject serve" in cmdline and any(uid in cgroup for uid in uids):
                pids.append(int(proc.name))
    assert len(pids) == 2, f"webhook processes of pods {uids}: {pids}"
    return pids


@contextlib.contextmanager
def frozen(webhook: Webhook) -> Iterator[None]:
    pids = _frozen_pids(webhook)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def test_a_webhook_slower_than_its_timeout_ignore_admits_uninjected_fail_refuses(
    webhook: Webhook, debian_image: str
) -> None:
    """Both replicas frozen (connections accepted by the kernel, never answered): the
    apiserver gives up after the rendered timeoutSeconds; Ignore admits the pod as
    written, Fail refuses it with the apiserver's own words. Pods outside the scope
    never wait."""
    ns = webhook.namespace("slow")
    outside = webhook.namespace("slow-outside", in_scope=False)
    webhook.ready()
    timeout = webhook.get("mutatingwebhookconfiguration", NAME)["webhooks"][0]["timeoutSeconds"]
    try:
        for policy in ("Ignore", "Fail"):
            webhook.policy(policy)
            with frozen(webhook):
                started = time.monotonic()
                answer = webhook.create(held(f"while-frozen-{policy.lower()}", ns, debian_image))
                took = time.monotonic() - started
                said = answer.stderr.decode()
                quick = time.monotonic()
                assert webhook.create(held(f"outside-{policy.lower()}", outside, debian_image))\
                    .returncode == 0  # fmt: skip
                outside_took = time.monotonic() - quick
            assert took >= timeout, f"answered in {took:.1f} s, before the {timeout} s timeout"
            assert outside_took < timeout, outside_took
            if policy == "Ignore":
                assert answer.returncode == 0, said
                assert not _injected(webhook.stored(ns, "while-frozen-ignore"))
            else:
                assert answer.returncode != 0
                assert "failed calling webhook" in said and "inject.airtrust.io" in said, said
                assert "context deadline exceeded" in said or "timeout" in said, said
                assert not webhook.node.cluster.exists("pod", "while-frozen-fail", ns)
            print(f"\nfrozen webhook, {policy}: the apiserver answered after {took:.1f} s")

        # Thawed, the same replicas answer again (neither was restarted).
        def thawed_admits() -> bool:
            name = f"thawed-{time.monotonic_ns()}"
            return webhook.create(held(name, ns, debian_image)).returncode == 0

        wait_for("the thawed webhook injecting again", thawed_admits, 30)
        thawed = [p for p in webhook.get("pods", "-n", ns)["items"]
                  if p["metadata"]["name"].startswith("thawed-")]  # fmt: skip
        assert thawed and all(_injected(p) for p in thawed)
    finally:
        webhook.policy("Ignore")
        webhook.ready()


def test_its_own_namespace_and_kube_system_are_never_matched_so_it_comes_back_under_fail(
    webhook: Webhook, debian_image: str
) -> None:
    """Under Fail, with the inject label on airtrust-system and kube-system: a pod there
    is admitted as written while the webhook is up (never matched); both webhook pods
    deleted at once, the Deployment's new pods are admitted and Ready."""
    webhook.policy("Fail")
    try:
        for ns in (NS, "kube-system"):
            webhook.kubectl("label", "namespace", ns, LABEL, "--overwrite")
        for ns in (NS, "kube-system"):
            created = webhook.create(held("labelled-system-pod", ns, debian_image))
            assert created.returncode == 0, created.stderr.decode()
            assert not _injected(webhook.stored(ns, "labelled-system-pod"))
        before = {p["metadata"]["name"] for p in webhook.pods()}
        webhook.kubectl("-n", NS, "delete", "pods", "-l", f"app.kubernetes.io/name={NAME}",
                        "--wait=false")  # fmt: skip
        started = time.monotonic()
        wait_for(
            "two new webhook pods Ready",
            lambda: (
                {p["metadata"]["name"] for p in webhook.pods() if _is_ready(p)}.isdisjoint(before)
                and sum(_is_ready(p) for p in webhook.pods()) == 2
            ),
            timeout=120,
        )
        print(f"\nboth webhook pods replaced under Fail in {time.monotonic() - started:.1f} s")
        events = webhook.kubectl("-n", NS, "get", "events", "-o", "json").stdout.decode()
        assert "failed calling webhook" not in events
    finally:
        for ns in (NS, "kube-system"):
            webhook.kubectl("-n", ns, "delete", "pod", "labelled-system-pod", "--wait=false",
                            check=False)  # fmt: skip
            webhook.kubectl("label", "namespace", ns, "airtrust.io/inject-")
        webhook.policy("Ignore")
    webhook.ready()


class CreateLoop:
    """Creates held pods one after another until stopped; records each answer."""

    def __init__(self, webhook: Webhook, ns: str, image: str) -> None:
        self.webhook, self.ns, self.image = webhook, ns, image
        self.created: list[str] = []
        self.refused: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        i = 0
        while not self.stop.is_set():
            name = f"loop-{i:04d}"
            i += 1
            try:
                self.webhook.api.create(held(name, self.ns, self.image))
                self.created.append(name)
            except AirtrustError as exc:
                self.refused.append(f"{name}: {exc.one_line()}")
            self.stop.wait(0.1)  # paced; stops at once when told

    def more(self, count: int, timeout: float = 60) -> None:
        goal = len(self.created) + count
        wait_for(f"{count} more pods created", lambda: len(self.created) >= goal, timeout)

    def finish(self) -> list[dict[str, Any]]:
        """Stop; every pod the loop created, as stored."""
        self.stop.set()
        self.thread.join(30)
        items: list[dict[str, Any]] = self.webhook.get("pods", "-n", self.ns)["items"]
        return [p for p in items if p["metadata"]["name"].startswith("loop-")]


def _judge(loop: CreateLoop, stored: list[dict[str, Any]]) -> None:
    assert loop.refused == [], loop.refused[:3]
    assert len(stored) == len(loop.created) > 0
    uninjected = [p["metadata"]["name"] for p in stored if not _injected(p)]
    assert uninjected == [], f"{len(uninjected)} of {len(stored)} admitted uninjected"


def test_a_replica_deleted_and_replaced_while_pods_are_created_loses_none(
    webhook: Webhook, debian_image: str
) -> None:
    """Under Fail, so a lost call is a refused pod: one replica deleted while pods keep
    coming, and replaced; every pod created meanwhile is admitted and injected."""
    ns = webhook.namespace("churn")
    webhook.policy("Fail")
    webhook.ready()
    loop = CreateLoop(webhook, ns, debian_image)
    try:
        loop.more(5)
        victim = webhook.pods()[0]["metadata"]["name"]
        webhook.kubectl("-n", NS, "delete", "pod", victim, "--wait=false")
        wait_for("the deleted replica gone", lambda: victim not in {
            p["metadata"]["name"] for p in webhook.pods()}, 90)  # fmt: skip
        webhook.ready()
        loop.more(5)
    finally:
        stored = loop.finish()
        webhook.policy("Ignore")
    print(f"\n{len(stored)} pods created across a replica's replacement")
    _judge(loop, stored)


def test_pods_whose_spec_takes_the_injected_names_debug_containers_and_outside_pods(
    webhook: Webhook, debian_image: str
) -> None:
    """Pods that already use the bundle volume's name or folder are admitted exactly as
    written, with a warning the client prints (merged, their clients would read a file
    that is not the bundle); `kubectl debug` adds an ephemeral container to an injected
    running pod under Fail without the webhook in the way; a pod outside the scope is
    untouched."""
    ns = webhook.namespace("edge")
    outside = webhook.namespace("edge-outside", in_scope=False)
    webhook.policy("Fail")
    try:
        own_volume = held("own-volume", ns, debian_image)
        own_volume["spec"]["volumes"] = [{"name": "airtrust-ca", "emptyDir": {}}]
        own_volume["spec"]["containers"][0]["volumeMounts"] = [
            {"name": "airtrust-ca", "mountPath": "/data"}
        ]
        own_folder = held("own-folder", ns, debian_image)
        own_folder["spec"]["volumes"] = [{"name": "certs", "emptyDir": {}}]
        own_folder["spec"]["containers"][0]["volumeMounts"] = [
            {"name": "certs", "mountPath": "/etc/airtrust/ca"}
        ]
        for manifest in (own_volume, own_folder):
            name = manifest["metadata"]["name"]
            created = webhook.create(manifest)
            said = created.stderr.decode()
            assert created.returncode == 0, said
            assert "Warning: airtrust inject: pod left unchanged" in said, said
            stored = webhook.stored(ns, name)
            assert not _injected(stored)
            assert stored["spec"]["volumes"] == [{**manifest["spec"]["volumes"][0]}], stored[
                "spec"
            ]["volumes"]
            assert "env" not in stored["spec"]["containers"][0]
        # kubectl debug: the ephemeral container goes through pods/ephemeralcontainers,
        # which the webhook does not match: added under Fail, the pod's own spec as it was.
        sleeper = pod("sleeper", ns, debian_image, command=["sleep", "3600"])
        assert webhook.create(sleeper).returncode == 0
        wait_for("the sleeper Running", lambda: (webhook.stored(ns, "sleeper")["status"]
                                                  .get("phase") == "Running"), 120)  # fmt: skip
        before = webhook.stored(ns, "sleeper")["spec"]
        debugged = webhook.kubectl(
            "-n", ns, "debug", "pod/sleeper", "--image", debian_image, "-c", "dbg",
            "--", "sh", "-c", "echo debug-ran", check=False,
        )  # fmt: skip
        assert debugged.returncode == 0, debugged.stderr.decode()
        after = webhook.stored(ns, "sleeper")["spec"]
        assert [c["name"] for c in after["ephemeralContainers"]] == ["dbg"]
        assert after["containers"] == before["containers"]
        assert after["volumes"] == before["volumes"]
        wait_for("the debug container's output", lambda: "debug-ran" in webhook.node.logs(
            ns, "pod/sleeper", "dbg"), 120)  # fmt: skip
        # Outside the scope: stored exactly as sent.
        created = webhook.create(held("outside", outside, debian_image))
        assert created.returncode == 0 and b"Warning" not in created.stderr
        stored = webhook.stored(outside, "outside")
        assert not _injected(stored) and "volumes" not in stored["spec"]
    finally:
        webhook.kubectl("-n", ns, "delete", "pod", "sleeper", "--wait=false", check=False)
        webhook.policy("Ignore")


def _served_issuers(webhook: Webhook) -> set[str]:
    """The issuer of the certificate each webhook pod serves, asked on the pod network."""
    out = set()
    for p in webhook.pods():
        ip = (p.get("status") or {}).get("podIP")
        if not ip:
            return set()
        shown = webhook.node.in_netns(
            "sh", "-c", f"openssl s_client -connect {ip}:8443 </dev/null 2>/dev/null "
            "| openssl x509 -noout -issuer", timeout=20,
        )  # fmt: skip
        out.add(shown.stdout.strip())
    return out


def _ca_bundle_count(webhook: Webhook) -> int:
    config = webhook.get("mutatingwebhookconfiguration", NAME)
    return base64.b64decode(config["webhooks"][0]["clientConfig"]["caBundle"]).count(
        b"BEGIN CERTIFICATE"
    )


def _rotate(
    webhook: Webhook, loop: CreateLoop, away: Path, to: Path, subject: str, folder: Path
) -> None:
    """One whole rotation from the CA folder ``away`` to ``to`` (its CN ``subject``) while ``loop``
    creates pods: start, the reissued certificate served once the caBundle holds both,
    finish against the control plane's live certificate, the new CA alone everywhere."""
    started = run_cli("rotate", "start", "-c", webhook.config, "--new-ca", to)
    assert started.code == 0, started.out + started.err
    secret = webhook.get("secret", "-n", NS, "airtrust-inject-tls")["data"]["tls.crt"]
    leaf = subprocess.run(
        ["openssl", "x509", "-noout", "-issuer"], input=base64.b64decode(secret),
        capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    assert subject in leaf, leaf
    mounted = webhook.get("secret", "-n", NS, "runai-ca-cert")["data"]["runai-ca.pem"]
    assert base64.b64decode(mounted).count(b"BEGIN CERTIFICATE") == 2
    t0 = time.monotonic()
    wait_for(f"both replicas serving the certificate from {subject}", lambda: all(
        subject in i for i in _served_issuers(webhook)) and bool(_served_issuers(webhook)),
        120)  # fmt: skip
    assert _ca_bundle_count(webhook) == 2
    print(f"\nrotate start: the certificate from {subject} served {time.monotonic() - t0:.1f} s")
    loop.more(5)
    # Phase 2: the control plane serves its reissued certificate; finish checks it.
    folder.mkdir()
    live = webhook.get("secret", "-n", "runai-backend", "runai-backend-tls")["data"]
    for key in ("tls.crt", "tls.key"):
        (folder / key).write_bytes(base64.b64decode(live[key]))
    with openssl_server(folder / "tls.crt", folder / "tls.key") as server:
        finished = run_cli("rotate", "finish", "-c", webhook.config,
                           "--connect-to", f"{HOST}:443:127.0.0.1:{server.port}")  # fmt: skip
    assert finished.code == 0, finished.out + finished.err
    wait_for("the caBundle on the new CA alone", lambda: _ca_bundle_count(webhook) == 1, 120)
    old_pem, new_pem = ((d / "ca.crt").read_text().strip() for d in (away, to))

    def bundle_has_new_only() -> bool:
        """The merged bundle (the base's public roots and the local CA): old gone."""
        data = webhook.get("configmap", "-n", loop.ns, "airtrust-ca-bundle")["data"]
        return old_pem not in data["ca-bundle.pem"] and new_pem in data["ca-bundle.pem"]

    wait_for("the namespaces' bundle on the new CA alone", bundle_has_new_only, 120)
    loop.more(5)


def test_a_rotation_reissues_the_serving_certificate_and_no_pod_is_lost(
    webhook: Webhook, debian_image: str, tmp_path: Path
) -> None:
    """`rotate start` writes old + new into the CA secret the webhook mounts and reissues
    its serving certificate from the new CA; the webhook serves it only once its
    caBundle holds the new CA; `rotate finish` leaves the new CA alone. Under Fail a
    loop creates pods through all of it: every one admitted and injected. Then the
    same rotation back to the module's CA, so the module's other tests (in any order)
    find the webhook, the secrets and the bundles as the fixture made them."""
    ns = webhook.namespace("rotation")
    webhook.policy("Fail")
    webhook.ready()
    new_ca = tmp_path / "new-ca"
    assert run_cli("ca", "create", "--out", new_ca, "--name", "Rotated Inject Root").code == 0
    loop = CreateLoop(webhook, ns, debian_image)
    try:
        loop.more(3)
        pki = webhook.node.pki
        _rotate(webhook, loop, pki, new_ca, "Rotated Inject Root", tmp_path / "there")
        _rotate(webhook, loop, new_ca, pki, "airtrust local root CA", tmp_path / "back")
    finally:
        stored = loop.finish()
        webhook.policy("Ignore") if _ca_bundle_count(webhook) == 2 else None
    print(f"{len(stored)} pods created through both rotations")
    _judge(loop, stored)
    served = base64.b64decode(
        webhook.get("secret", "-n", NS, "runai-ca-cert")["data"]["runai-ca.pem"]
    ).decode()
    assert served.count("BEGIN CERTIFICATE") == 1, served
    assert (webhook.node.pki / "ca.crt").read_text().strip() in served
    logs = "".join(webhook.node.logs(NS, f"pod/{p['metadata']['name']}") for p in webhook.pods())
    assert "Traceback" not in logs, logs[-3000:]
