"""Registry transport: TLS from our CA, htpasswd Basic auth, Bearer tokens, crashes."""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import json
import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from airtrust.registry.client import WORKER_AGENT
from tests.conftest import assert_one_line_error, run_cli
from tests.integration.conftest import require, wait_for
from tests.integration.registry import (
    KillSwitchProxy,
    Registry,
    gitsync_layout,
    make_tar,
    push_tar,
    started_registry,
    unpack,
)

pytestmark = pytest.mark.integration
USER, PASSWORD = "ci-robot", "s3cret-pass"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki") / "qs"
    assert run_cli("quickstart", "--domain", "registry.example.test", "--out", folder).code == 0
    tls = folder / "regtls"
    result = run_cli(
        "cert",
        "issue",
        "--ca-dir",
        folder,
        "--domain",
        "registry.example.test",
        "--ip",
        "127.0.0.1",
        "--out",
        tls,
    )
    assert result.code == 0, result.err
    return folder


def _crane_env(tmp: Path, pki: Path) -> dict[str, str]:
    docker = tmp / "docker"
    docker.mkdir(exist_ok=True)
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    return {
        "DOCKER_CONFIG": str(docker),
        "SSL_CERT_FILE": str(pki / "ca-bundle.pem"),
        "_AUTH": auth,
    }


def _login(env: dict[str, str], host: str) -> None:
    (Path(env["DOCKER_CONFIG"]) / "config.json").write_text(
        json.dumps({"auths": {host: {"auth": env["_AUTH"]}}})
    )


def worker_reads(tmp: Path) -> dict[str, str]:
    """A scan worker even for a small image, and a layer cache with nothing in it."""
    return {"AIRTRUST_SCAN_WORKERS": "1", "AIRTRUST_LAYER_CACHE": str(tmp / "cold-cache")}


def assert_worker_read_a_layer(reg: Registry) -> None:
    """The registry's log shows a layer GET by the worker, answered 200: the worker
    carried the credential and verified TLS as the parent's client does."""

    def worker_gets() -> list[int]:
        return [
            status
            for method, path, status, agent in reg.answers()
            if method == "GET" and "/blobs/" in path and agent == WORKER_AGENT
        ]

    wait_for("the scan worker's blob GET in the registry log", lambda: bool(worker_gets()))
    assert set(worker_gets()) == {200}


def test_tls_and_basic_auth(pki: Path, tmp_path: Path, go_tlsclient: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_bytes(
        subprocess.run(
            [require("htpasswd"), "-Bbn", USER, PASSWORD], capture_output=True, check=True
        ).stdout
    )
    tls = (pki / "regtls" / "tls.crt", pki / "regtls" / "tls.key")
    with started_registry(tmp_path / "reg", tls=tls, htpasswd=htpasswd, access_log=True) as reg:
        env = _crane_env(tmp_path, pki)
        _login(env, reg.host)
        push_tar(
            f"{reg.host}/base/app:1",
            make_tar(tmp_path / "l.tar", gitsync_layout(go_tlsclient)),
            env=env,
        )
        args = [
            "image",
            "patch",
            f"{reg.host}/base/app:1",
            "--ca",
            pki / "ca-bundle.pem",
            "--to",
            f"{reg.host}/patched/app:1",
        ]
        creds = ["--username", USER, "--password-env", "REG_PASS"]
        untrusted = run_cli(*args, *creds, env={"REG_PASS": PASSWORD, "HOME": str(tmp_path)})
        assert_one_line_error(untrusted, 3, "[registry-tls]", "--registry-ca")
        wrong = run_cli(
            *args,
            "--registry-ca",
            pki / "ca-bundle.pem",
            *creds,
            env={"REG_PASS": "nope", "HOME": str(tmp_path)},
        )
        assert_one_line_error(wrong, 3, "[registry-auth]")
        assert "nope" not in wrong.err and PASSWORD not in wrong.err
        ok = run_cli(
            *args,
            "--registry-ca",
            pki / "ca-bundle.pem",
            *creds,
            "-o",
            "json",
            env={"REG_PASS": PASSWORD, "HOME": str(tmp_path), **worker_reads(tmp_path)},
        )
        assert ok.code == 0, ok.err
        assert PASSWORD not in ok.out + ok.err
        assert_worker_read_a_layer(reg)  # with the Basic credential, over verified TLS
        # Credentials from the auth file (REGISTRY_AUTH_FILE), as podman/skopeo write it.
        from_file = run_cli(
            "image",
            "inspect",
            f"{reg.host}/patched/app:1",
            "--ca",
            pki / "ca-bundle.pem",
            "--registry-ca",
            pki / "ca-bundle.pem",
            env={"REGISTRY_AUTH_FILE": str(Path(env["DOCKER_CONFIG"]) / "config.json")},
        )
        assert from_file.code == 0, from_file.err
        # Without --registry-ca the host's trust store decides; SSL_CERT_FILE points
        # OpenSSL's default store at the CA, as installing it on the host would.
        host_store = run_cli(
            "image",
            "inspect",
            f"{reg.host}/patched/app:1",
            "--ca",
            pki / "ca-bundle.pem",
            env={
                "REGISTRY_AUTH_FILE": str(Path(env["DOCKER_CONFIG"]) / "config.json"),
                "SSL_CERT_FILE": str(pki / "ca-bundle.pem"),
            },
        )
        assert host_store.code == 0, host_store.err
        _credential_helpers(reg.host, pki, tmp_path)


HELPER = """#!/bin/sh
# docker's credential-helper protocol: `get`, the server on stdin, JSON on stdout.
[ "$1" = get ] || exit 1
read -r server
if [ "$server" = "{host}" ]; then
  printf '{{"ServerURL":"%s","Username":"{user}","Secret":"{secret}"}}' "$server"
else
  echo "credentials not found in native keychain"; exit 1
fi
"""


def _credential_helpers(host: str, pki: Path, tmp_path: Path) -> None:
    """Logins kept by a credential helper (credHelpers, credsStore), as docker login
    leaves them on desktops: the helper is asked, the secret never shows."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-airtrusttest"
    helper.write_text(HELPER.format(host=host, user=USER, secret=PASSWORD))
    helper.chmod(0o755)
    docker = tmp_path / "helper-config"
    docker.mkdir()
    env = {"DOCKER_CONFIG": str(docker), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    args = [
        "image",
        "inspect",
        f"{host}/patched/app:1",
        "--ca",
        pki / "ca-bundle.pem",
        "--registry-ca",
        pki / "ca-bundle.pem",
    ]
    for config in ({"credHelpers": {host: "airtrusttest"}}, {"credsStore": "airtrusttest"}):
        (docker / "config.json").write_text(json.dumps(config))
        result = run_cli(*args, env=env)
        assert result.code == 0, (config, result.err)
        assert PASSWORD not in result.out + result.err
    # A store with nothing for this registry: anonymous, which this registry refuses.
    empty = bin_dir / "docker-credential-empty"
    empty.write_text(HELPER.format(host="elsewhere:5000", user="x", secret="y"))
    empty.chmod(0o755)
    (docker / "config.json").write_text(json.dumps({"credsStore": "empty"}))
    assert_one_line_error(run_cli(*args, env=env), 3, "[registry-auth]")
    (docker / "config.json").write_text(json.dumps({"credsStore": "missing"}))
    missing = run_cli(*args, env=env)
    assert_one_line_error(missing, 2, "docker-credential-missing", "not on PATH")


class _TokenServer(http.server.BaseHTTPRequestHandler):
    """Issues real ES256 JWTs (x5c) in the format distribution verifies."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    issued: list[str]

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.end_headers()
            return
        query = parse_qs(urlsplit(self.path).query)
        access = []
        for scope in query.get("scope", []):
            for item in scope.split(" "):
                kind, name, actions = item.split(":")
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
        self.issued.append(" ".join(query.get("scope", [])))
        now = int(dt.datetime.now(dt.UTC).timestamp())
        header = {
            "typ": "JWT",
            "alg": "ES256",
            "x5c": [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()],
        }
        claims = {
            "iss": "airtrust-test-issuer",
            "sub": USER,
            "aud": query["service"][0],
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(
            self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        )
        token = f"{signing_input}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
        body = json.dumps({"token": token}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def token_service(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name.from_rfc4514_string("CN=airtrust test token signer")
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    bundle = tmp_path / "token-root.pem"
    bundle.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    issued: list[str] = []
    handler = type("Handler", (_TokenServer,), {"key": key, "cert": cert, "issued": issued})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/token", bundle, issued
    finally:
        server.shutdown()
        server.server_close()


def test_bearer_token_flow(
    pki: Path, tmp_path: Path, go_tlsclient: Path, token_service: tuple[str, Path, list[str]]
) -> None:
    realm, root, issued = token_service
    token = {
        "realm": realm,
        "service": "airtrust-test-registry",
        "issuer": "airtrust-test-issuer",
        "rootcertbundle": str(root),
    }
    with started_registry(tmp_path / "reg", token=token, access_log=True) as reg:
        env = _crane_env(tmp_path, pki)
        _login(env, reg.host)
        push_tar(
            f"{reg.host}/base/app:1",
            make_tar(tmp_path / "l.tar", gitsync_layout(go_tlsclient)),
            env=env,
        )
        anonymous = run_cli(
            "image",
            "inspect",
            f"{reg.host}/base/app:1",
            "--ca",
            pki / "ca-bundle.pem",
            env={"HOME": str(tmp_path)},
        )
        assert_one_line_error(anonymous, 3, "[registry-auth]")
        issued.clear()
        ok = run_cli(
            "image",
            "patch",
            f"{reg.host}/base/app:1",
            "--ca",
            pki / "ca-bundle.pem",
            "--to",
            f"{reg.host}/patched/app:1",
            "--username",
            USER,
            "--password-env",
            "P",
            "-o",
            "json",
            env={"P": PASSWORD, **worker_reads(tmp_path)},
        )
        assert ok.code == 0, ok.err
        assert_worker_read_a_layer(reg)  # with the bearer token the parent was issued
        assert any("repository:patched/app:pull,push" in s for s in issued)
        assert any("repository:base/app:pull" in s for s in issued)  # the mount's source


def test_registry_killed_mid_push_then_rerun_converges(
    pki: Path, tmp_path: Path, go_tlsclient: Path
) -> None:
    with started_registry(tmp_path / "reg") as reg:
        push_tar(
            f"{reg.host}/base/app:1", make_tar(tmp_path / "l.tar", gitsync_layout(go_tlsclient))
        )
        proxy = KillSwitchProxy(reg)
        try:
            crashed = run_cli(
                "image",
                "patch",
                f"{proxy.host}/base/app:1",
                "--ca",
                pki / "ca-bundle.pem",
                "--to",
                f"{proxy.host}/patched/app:1",
            )
        finally:
            proxy.close()
        assert proxy.fired.is_set(), "the upload never reached the kill switch"
        assert crashed.code == 3 and "Traceback" not in crashed.err, crashed.err
        reg.start()  # same storage, same port
        tag = subprocess.run(
            [
                require("skopeo"),
                "inspect",
                "--tls-verify=false",
                f"docker://{reg.host}/patched/app:1",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert tag.returncode != 0, "the tag was written although the push was interrupted"
        assert "manifest unknown" in tag.stderr, tag.stderr  # not some other failure
        again = run_cli(
            "image",
            "patch",
            f"{reg.host}/base/app:1",
            "--ca",
            pki / "ca-bundle.pem",
            "--to",
            f"{reg.host}/patched/app:1",
        )
        assert again.code == 0, again.err
        rootfs = unpack(f"{reg.host}/patched/app:1", tmp_path / "u")
        assert (pki / "ca-bundle.pem").read_bytes() in (
            rootfs / "etc/ssl/certs/ca-certificates.crt"
        ).read_bytes()


def test_chunked_upload_and_mount_fallback(tmp_path: Path) -> None:
    """A 20 MiB blob goes up in chunks; a mount from a repository without the blob gets the
    registry's 202 answer and falls back to an upload."""
    from airtrust.registry.client import RegistryClient, sha256_digest

    data = os.urandom(20 * 1024 * 1024)
    digest = sha256_digest(data)
    with started_registry(tmp_path / "reg") as reg, RegistryClient(reg.host) as client:
        client.ping()
        assert client.ensure_blob("big/one", digest, source=None, data=lambda: data) == "uploaded"
        assert client.bytes_uploaded == len(data)
        assert client.blob_exists("big/one", digest)
        assert client.blob("big/one", digest) == data
        assert client.mount_blob("big/two", digest, "big/one") is True
        small = b"not anywhere yet"
        assert client.mount_blob("big/three", sha256_digest(small), "big/one") is False
        assert (
            client.ensure_blob(
                "big/three", sha256_digest(small), source="big/one", data=lambda: small
            )
            == "uploaded"
        )
        assert client.blob("big/three", sha256_digest(small)) == small
