"""Pods that trust the CA at admission: a real apiserver calling `airtrust inject serve`.

The test apiserver reaches the webhook at https://127.0.0.1:PORT
(``clientConfig.url`` from `airtrust render --inject`, applied with
``kubectl apply --server-side``), so the Pod objects are stored with their
mutation and no kubelet is needed. The webhook runs with a ServiceAccount
token bound to exactly the rendered RBAC (``kubectl create token``). What
the injection gives a pod is then proven by real clients: the pod's env and
the bundle from the ConfigMap, applied to a Debian chroot, make curl, git,
Python requests and Node reach a TLS server the local CA signed.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import json
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import run_cli
from tests.helpers.certs import make, write
from tests.integration.aiimage import ai_layers
from tests.integration.conftest import (
    assert_untrusted,
    bare_repository,
    free_port,
    git_https_server,
    openssl_server,
    require,
    wait_for,
    wait_for_port,
)
from tests.integration.kube import KubeCluster, started_cluster

pytestmark = pytest.mark.integration
HOST = "tls.example.test"
VARS = (
    "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO",
    "NODE_EXTRA_CA_CERTS", "AWS_CA_BUNDLE", "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
)  # fmt: skip
BUNDLE = "/etc/airtrust/ca/ca-bundle.pem"


@dataclass
class Webhook:
    cluster: KubeCluster
    folder: Path
    port: int
    token_kubeconfig: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/mutate"

    def start(self) -> None:
        log = open(self.folder / "webhook.log", "ab")
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "airtrust", "inject", "serve",
                "--listen", f"127.0.0.1:{self.port}",
                "--cert", str(self.folder / "wh" / "tls.crt"),
                "--key", str(self.folder / "wh" / "tls.key"),
                "--ca", str(self.folder / "webhook-ca.pem"),
                "--kubeconfig", str(self.token_kubeconfig), "--context", "inject",
                "--interval", "1",
            ],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for_port(self.port, self.process, timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(20)

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        return self.cluster.kubectl(*args, check=check)

    def pod(self, namespace: str, name: str) -> dict[str, Any]:
        data: dict[str, Any] = self.cluster.get("pod", "-n", namespace, name)
        return data


def _ok(result: Any) -> None:
    assert result.code == 0, result.err


def _token_kubeconfig(cluster: KubeCluster, folder: Path) -> Path:
    """A kubeconfig for the rendered ServiceAccount, with a token the apiserver issued."""
    token = (
        cluster.kubectl(
            "create", "token", "airtrust-inject", "-n", "airtrust-system", "--duration", "1h"
        )
        .stdout.decode()
        .strip()
    )
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": "inject", "user": {"token": token}}],
        "contexts": [
            {
                "name": "inject",
                "context": {"cluster": admin["clusters"][0]["name"], "user": "inject"},
            }
        ],
        "current-context": "inject",
    }
    path = folder / "inject.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def _render_and_apply(webhook_url: str, cluster: KubeCluster, folder: Path, policy: str) -> Path:
    out = folder / f"rendered-{policy}"
    _ok(
        run_cli(
            "render", "--inject", "--url", webhook_url, "--ca", folder / "qs" / "ca-bundle.pem",
            "--failure-policy", policy, "--out", out, "--force",
        )
    )  # fmt: skip
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(out))
    return out


@contextlib.contextmanager
def started_webhook(folder: Path) -> Iterator[Webhook]:
    """A real apiserver with the rendered RBAC and webhook (failurePolicy Ignore), team-a
    and team-b in scope, plain outside, and `inject serve` running."""
    _ok(run_cli("quickstart", "--domain", HOST, "--out", folder / "qs"))
    # What the in-cluster webhook mounts from the CA secret (a rotation rewrites it).
    shutil.copy(folder / "qs" / "ca-bundle.pem", folder / "webhook-ca.pem")
    _ok(
        run_cli(
            "cert", "issue", "--ca-dir", folder / "qs", "--domain",
            "airtrust-inject.airtrust-system.svc", "--ip", "127.0.0.1", "--out", folder / "wh",
        )
    )  # fmt: skip
    with started_cluster(folder / "cluster") as cluster:
        # The least-privilege RBAC as rendered for the in-cluster Deployment.
        rbac = folder / "rendered-service"
        _ok(
            run_cli(
                "render", "--inject", "--service", "airtrust-system/airtrust-inject",
                "--image", "registry.local/airtrust:test", "--ca", folder / "qs" / "ca-bundle.pem",
                "--out", rbac,
            )
        )  # fmt: skip
        cluster.kubectl("create", "namespace", "airtrust-system")
        for doc in sorted(rbac.glob("0*-*.yaml")):
            if "mutatingwebhook" not in doc.name:
                cluster.kubectl("apply", "--server-side", "-f", str(doc))
        hook = Webhook(cluster, folder, free_port(), _token_kubeconfig(cluster, folder))
        _render_and_apply(hook.url, cluster, folder, "Ignore")
        for ns, labelled in (("team-a", True), ("team-b", True), ("plain", False)):
            cluster.kubectl("create", "namespace", ns)
            if labelled:
                cluster.kubectl("label", "namespace", ns, "airtrust.io/inject=enabled")
        hook.start()
        try:
            wait_for(
                "the bundle ConfigMap in every namespace in scope",
                lambda: cluster.exists("configmap", "airtrust-ca-bundle", "team-b"),
            )
            yield hook
        finally:
            hook.stop()


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    """One webhook for the tests that leave it as they found it (a test that stops it
    starts it again, one that replaces its certificate uses the same CA)."""
    with started_webhook(tmp_path_factory.mktemp("inject")) as hook:
        yield hook


@pytest.fixture
def own_webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    """A webhook and apiserver of the test's own, for a test that rotates the CA."""
    with started_webhook(tmp_path_factory.mktemp("inject-own")) as hook:
        yield hook


def _pod(name: str, namespace: str, **extra: Any) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, **extra.pop("metadata", {})},
        "spec": {
            "initContainers": [{"name": "fetch", "image": "debian:bookworm"}],
            "containers": [
                {"name": "main", "image": "debian:bookworm"},
                {"name": "side", "image": "debian:bookworm"},
            ],
        },
    }
    pod["spec"].update(extra)
    return pod


def _create(
    hook: Webhook, pod: dict[str, Any], check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    return hook.cluster.kubectl("create", "-f", "-", stdin=json.dumps(pod).encode(), check=check)


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env") or []}


def test_pods_in_scope_get_the_bundle_in_every_container_and_others_nothing(
    webhook: Webhook,
) -> None:
    preset = _pod("preset", "team-a")
    preset["spec"]["containers"][0]["env"] = [{"name": "REQUESTS_CA_BUNDLE", "value": "/mine.pem"}]
    _create(webhook, preset)
    pod = webhook.pod("team-a", "preset")
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["airtrust-ca"]["configMap"]["name"] == "airtrust-ca-bundle"
    for container in pod["spec"]["initContainers"] + pod["spec"]["containers"]:
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts["airtrust-ca"]["mountPath"] == "/etc/airtrust/ca"
        assert mounts["airtrust-ca"]["readOnly"] is True
        env = _env(container)
        for var in VARS:
            expected = (
                "/mine.pem"
                if (container["name"], var) == ("main", "REQUESTS_CA_BUNDLE")
                else BUNDLE
            )
            assert env[var] == expected, (container["name"], var)
    record = json.loads(pod["metadata"]["annotations"]["airtrust.io/injected"])
    assert set(record["containers"]) == {"fetch", "main", "side"}
    assert "REQUESTS_CA_BUNDLE" not in record["containers"]["main"]
    # Opted out by label, or not in scope: untouched.
    _create(
        webhook, _pod("opted-out", "team-a", metadata={"labels": {"airtrust.io/inject": "false"}})
    )
    _create(webhook, _pod("outside", "plain"))
    for ns, name in (("team-a", "opted-out"), ("plain", "outside")):
        untouched = webhook.pod(ns, name)
        assert "volumes" not in untouched["spec"] or not any(
            v["name"] == "airtrust-ca" for v in untouched["spec"]["volumes"]
        )
        assert all("env" not in c for c in untouched["spec"]["containers"])
        assert "airtrust.io/injected" not in (untouched["metadata"].get("annotations") or {})


def test_readmission_of_an_injected_pod_changes_nothing(webhook: Webhook) -> None:
    _create(webhook, _pod("twice", "team-b"))
    first = webhook.pod("team-b", "twice")
    # The stored (injected) pod submitted again as a new pod: the same spec comes back.
    again = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "twice-copy",
            "namespace": "team-b",
            "annotations": first["metadata"]["annotations"],
        },
        "spec": {k: first["spec"][k] for k in ("volumes", "initContainers", "containers")},
    }
    _create(webhook, again)
    copy = webhook.pod("team-b", "twice-copy")
    for key in ("volumes", "initContainers", "containers"):
        assert copy["spec"][key] == first["spec"][key], key
    # kubectl apply of the original manifest to the existing pod (an UPDATE: the webhook
    # only sees CREATE): the injection stays as it was, nothing doubled.
    webhook.cluster.kubectl("apply", "-f", "-", stdin=json.dumps(_pod("twice", "team-b")).encode())
    after = webhook.pod("team-b", "twice")
    for key in ("volumes", "initContainers", "containers"):
        assert after["spec"][key] == first["spec"][key], key
    injected = "airtrust.io/injected"
    assert after["metadata"]["annotations"][injected] == first["metadata"]["annotations"][injected]


def test_the_webhook_down_ignore_admits_uninjected_and_doctor_says_so_fail_refuses(
    webhook: Webhook,
) -> None:
    config = webhook.folder / "airtrust.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "domain": HOST,
                "ca": {"bundle": [str(webhook.folder / "qs" / "ca-bundle.pem")]},
                "kubeconfig": str(webhook.cluster.kubeconfig),
                "clusters": [{"context": "admin"}],
            }
        )
    )

    def inject_checks() -> list[dict[str, str]]:
        result = run_cli("doctor", "-c", config, "-o", "json")
        return [c for c in json.loads(result.out)["checks"] if c["name"] == "inject"]

    healthy = inject_checks()
    assert {c["status"] for c in healthy} == {"ok"}, healthy
    assert any("dry run came back injected" in c["evidence"] for c in healthy)
    assert any("verified by the bundle" in c["evidence"] for c in healthy)
    webhook.stop()
    try:
        _create(webhook, _pod("while-down", "team-a"))
        down = webhook.pod("team-a", "while-down")
        assert "airtrust.io/injected" not in (down["metadata"].get("annotations") or {})
        checks = inject_checks()
        failed = [c for c in checks if c["status"] == "fail"]
        assert any("admitted without injection" in c["evidence"] for c in failed), checks
        assert any("unreachable" in c["evidence"] for c in failed), checks
        _render_and_apply(webhook.url, webhook.cluster, webhook.folder, "Fail")
        refused = _create(webhook, _pod("refused", "team-a"), check=False)
        assert refused.returncode != 0
        said = refused.stderr.decode()
        assert "inject.airtrust.io" in said and "failed calling webhook" in said, said
        assert not webhook.cluster.exists("pod", "refused", "team-a")
        # Pods outside the scope are never affected by the webhook being down.
        _create(webhook, _pod("outside-while-down", "plain"))
    finally:
        webhook.start()
        _render_and_apply(webhook.url, webhook.cluster, webhook.folder, "Ignore")
    _create(webhook, _pod("after", "team-a"))
    assert "airtrust.io/injected" in webhook.pod("team-a", "after")["metadata"]["annotations"]


class _Faulty(http.server.BaseHTTPRequestHandler):
    """A webhook that breaks its side of the contract: ``fault`` is "500" (an error
    status) or "malformed" (200 with a body that is no AdmissionReview)."""

    fault = ""
    calls: list[str]

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.calls.append(self.path.partition("?")[0])  # the apiserver adds ?timeout=
        status, body = (
            (500, b"internal error\n")
            if self.fault == "500"
            else (200, b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionRev')
        )
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextlib.contextmanager
def faulty_webhook(folder: Path, fault: str) -> Iterator[tuple[int, list[str]]]:
    """(port, the paths posted to): a TLS server on 127.0.0.1 serving the webhook's own
    certificate (issued by the CA in the rendered caBundle), answering ``fault``."""
    calls: list[str] = []
    handler = type("Faulty", (_Faulty,), {"fault": fault, "calls": calls})
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "wh" / "tls.crt", folder / "wh" / "tls.key")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(httpd.server_address[1]), calls
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("fault", ["500", "malformed"])
def test_a_webhook_answering_500_or_garbage_ignore_admits_uninjected_fail_refuses(
    webhook: Webhook, fault: str
) -> None:
    """The configuration airtrust renders, pointed at a server that answers an error or
    a reply that is no AdmissionReview, judged by the apiserver: under Ignore the pod is
    admitted as written, under Fail refused in the apiserver's words; outside the
    scope nothing changes."""
    with faulty_webhook(webhook.folder, fault) as (port, calls):
        url = f"https://127.0.0.1:{port}"
        probes = iter(range(1000))

        def called(policy: str) -> bool:
            """A server-side dry run reaches the faulty server under ``policy`` (the
            apiserver's informer has the applied configuration)."""
            before = len(calls)
            name = f"probe-{fault}-{next(probes)}"
            dry = webhook.cluster.kubectl(
                "create", "--dry-run=server", "-f", "-",
                stdin=json.dumps(_pod(name, "team-a")).encode(), check=False,
            )  # fmt: skip
            refused = dry.returncode != 0
            return len(calls) > before and refused == (policy == "Fail")

        try:
            for policy in ("Ignore", "Fail"):
                _render_and_apply(url, webhook.cluster, webhook.folder, policy)
                wait_for(
                    f"the apiserver calling the {fault} webhook under {policy}",
                    functools.partial(called, policy),
                )
                name = f"{fault}-{policy.lower()}"
                before = len(calls)
                answer = _create(webhook, _pod(name, "team-a"), check=False)
                said = answer.stderr.decode()
                assert len(calls) > before and set(calls) == {"/mutate"}, calls
                if policy == "Ignore":
                    assert answer.returncode == 0, said
                    stored = webhook.pod("team-a", name)
                    assert "airtrust.io/injected" not in (
                        stored["metadata"].get("annotations") or {}
                    )
                    assert all("env" not in c for c in stored["spec"]["containers"])
                else:
                    assert answer.returncode != 0
                    assert (
                        'failed calling webhook "inject.airtrust.io": failed to call webhook'
                        in said
                    ), said
                    assert not webhook.cluster.exists("pod", name, "team-a")
                    before = len(calls)
                    _create(webhook, _pod(f"{fault}-outside", "plain"))
                    assert len(calls) == before  # never asked about a pod out of scope
        finally:
            _render_and_apply(webhook.url, webhook.cluster, webhook.folder, "Ignore")


def test_a_pod_with_env_from_is_injected_and_kubectl_warns_what_it_overrides(
    webhook: Webhook,
) -> None:
    """env beats envFrom, so the injected variables override the same names in a
    ConfigMap the pod takes with envFrom: the pod is injected, kubectl prints the
    webhook's warning naming the pod, container, ConfigMap and variables and the way to
    keep one's own; a variable the container sets in env stays as it is, unnamed."""
    webhook.kubectl(
        "-n", "team-b", "create", "configmap", "own-ca",
        "--from-literal=REQUESTS_CA_BUNDLE=/etc/own/ca.pem",
    )  # fmt: skip
    manifest = _pod("env-from", "team-b")
    main, side = manifest["spec"]["containers"]
    main["envFrom"] = side["envFrom"] = [{"configMapRef": {"name": "own-ca"}}]
    side["env"] = [{"name": "REQUESTS_CA_BUNDLE", "value": "/etc/own/ca.pem"}]
    created = _create(webhook, manifest)
    warnings = [
        line for line in created.stderr.decode().splitlines() if line.startswith("Warning:")
    ]
    but_requests = ", ".join(v for v in VARS if v != "REQUESTS_CA_BUNDLE")
    assert warnings == [
        f"Warning: airtrust inject: pod team-b/env-from container {name}: the injected env "
        f"{names} overrides any of these names its envFrom (configMap own-ca) sets; to keep "
        "your own values, set them in the container's env, which airtrust leaves alone"
        for name, names in (("main", ", ".join(VARS)), ("side", but_requests))
    ], created.stderr.decode()
    stored = webhook.pod("team-b", "env-from")
    assert "airtrust.io/injected" in stored["metadata"]["annotations"]
    main, side = stored["spec"]["containers"]
    assert main["envFrom"] == side["envFrom"] == [{"configMapRef": {"name": "own-ca"}}]
    assert _env(main)["REQUESTS_CA_BUNDLE"] == BUNDLE  # what the container will see
    assert _env(side)["REQUESTS_CA_BUNDLE"] == "/etc/own/ca.pem"
    assert _env(side)["SSL_CERT_FILE"] == BUNDLE


def test_a_rotated_serving_certificate_is_picked_up_without_restart(webhook: Webhook) -> None:
    from airtrust.probe.tls import Endpoint, fetch_chain

    def serial() -> int:
        return fetch_chain(Endpoint("127.0.0.1", webhook.port))[0].serial_number

    before = serial()
    fresh = webhook.folder / "wh-new"
    _ok(
        run_cli(
            "cert", "issue", "--ca-dir", webhook.folder / "qs", "--domain",
            "airtrust-inject.airtrust-system.svc", "--ip", "127.0.0.1", "--out", fresh,
        )
    )  # fmt: skip
    for name in ("tls.key", "tls.crt"):
        shutil.copy(fresh / name, webhook.folder / "wh" / name)
    wait_for("the webhook serving the new certificate", lambda: serial() != before)
    _create(webhook, _pod("after-rotation", "team-b"))
    assert (
        "airtrust.io/injected" in webhook.pod("team-b", "after-rotation")["metadata"]["annotations"]
    )


@pytest.fixture(scope="module")
def debian_root(tmp_path_factory: pytest.TempPathFactory, fetch_java_classes: Path) -> Path:
    """The Debian rootfs the image tests use (curl, git, node, a venv with requests)."""
    root = tmp_path_factory.mktemp("debian") / "root"
    root.mkdir()
    base, opt = ai_layers()
    for layer in (base, opt):
        subprocess.run(["tar", "-C", str(root), "-xf", str(layer)], check=True)
    (root / "etc" / "hosts").write_text(f"127.0.0.1 localhost {HOST}\n")
    shutil.copytree(fetch_java_classes, root / "tmp" / "classes")
    return root


def test_the_injected_env_and_bundle_make_real_clients_trust(
    webhook: Webhook, debian_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    _create(webhook, _pod("clients", "team-a"))
    env = _env(webhook.pod("team-a", "clients")["spec"]["containers"][0])
    java_pod = _pod("java", "team-a", metadata={"annotations": {"airtrust.io/inject-java": "true"}})
    _create(webhook, java_pod)
    java_env = _env(webhook.pod("team-a", "java")["spec"]["containers"][0])
    assert "JAVA_TOOL_OPTIONS" not in env and "JAVA_TOOL_OPTIONS" in java_env
    configmap = webhook.cluster.get("configmap", "-n", "team-a", "airtrust-ca-bundle")
    bundle = configmap["data"]["ca-bundle.pem"]
    # The bundle keeps the base's public roots: every host root plus the local CA.
    host_roots = Path("/etc/ssl/certs/ca-certificates.crt").read_text().count("BEGIN CERTIFICATE")
    assert bundle.count("BEGIN CERTIFICATE") == host_roots + 1
    mount = debian_root / "etc" / "airtrust" / "ca"
    mount.mkdir(parents=True, exist_ok=True)
    (mount / "ca-bundle.pem").write_text(bundle)
    (mount / "truststore.p12").write_bytes(
        base64.b64decode(configmap["binaryData"]["truststore.p12"])
    )
    qs = webhook.folder / "qs"
    git_root = tmp_path_factory.mktemp("git")
    bare_repository(git_root, "airtrust\n")
    www = tmp_path_factory.mktemp("www")
    (www / "hello.txt").write_text("hello\n")
    with (
        openssl_server(qs / "tls.crt", qs / "tls.key", www_root=www) as files,
        git_https_server(qs / "tls.crt", qs / "tls.key", git_root) as git,
    ):
        url = f"https://{HOST}:{files.port}/hello.txt"
        clients = {
            "curl": ["curl", "-sSf", "-o", "/dev/null", url],
            "git": ["git", "ls-remote", f"https://{HOST}:{git.port}/repo.git"],
            "python requests": [
                "/opt/venv/bin/python", "-c",
                f"import requests; requests.get('{url}', timeout=10).raise_for_status()",
            ],
            "node": [
                "node", "-e",
                f"require('https').get('{url}', r => process.exit(r.statusCode === 200 ? 0 : 1))"
                ".on('error', e => { console.error(e.code, e.message); process.exit(2); })",
            ],
        }  # fmt: skip
        speaks = {"curl": "curl", "git": "git", "python requests": "python", "node": "node"}
        base_env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp"}
        # The image's own stores do not hold the CA (Debian's bundle, the venv's certifi):
        # without the injection each client fails, with it each succeeds.
        for name, cmd in clients.items():
            without = _chroot(debian_root, base_env, cmd)
            assert_untrusted(speaks[name], without, f"{name} without the injection")
            injected = _chroot(debian_root, {**base_env, **env}, cmd)
            assert injected.returncode == 0, f"{name} with the injected env: {injected.stderr}"
        # Java reads a keystore: the opted-in pod's JAVA_TOOL_OPTIONS name the PKCS#12
        # truststore (public roots + the local CA); Debian's cacerts alone fails.
        java = ["java", "-cp", "/tmp/classes", "Fetch", url]
        without = _chroot(debian_root, base_env, java, proc=True)
        assert_untrusted("java", without, "Java with Debian's cacerts")
        opted_in = _chroot(debian_root, {**base_env, **java_env}, java, proc=True)
        assert opted_in.returncode == 0, opted_in.stderr


def _chroot(
    root: Path, env: dict[str, str], cmd: list[str], *, proc: bool = False
) -> subprocess.CompletedProcess[str]:
    """``cmd`` in a chroot with only ``env``; ``proc``: /proc mounted (the JVM reads it) in a
    private mount namespace, so nothing leaks onto the host."""
    inner = ["env", "-i", *(f"{k}={v}" for k, v in env.items()), *cmd]
    if proc:
        script = 'mount -t proc proc "$1/proc" && root="$1" && shift && exec chroot "$root" "$@"'
        argv = [require("unshare"), "-m", "sh", "-c", script, "sh", str(root), *inner]
    else:
        argv = [require("chroot"), str(root), *inner]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def test_two_hundred_pods_at_once_are_all_injected(webhook: Webhook) -> None:
    """Load: 200 creates, 20 at a time, in scope and (the control) outside it; every pod
    in scope comes back injected, none is lost. The added admission latency is printed."""
    from airtrust.kube.api import KubeAPI

    api = KubeAPI.connect("admin", kubeconfig=webhook.cluster.kubeconfig)
    webhook.kubectl("create", "namespace", "load")
    webhook.kubectl("label", "namespace", "load", "airtrust.io/inject=enabled")
    webhook.kubectl("create", "namespace", "load-control")

    def create(args: tuple[str, int]) -> float:
        namespace, i = args
        start = time.perf_counter()
        created = api.create(_pod(f"p{i:03d}", namespace))
        assert created is not None
        return time.perf_counter() - start

    def timed(namespace: str) -> list[float]:
        with ThreadPoolExecutor(20) as pool:
            return list(pool.map(create, [(namespace, i) for i in range(200)]))

    control = timed("load-control")
    injected = timed("load")
    pods = webhook.cluster.get("pods", "-n", "load")["items"]
    assert len(pods) == 200
    assert all("airtrust.io/injected" in (p["metadata"].get("annotations") or {}) for p in pods)
    assert all(len(p["spec"]["containers"][0]["env"]) == len(VARS) for p in pods)

    def pct(values: list[float], q: float) -> float:
        return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000

    print(
        f"\nadmission latency, 200 pods x20 concurrent: p50 {pct(injected, 0.5):.1f} ms "
        f"(control {pct(control, 0.5):.1f} ms), p99 {pct(injected, 0.99):.1f} ms "
        f"(control {pct(control, 0.99):.1f} ms); added p50 "
        f"{pct(injected, 0.5) - pct(control, 0.5):.1f} ms, mean "
        f"{(statistics.mean(injected) - statistics.mean(control)) * 1000:.1f} ms"
    )


def _openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require("openssl"), *map(str, args)], capture_output=True, text=True, check=False
    )


def test_apply_issues_the_webhook_certificate_and_a_rotation_carries_the_webhook_over(
    own_webhook: Webhook, tmp_path: Path
) -> None:
    """The serving certificate is one more TLS secret of the cluster: apply issues it
    from the local CA, rotate start reissues it from the new one. Meanwhile the webhook
    follows the CA secret it mounts: the bundle in every namespace and its own caBundle
    carry old + new, so pods keep being injected across the switch. (The rotation
    changes the CA the webhook trusts and serves from: it gets a webhook of its own.)"""
    webhook = own_webhook
    qs = webhook.folder / "qs"
    config = tmp_path / "airtrust.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "domain": HOST,
                "version": "2.20",
                "ca": {"bundle": [str(qs / "ca-bundle.pem")]},
                "tls": {"cert": str(qs / "tls.crt"), "key": str(qs / "tls.key")},
                "issue_from": str(qs),
                "kubeconfig": str(webhook.cluster.kubeconfig),
                "control_plane": {"context": "admin"},
                "clusters": [{"context": "admin", "inject_namespace": "airtrust-system"}],
            }
        )
    )
    _ok(run_cli("apply", "-c", config))

    def served(name: str) -> Path:
        secret = webhook.cluster.get("secret", "-n", "airtrust-system", "airtrust-inject-tls")
        path = tmp_path / name
        path.mkdir(exist_ok=True)
        for key in ("tls.crt", "tls.key"):
            (path / key).write_bytes(base64.b64decode(secret["data"][key]))
        return path

    first = served("first")
    verified = _openssl("verify", "-CAfile", qs / "ca-bundle.pem", first / "tls.crt")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    sans = _openssl("x509", "-in", first / "tls.crt", "-noout", "-ext", "subjectAltName").stdout
    assert "DNS:airtrust-inject.airtrust-system.svc" in sans
    # Rotation, phase 1: every CA secret holds old + new; the TLS secrets are reissued.
    _ok(run_cli("ca", "create", "--out", tmp_path / "new-ca", "--name", "Rotated Root"))
    _ok(run_cli("rotate", "start", "-c", config, "--new-ca", tmp_path / "new-ca"))
    second = served("second")
    assert (
        _openssl("verify", "-CAfile", tmp_path / "new-ca" / "ca.crt", second / "tls.crt").returncode
        == 0
    )
    old_ca = _openssl("verify", "-CAfile", qs / "ca-bundle.pem", second / "tls.crt")
    assert_untrusted("openssl verify", old_ca, "the reissued certificate under the old CA")
    # The CA secret now carries both: what the in-cluster webhook would see mounted.
    ca_secret = webhook.cluster.get("secret", "-n", "runai", "runai-ca-cert")
    both = base64.b64decode(ca_secret["data"]["runai-ca.pem"])
    assert both.count(b"BEGIN CERTIFICATE") == 2
    (webhook.folder / "webhook-ca.pem").write_bytes(both)

    def follows() -> bool:
        config_now = webhook.cluster.get("mutatingwebhookconfiguration", "airtrust-inject")
        ca_bundle = base64.b64decode(config_now["webhooks"][0]["clientConfig"]["caBundle"])
        bundle = webhook.cluster.get("configmap", "-n", "team-a", "airtrust-ca-bundle")
        new_ca = (tmp_path / "new-ca" / "ca.crt").read_text().strip()
        return (
            ca_bundle.count(b"BEGIN CERTIFICATE") == 2 and new_ca in bundle["data"]["ca-bundle.pem"]
        )

    wait_for("the webhook's caBundle and the namespaces' bundle to carry old + new", follows)
    # In the cluster the kubelet would now update the mounted TLS secret (names of the
    # Service). This apiserver reaches the webhook by IP, so the same new CA issues the
    # certificate for 127.0.0.1; the server picks the files up without a restart.
    by_ip = tmp_path / "by-ip"
    _ok(
        run_cli(
            "cert", "issue", "--ca-dir", tmp_path / "new-ca", "--domain",
            "airtrust-inject.airtrust-system.svc", "--ip", "127.0.0.1", "--out", by_ip,
        )
    )  # fmt: skip
    second = by_ip
    for key in ("tls.key", "tls.crt"):
        shutil.copy(by_ip / key, webhook.folder / "wh" / key)
    from airtrust.probe.tls import Endpoint, fetch_chain

    new_serial = int(
        _openssl("x509", "-in", second / "tls.crt", "-noout", "-serial").stdout.split("=")[1], 16
    )
    wait_for(
        "the webhook serving the certificate from the new CA",
        lambda: fetch_chain(Endpoint("127.0.0.1", webhook.port))[0].serial_number == new_serial,
    )
    _create(webhook, _pod("after-ca-rotation", "team-a"))
    annotations = webhook.pod("team-a", "after-ca-rotation")["metadata"]["annotations"]
    assert "airtrust.io/injected" in annotations


def test_a_bare_url_renders_a_webhook_that_injects_and_doctor_names_a_wrong_path(
    webhook: Webhook,
) -> None:
    """`render --inject --url https://HOST:PORT` (no path, as a new user types it) once
    wrote a configuration the apiserver posted to "/", where the server answers 404:
    under failurePolicy Ignore every pod went through uninjected and nothing said so.
    Now the bare URL is the mutate path; a live configuration at another path (written
    by hand, or by that render) is named by doctor, whose kubectl patch fixes it."""
    import shlex

    bare = f"https://127.0.0.1:{webhook.port}"
    config = webhook.folder / "airtrust-path.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "domain": HOST,
                "ca": {"bundle": [str(webhook.folder / "qs" / "ca-bundle.pem")]},
                "kubeconfig": str(webhook.cluster.kubeconfig),
                "clusters": [{"context": "admin"}],
            }
        )
    )

    def inject_checks() -> list[dict[str, str]]:
        result = run_cli("doctor", "-c", config, "-o", "json")
        return [c for c in json.loads(result.out)["checks"] if c["name"] == "inject"]

    names = iter(range(1000))

    def injected() -> bool:
        name = f"path-{next(names)}"
        _create(webhook, _pod(name, "team-a"))
        return "airtrust.io/injected" in (
            webhook.pod("team-a", name)["metadata"].get("annotations") or {}
        )

    try:
        out = _render_and_apply(bare, webhook.cluster, webhook.folder, "Ignore")
        live = webhook.cluster.get("mutatingwebhookconfiguration", "airtrust-inject")
        assert live["webhooks"][0]["clientConfig"]["url"] == f"{bare}/mutate"
        _create(webhook, _pod("bare-url", "team-a"))
        annotations = webhook.pod("team-a", "bare-url")["metadata"].get("annotations") or {}
        assert "airtrust.io/injected" in annotations
        assert {c["status"] for c in inject_checks()} == {"ok"}
        # The configuration as the old render wrote it for a path of the user's own.
        rendered = next(out.glob("*-mutatingwebhookconfiguration.yaml"))
        doc = yaml.safe_load(rendered.read_text())
        doc["webhooks"][0]["clientConfig"]["url"] = f"{bare}/inject"
        webhook.cluster.kubectl(
            "apply", "--server-side", "--force-conflicts", "-f", "-",
            stdin=json.dumps(doc).encode(),
        )  # fmt: skip
        wait_for(
            "the apiserver posting to /inject (pods admitted uninjected)", lambda: not injected()
        )
        checks = inject_checks()
        said = "the webhook URL path is /inject; the server mutates only at /mutate"
        (wrong,) = [c for c in checks if c["evidence"].startswith(said)]
        assert (wrong["status"], wrong["target"]) == ("fail", f"{bare}/inject"), checks
        assert f"airtrust render --inject --url {bare} --failure-policy Ignore" in wrong["fix"]
        admission = [c for c in checks if c["target"] == "Pod team-a/(dry-run)"]
        assert admission and "posts to /inject, not /mutate" in admission[0]["evidence"], checks
        # The fix doctor gives, run as printed.
        patch = shlex.split(wrong["fix"].split(", or ", 1)[1])
        assert patch[0] == "kubectl"
        webhook.cluster.kubectl(*patch[1:])
        wait_for("pods injected again after doctor's kubectl patch", injected)
        assert {c["status"] for c in inject_checks()} == {"ok"}
    finally:
        _render_and_apply(webhook.url, webhook.cluster, webhook.folder, "Ignore")


def test_a_draining_replica_answers_unready_and_closes_each_connection_then_stops(
    tmp_path: Path,
) -> None:
    """SIGTERM with --drain: curl sees /readyz turn 503, reviews still answered (each
    with Connection: close, so the apiserver reconnects through the Service), and only
    then the listener gone (curl's own words)."""
    curl = require("curl")
    ca = make("drain test CA")
    leaf = make("localhost", issuer=ca, ca=False, dns=("localhost",))
    write(tmp_path / "ca.pem", ca.pem)
    write(tmp_path / "tls.crt", leaf.pem)
    write(tmp_path / "tls.key", leaf.key_pem).chmod(0o600)
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable, "-m", "airtrust", "inject", "serve",
            "--listen", f"127.0.0.1:{port}", "--no-distribute", "--drain", "4",
            "--cert", str(tmp_path / "tls.crt"), "--key", str(tmp_path / "tls.key"),
            "--ca", str(tmp_path / "ca.pem"),
        ],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    review = json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "d1",
                "kind": {"kind": "Pod"},
                "operation": "CREATE",
                "object": {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}},
            },
        }
    )

    def ask(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [curl, "-sS", "-i", "--max-time", "5", "--cacert", str(tmp_path / "ca.pem"),
             *args],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip

    base = f"https://localhost:{port}"
    try:
        wait_for_port(port, server, timeout=30)
        assert ask(f"{base}/readyz").stdout.startswith("HTTP/1.1 200")
        server.send_signal(signal.SIGTERM)
        wait_for("readyz to say draining", lambda: "draining" in ask(f"{base}/readyz").stdout)
        unready = ask(f"{base}/readyz").stdout
        assert unready.startswith("HTTP/1.1 503"), unready
        answered = ask("-X", "POST", "-H", "Content-Type: application/json", "-d", review,
                       f"{base}/mutate")  # fmt: skip
        head, _, body = answered.stdout.partition("\n\n")  # text mode: \r\n read as \n
        assert head.startswith("HTTP/1.1 200"), answered.stdout + answered.stderr
        assert "connection: close" in head.lower()
        response = json.loads(body)["response"]
        assert response["allowed"] is True and response["patchType"] == "JSONPatch"
        assert server.poll() is None  # still answering after SIGTERM
        server.wait(30)
        gone = ask(f"{base}/readyz")
        assert gone.returncode != 0 and "Failed to connect" in gone.stderr, gone.stderr
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
