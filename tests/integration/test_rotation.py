"""CA rotation on a real apiserver while a TLS client keeps connecting, never failing."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from airtrust.kube.api import KubeAPI
from airtrust.pki.bundle import read_certificates
from tests.conftest import assert_one_line_error, run_cli
from tests.integration.conftest import wait_for
from tests.integration.kube import KubeCluster
from tests.integration.test_kube import DOMAIN, secrets, write_config

pytestmark = pytest.mark.integration


class SwappableServer:
    """A TLS server whose certificate can be replaced live, as an ingress reloads one."""

    def __init__(self, cert_pem: bytes, key_pem: bytes) -> None:
        self.context = self._context(cert_pem, key_pem)
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(32)
        self.port = self.listener.getsockname()[1]
        self.running = True
        threading.Thread(target=self._serve, daemon=True).start()

    @staticmethod
    def _context(cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "c.pem").write_bytes(cert_pem)
            (Path(tmp) / "k.pem").write_bytes(key_pem)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(Path(tmp) / "c.pem", Path(tmp) / "k.pem")
        return context

    def swap(self, cert_pem: bytes, key_pem: bytes) -> None:
        self.context = self._context(cert_pem, key_pem)

    def _serve(self) -> None:
        while self.running:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    if tls.recv(4) == b"GET ":
                        tls.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            except (OSError, ssl.SSLError):
                pass

    def close(self) -> None:
        self.running = False
        self.listener.close()


class ClientLoop:
    """Reads the distributed bundle from the cluster and connects, over and over."""

    def __init__(self, api: KubeAPI, port: int) -> None:
        self.api, self.port = api, port
        self.ok = 0
        self.failures: list[str] = []
        self.bundles: set[int] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            secret = self.api.get("v1", "secrets", "runai", "runai-ca-cert")
            bundle = base64.b64decode(secret["data"]["runai-ca.pem"]) if secret else b""
            self.bundles.add(len(read_certificates(bundle, "live")) if bundle else 0)
            context = ssl.create_default_context(cadata=bundle.decode() or None)
            try:
                with (
                    socket.create_connection(("127.0.0.1", self.port), 5) as raw,
                    context.wrap_socket(raw, server_hostname=DOMAIN) as tls,
                ):
                    tls.send(b"x")
                self.ok += 1
            except (OSError, ssl.SSLError) as exc:
                self.failures.append(str(exc))
            self.stop.wait(0.05)  # paced, and stops at once when told

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(10)


def _live_tls(cluster: KubeCluster) -> tuple[bytes, bytes]:
    data = secrets(cluster)[("runai-backend", "runai-backend-tls")]["data"]
    return base64.b64decode(data["tls.crt"]), base64.b64decode(data["tls.key"])


@pytest.fixture
def setup(cluster: KubeCluster, tmp_path: Path) -> Iterator[tuple[Path, Path, SwappableServer]]:
    pki = tmp_path / "old"
    assert run_cli("quickstart", "--domain", DOMAIN, "--out", pki).code == 0
    config = write_config(
        tmp_path,
        pki,
        cluster.kubeconfig,
        issue_from=str(pki),
        clusters=[{"context": "admin", "domain": "gpu1.example.test"}],
    )
    assert run_cli("apply", "-c", config).code == 0
    server = SwappableServer(*_live_tls(cluster))
    new = tmp_path / "new"
    assert run_cli("ca", "create", "--out", new, "--name", "Next Root CA").code == 0
    try:
        yield config, new, server
    finally:
        server.close()


def test_rotation_keeps_every_connection_trusted(
    cluster: KubeCluster, setup: tuple[Path, Path, SwappableServer]
) -> None:
    config, new, server = setup
    api = KubeAPI.connect("admin", kubeconfig=cluster.kubeconfig)
    loop = ClientLoop(api, server.port)
    connect = ["--connect-to", f"{DOMAIN}:443:127.0.0.1:{server.port}"]

    def connections(more: int) -> None:
        """Let the client loop make ``more`` successful connections (or fail trying)."""
        goal = loop.ok + more
        wait_for(f"{more} more client connections", lambda: loop.ok >= goal or bool(loop.failures))

    try:
        connections(3)
        started = run_cli("rotate", "start", "--new-ca", new, "-c", config, "-o", "json")
        assert started.code == 0, started.err
        assert json.loads(started.out)["phase"] == "started"
        assert len(json.loads(started.out)["old"]) == len(json.loads(started.out)["new"]) == 1
        new_root = read_certificates((new / "ca.crt").read_bytes(), "new")[0].certificate
        cluster_tls = secrets(cluster)[("runai", "runai-cluster-domain-tls-secret")]
        leaf = read_certificates(base64.b64decode(cluster_tls["data"]["tls.crt"]), "leaf")
        assert leaf[0].certificate.issuer == new_root.subject, "cluster TLS not re-issued"
        # The server still sends the old certificate: finish must refuse.
        refused = run_cli("rotate", "finish", "-c", config, *connect)
        assert_one_line_error(refused, 1, "[rotation-not-ready]", "new CA")
        doctor = json.loads(run_cli("doctor", "-c", config, *connect, "-o", "json").out)
        rotation = next(c for c in doctor["checks"] if c["name"] == "rotation")
        assert rotation["status"] == "warn" and "expected" in rotation["evidence"]
        connections(3)
        server.swap(*_live_tls(cluster))  # the ingress reloads the re-issued certificate
        connections(3)
        finished = run_cli("rotate", "finish", "-c", config, *connect, "-o", "json")
        assert finished.code == 0, finished.err
        connections(3)
    finally:
        loop.finish()
        api.close()
    assert loop.failures == [], loop.failures[:3]
    assert loop.ok > 20 and loop.bundles >= {1, 2}
    live = base64.b64decode(secrets(cluster)[("runai", "runai-ca-cert")]["data"]["runai-ca.pem"])
    assert live == (new / "ca.crt").read_bytes()
    status = json.loads(run_cli("rotate", "status", "-c", config, "-o", "json").out)
    assert status["phase"] == "finished"
    # The config still names the old files, yet plan follows the finished rotation.
    plan = run_cli("plan", "-c", config, "--exit-code")
    assert plan.code == 0, plan.out + plan.err
    final = json.loads(run_cli("doctor", "-c", config, *connect, "-o", "json").out)["checks"]
    # No server answers for the cluster domain here; everything else must pass.
    assert [c for c in final if c["status"] == "fail" and c["name"] != "cluster-endpoint"] == []
    # A cluster TLS secret issued again later must not come from the removed CA, which
    # issue_from in the config still names: refused in one line, nothing written.
    cluster.kubectl("-n", "runai", "delete", "secret", "runai-cluster-domain-tls-secret")
    refused = run_cli("apply", "-c", config)
    assert_one_line_error(
        refused, 2, "runai/runai-cluster-domain-tls-secret", "issue_from", "new CA's folder"
    )
    assert ("runai", "runai-cluster-domain-tls-secret") not in secrets(cluster)
    text = config.read_text()
    config.write_text(text.replace(f"issue_from: {new.parent / 'old'}", f"issue_from: {new}"))
    assert run_cli("apply", "-c", config).code == 0
    again = secrets(cluster)[("runai", "runai-cluster-domain-tls-secret")]
    leaf = read_certificates(base64.b64decode(again["data"]["tls.crt"]), "leaf")[0].certificate
    assert leaf.issuer == new_root.subject


def test_rotation_status_and_errors(
    cluster: KubeCluster, setup: tuple[Path, Path, SwappableServer]
) -> None:
    config, new, _ = setup
    assert json.loads(run_cli("rotate", "status", "-c", config, "-o", "json").out) == {
        "phase": "none"
    }
    assert_one_line_error(run_cli("rotate", "finish", "-c", config), 2, "no rotation")
    assert_one_line_error(
        run_cli("rotate", "start", "--new-ca", new.parent / "missing", "-c", config), 2, "CA folder"
    )
    assert ("runai", "runai-ca-cert") in secrets(cluster)


def test_rotation_repatches_the_sidecar_images(
    cluster: KubeCluster, tmp_path: Path, go_tlsclient: Path
) -> None:
    from tests.integration.kube import install_patched_sidecars
    from tests.integration.registry import (
        gitsync_layout,
        make_tar,
        openssl_verifies,
        started_registry,
        unpack,
    )

    old = tmp_path / "old"
    assert run_cli("quickstart", "--domain", DOMAIN, "--out", old).code == 0
    new = tmp_path / "new"
    assert run_cli("ca", "create", "--out", new, "--name", "Next Root CA").code == 0
    with started_registry(tmp_path / "registry") as registry:
        tar = make_tar(tmp_path / "l.tar", gitsync_layout(go_tlsclient))
        references = install_patched_sidecars(cluster, registry, tar, old / "ca-bundle.pem")
        config = write_config(tmp_path, old, cluster.kubeconfig, images={"references": references})
        assert run_cli("apply", "-c", config).code == 0
        started = run_cli(
            "rotate", "start", "--new-ca", new, "-c", config, "--keep-tls", "-o", "json"
        )
        assert started.code == 0, started.err
        images = json.loads(started.out)["images"]
        spec = cluster.get("runaiconfig", "runai", "-n", "runai")["spec"]
        assert {spec["s3"]["image"], spec["git"]["image"]} == set(images.values())
        both = old / "ca-bundle.pem", new / "ca.crt"
        for reference in images.values():
            for ca in both:
                checked = run_cli("image", "inspect", reference, "--ca", ca)
                assert checked.code == 0, checked.err
        # Judged without airtrust: each image unpacked as a runtime does (skopeo + umoci),
        # its bundle given to openssl with a certificate of each CA. The images patched
        # before the rotation are the control: they trust only the old CA.
        new_leaf = tmp_path / "new-leaf"
        issued = run_cli("cert", "issue", "--ca-dir", new, "--domain", DOMAIN, "--out", new_leaf)
        assert issued.code == 0, issued.err
        store = "etc/ssl/certs/ca-certificates.crt"
        for i, reference in enumerate(images.values()):
            bundle = unpack(reference, tmp_path / f"rotated-{i}") / store
            assert openssl_verifies(bundle, old / "tls.crt"), reference
            assert openssl_verifies(bundle, new_leaf / "tls.crt"), reference
        for i, reference in enumerate(references.values()):
            bundle = unpack(reference, tmp_path / f"before-{i}") / store
            assert openssl_verifies(bundle, old / "tls.crt"), reference
            assert not openssl_verifies(bundle, new_leaf / "tls.crt"), reference
        # --keep-tls: the TLS secret still chains to the old CA only, so finish waits.
        assert_one_line_error(
            run_cli("rotate", "finish", "-c", config),
            1,
            "[rotation-not-ready]",
            "the control-plane TLS secret does not chain to the new CA",
        )
