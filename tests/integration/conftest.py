"""Real peers for integration tests: TLS servers and clients, built or started here.

Nothing is faked: a missing tool fails the test with the reason and the fix,
it is never skipped.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.server
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

CACHE = Path(os.environ.get("AIRTRUST_CACHE", Path.home() / ".cache" / "airtrust"))
TOOLS = ROOT / "tests" / "tools"


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed; run .ci/run (or apt-get install it) first")
    return path


def _source_key(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:16]


@pytest.fixture(scope="session")
def go_tlsclient() -> Path:
    """tests/tools/tlsclient built with the machine's Go, cached by source hash."""
    require("go")
    src = TOOLS / "tlsclient"
    out = CACHE / "test-tools" / _source_key(*src.iterdir()) / "tlsclient"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            ["go", "build", "-o", str(out), "."],
            cwd=src,
            capture_output=True,
            text=True,
            env={**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false"},
            check=False,
        )
        if proc.returncode != 0:
            pytest.fail(f"building the Go TLS client failed: {proc.stderr}")
    return out


@pytest.fixture(scope="session")
def java_tlsclient() -> Path:
    """Folder holding the compiled TlsClient.class."""
    require("javac")
    src = TOOLS / "TlsClient.java"
    out = CACHE / "test-tools" / _source_key(src) / "java"
    if not (out / "TlsClient.class").exists():
        out.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            ["javac", "-d", str(out), str(src)], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            pytest.fail(f"compiling the Java TLS client failed: {proc.stderr}")
    return out


@pytest.fixture(scope="session")
def fetch_java_classes() -> Path:
    """Folder holding Fetch.class (tests/tools/Fetch.java, an HttpsURLConnection GET),
    compiled once for every test that runs it in an image, cached by source hash.
    ``--release 17``: the images' JRE is Debian bookworm's, older than this machine's javac.
    Copy it into a rootfs; never write into it."""
    require("javac")
    src = TOOLS / "Fetch.java"
    out = CACHE / "test-tools" / _source_key(src) / "fetch-java17"
    if not (out / "Fetch.class").exists():
        tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        proc = subprocess.run(
            ["javac", "--release", "17", "-d", str(tmp), str(src)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            pytest.fail(f"compiling tests/tools/Fetch.java failed: {proc.stderr}")
        shutil.rmtree(out, ignore_errors=True)
        tmp.replace(out)
    return out


def build_offline_bundle(out: Path, *extra: str) -> Path:
    """``scripts/release OUT EXTRA...`` (the connected side: it downloads wheels from the
    package index); the archive it wrote."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "release"), str(out), *extra],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"scripts/release failed: {proc.stderr[-2000:] or proc.stdout[-2000:]}")
    (archive,) = out.glob("airtrust-offline-*.tar.gz")
    return archive


#: Where the session's bundle keeps the image's Debian base between runs (release's
#: --base-cache: reused while the suite's InRelease is the same). The second build of
#: test_two_builds_of_one_commit_are_the_same runs mmdebstrap afresh.
RELEASE_BASE_CACHE = CACHE / "release-base"


@pytest.fixture(scope="session")
def offline_bundle_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default offline bundle (linux x86_64 + aarch64, CPython 3.11-3.13, the chart
    and the image) as scripts/release writes it, built once per run: a build downloads
    ~75 wheels and takes a minute or two, and every test that needs a bundle reads the
    same one. Read-only.

    Under pytest-xdist every worker is a session of its own; the first to get here
    builds into the run's shared temporary folder (under a lock), the others wait for
    it and read the same archive, so a run builds one bundle whatever its workers."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return build_offline_bundle(
            tmp_path_factory.mktemp("release") / "dist", "--base-cache", str(RELEASE_BASE_CACHE)
        )
    shared = tmp_path_factory.getbasetemp().parent / "shared-offline-bundle"
    shared.mkdir(exist_ok=True)
    with (shared / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = shared / "archive"
        if not done.exists():
            archive = build_offline_bundle(shared / "dist", "--base-cache", str(RELEASE_BASE_CACHE))
            done.write_text(str(archive))
        return Path(done.read_text())


@pytest.fixture(scope="session")
def offline_bundle(offline_bundle_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`offline_bundle_archive` unpacked: the folder holding install.sh, wheels/,
    SHA256SUMS and the SBOM. Read-only: install into a folder of the test's own."""
    out = tmp_path_factory.mktemp("offline-bundle")
    with tarfile.open(offline_bundle_archive) as tar:
        tar.extractall(out, filter="data")
    (folder,) = out.iterdir()
    return folder


#: How often deadline loops look again (never a wait for its own sake).
POLL = 0.05


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(
    port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 15
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            pytest.fail(f"server exited early ({proc.returncode}): {out}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(POLL)
    pytest.fail(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def wait_for(what: str, condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds.
    Tests wait on what they need to see, never for a fixed time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(POLL)
    pytest.fail(f"not within {timeout} s: {what}")


#: What each client says, in its own words, when it cannot verify the server's
#: certificate because it does not know the issuer (the local CA is not in its store).
#: A client that "fails" for any other reason (not installed, no route, a typo in the
#: test) has not shown that it distrusts the CA, so refusals are judged by these texts.
UNTRUSTED = {
    # curl with OpenSSL: exit 60.
    "curl": "SSL certificate problem: unable to get local issuer certificate",
    # Debian's git is built on libcurl-gnutls; this is GnuTLS's verification failure.
    "git": "server certificate verification failed",
    # CPython's ssl (urllib, requests, pip: "[SSL: CERTIFICATE_VERIFY_FAILED] ...").
    "python": "CERTIFICATE_VERIFY_FAILED",
    # JSSE (HttpsURLConnection, SSLSocket): the CertPath builder found no trust anchor.
    "java": "PKIX path building failed",
    # Node's error code when the server sends only its leaf (the tests' servers do).
    "node": "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
    # grpcio (BoringSSL under gRPC core's TSI).
    "grpc": (
        "Ssl handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1000007d:"
        "SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED"
    ),
    # Go's crypto/x509 (git-sync, goofys, tests/tools/tlsclient).
    "go": "x509: certificate signed by unknown authority",
    # openssl s_client -verify_return_error.
    "openssl": "verify error:num=20:unable to get local issuer certificate",
    # openssl verify (X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY).
    "openssl verify": "unable to get local issuer certificate",
}


def assert_untrusted(
    client: str, ran: subprocess.CompletedProcess[str] | tuple[int, str], what: str = ""
) -> None:
    """``ran`` (a process, or its exit code and output) failed because ``client`` does not
    trust the server's certificate: a non-zero exit *and* the client's own words for it."""
    code, said = (ran.returncode, ran.stdout + ran.stderr) if not isinstance(ran, tuple) else ran
    label = what or client
    assert code != 0, f"{label} trusted the server: {said[-1500:]}"
    assert UNTRUSTED[client] in said, (
        f"{label} failed, but not with {client}'s certificate error "
        f"{UNTRUSTED[client]!r}: {said[-1500:]}"
    )


@dataclass(frozen=True)
class Server:
    kind: str
    port: int


@contextlib.contextmanager
def openssl_server(
    cert: Path, key: Path, *, extra: tuple[str, ...] = (), www_root: Path | None = None
) -> Iterator[Server]:
    """``openssl s_server`` on 127.0.0.1 serving ``cert`` (leaf + chain) with ``-www`` (a
    status page for any path), or with ``-WWW`` serving the files under ``www_root``."""
    require("openssl")
    port = free_port()
    # s_server sends only the first certificate of -cert; the rest goes in -cert_chain.
    blocks = cert.read_text().split("-----END CERTIFICATE-----")
    chain_args: list[str] = []
    if len(blocks) > 2:
        chain = cert.with_name(cert.name + ".chain-only.pem")
        chain.write_text("-----END CERTIFICATE-----".join(blocks[1:]).lstrip())
        chain_args = ["-cert_chain", str(chain)]
    proc = subprocess.Popen(
        [
            "openssl",
            "s_server",
            "-accept",
            f"127.0.0.1:{port}",
            "-cert",
            str(cert),
            *chain_args,
            "-key",
            str(key),
            "-WWW" if www_root else "-www",
            "-quiet",
            *extra,
        ],
        cwd=www_root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, proc)
        yield Server("openssl", port)
    finally:
        proc.terminate()
        proc.wait(10)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextlib.contextmanager
def python_server(cert: Path, key: Path) -> Iterator[Server]:
    """A Python ``ssl`` HTTPS server in a thread on 127.0.0.1."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Server("python", int(httpd.server_address[1]))
    finally:
        httpd.shutdown()
        httpd.server_close()


@contextlib.contextmanager
def tls_server(kind: str, cert: Path, key: Path) -> Iterator[Server]:
    factory = openssl_server if kind == "openssl" else python_server
    with factory(cert, key) as server:
        yield server


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A fresh real kube-apiserver + etcd on 127.0.0.1 (context 'admin')."""
    from tests.integration.kube import started_cluster

    with started_cluster(tmp_path_factory.mktemp("cluster")) as c:
        yield c


#: The name the image tests' TLS servers answer to (each chroot maps it to 127.0.0.1).
TLS_HOST = "tls.example.test"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real docker-registry on 127.0.0.1 for the module (modules may define their own)."""
    from tests.integration.registry import started_registry

    with started_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`airtrust quickstart` for TLS_HOST: the local CA, its bundle and a server
    certificate (modules may define their own)."""
    from tests.conftest import run_cli

    folder = tmp_path_factory.mktemp("pki") / "qs"
    result = run_cli("quickstart", "--domain", TLS_HOST, "--out", folder)
    assert result.code == 0, result.err
    return folder


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One apiserver for the tests of a module that isolate themselves by namespace or
    user and change nothing cluster-wide (starting one costs ~5 s; a fresh one per test
    stays the rule wherever a test needs an empty cluster). A test that makes namespaces
    takes :func:`tidy_cluster`, which deletes them after it."""
    from tests.integration.kube import started_cluster

    with started_cluster(tmp_path_factory.mktemp("shared-cluster")) as c:
        yield c


#: Cluster-wide kinds a test on :func:`tidy_cluster` must leave as it found them.
CLUSTER_WIDE = (
    "namespaces,clusterroles,clusterrolebindings,mutatingwebhookconfigurations,"
    "validatingwebhookconfigurations,customresourcedefinitions"
)


@pytest.fixture
def tidy_cluster(shared_cluster: object) -> Iterator[object]:
    """The module's :func:`shared_cluster`, left as the test found it: the namespaces the
    test made (fixed names such as runai included) are deleted and waited for, so the
    next test, in any order, starts without them. A test may make nothing cluster-wide
    but namespaces: anything else it left (a ClusterRole, a webhook, a CRD) is removed
    and fails the test, which then belongs on its own ``cluster``."""
    from tests.integration.kube import KubeCluster

    assert isinstance(shared_cluster, KubeCluster)
    cluster = shared_cluster

    def names() -> set[str]:
        listed = cluster.kubectl("get", CLUSTER_WIDE, "-o", "name").stdout.decode()
        return set(listed.split())

    before = names()
    yield cluster
    made = names() - before
    namespaces = sorted(n for n in made if n.startswith("namespace/"))
    others = sorted(made - set(namespaces))
    if made:
        cluster.kubectl("delete", "--wait=false", *others, *namespaces)
    wait_for(
        f"the test's namespaces deleted: {namespaces}",
        lambda: not (names() & set(namespaces)),
        timeout=90,
    )
    assert not others, f"changed the shared cluster beyond its namespaces: {others}"


@pytest.fixture
def second_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from tests.integration.kube import started_cluster

    with started_cluster(tmp_path_factory.mktemp("cluster2")) as c:
        yield c


class _GitAndOk(http.server.BaseHTTPRequestHandler):
    """Smart-HTTP git via the real ``git http-backend`` (CGI), and 'ok' for anything else."""

    git_root = ""

    def log_message(self, *args: object) -> None:
        pass

    def _cgi(self, body: bytes = b"") -> None:
        path, _, query = self.path.partition("?")
        env = {
            "GIT_PROJECT_ROOT": self.git_root,
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REQUEST_METHOD": self.command,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
        }
        proc = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
        )
        head, _, payload = proc.stdout.partition(b"\r\n\r\n")
        status = 200
        headers = []
        for line in head.decode().split("\r\n"):
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.strip().split()[0])
            elif key:
                headers.append((key, value.strip()))
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        if ".git/" in self.path:
            self._cgi()
            return
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self._cgi(self.rfile.read(length))


def bare_repository(root: Path, text: str) -> Path:
    """``root/repo.git`` with one commit on main holding README = ``text``."""
    subprocess.run(["git", "init", "-q", "--bare", str(root / "repo.git")], check=True)
    work = root / "work"
    subprocess.run(
        ["git", "clone", "-q", str(root / "repo.git"), str(work)], check=True, capture_output=True
    )
    (work / "README").write_text(text)
    git = ["git", "-C", str(work), "-c", "user.email=t@example.test", "-c", "user.name=t"]
    subprocess.run([*git, "add", "README"], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    subprocess.run([*git, "push", "-q", "origin", "HEAD:main"], check=True, capture_output=True)
    subprocess.run(
        ["git", "-C", str(root / "repo.git"), "symbolic-ref", "HEAD", "refs/heads/main"],
        check=True,
    )
    return root / "repo.git"


@contextlib.contextmanager
def git_https_server(cert: Path, key: Path, git_root: Path) -> Iterator[Server]:
    """HTTPS on 127.0.0.1 serving the bare repositories under ``git_root``."""
    require("git")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    handler = type("Handler", (_GitAndOk,), {"git_root": str(git_root)})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Server("git-https", int(httpd.server_address[1]))
    finally:
        httpd.shutdown()
        httpd.server_close()
