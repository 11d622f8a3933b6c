"""Certificates airtrust issues, served by real TLS servers, judged by real clients.

Servers: ``openssl s_server`` and a Python ``ssl`` server, on 127.0.0.1.
Clients: ``openssl s_client -verify_return_error``, ``curl``, Python ``ssl``,
Java JSSE (with the JKS and PKCS#12 truststores airtrust writes) and Go's
crypto/tls. Each must accept with airtrust's bundle and refuse without it.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Result, run_cli
from tests.integration.conftest import assert_untrusted, require, tls_server

HOST = "runai.example.test"


@dataclass(frozen=True)
class Pki:
    name: str
    bundle: Path
    jks: Path
    p12: Path
    cert: Path
    key: Path


def _ok(result: Result) -> None:
    assert result.code == 0, (result.out, result.err)


@pytest.fixture(scope="module", params=["root-ec", "intermediate-rsa"])
def pki(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp(request.param)
    if request.param == "root-ec":
        _ok(run_cli("quickstart", "--domain", HOST, "--out", d / "qs"))
        bundle, cert, key = d / "qs" / "ca-bundle.pem", d / "qs" / "tls.crt", d / "qs" / "tls.key"
    else:
        _ok(
            run_cli(
                "ca", "create", "--out", d / "root", "--name", "Test Root", "--key-type", "rsa-3072"
            )
        )
        _ok(
            run_cli(
                "ca",
                "create",
                "--intermediate",
                "--parent",
                d / "root",
                "--out",
                d / "inter",
                "--name",
                "Test Issuing CA",
            )
        )
        _ok(
            run_cli(
                "cert",
                "issue",
                "--ca-dir",
                d / "inter",
                "--domain",
                HOST,
                "--out",
                d / "leaf",
                "--key-type",
                "rsa-2048",
            )
        )
        # Only the root is trusted: the server must send the intermediate itself.
        _ok(run_cli("bundle", "build", d / "root" / "ca.crt", "--out", d / "bundle.pem"))
        bundle, cert, key = d / "bundle.pem", d / "leaf" / "tls.crt", d / "leaf" / "tls.key"
        assert cert.read_text().count("BEGIN CERTIFICATE") == 2
    _ok(run_cli("bundle", "build", bundle, "--format", "jks", "--out", d / "trust.jks"))
    _ok(run_cli("bundle", "build", bundle, "--format", "pkcs12", "--out", d / "trust.p12"))
    return Pki(request.param, bundle, d / "trust.jks", d / "trust.p12", cert, key)


def _run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL, **kw
    )  # type: ignore[call-overload]


#: A client's verdict: (exit code, what it said); 0 when the handshake verified.
Verdict = tuple[int, str]


def _said(result: subprocess.CompletedProcess[str]) -> Verdict:
    return result.returncode, result.stdout + result.stderr


def openssl_client(port: int, trust: Pki | None, _tools: dict[str, Path]) -> Verdict:
    cmd = [
        require("openssl"),
        "s_client",
        "-connect",
        f"127.0.0.1:{port}",
        "-servername",
        HOST,
        "-verify_return_error",
        "-verify_hostname",
        HOST,
        "-brief",
    ]
    if trust is not None:
        cmd += ["-CAfile", str(trust.bundle)]
    return _said(_run(cmd))


def curl_client(port: int, trust: Pki | None, _tools: dict[str, Path]) -> Verdict:
    cmd = [
        require("curl"),
        "-sS",
        "-o",
        "/dev/null",
        "--resolve",
        f"{HOST}:{port}:127.0.0.1",
        f"https://{HOST}:{port}/",
    ]
    if trust is not None:
        cmd += ["--cacert", str(trust.bundle)]
    return _said(_run(cmd))


def python_client(port: int, trust: Pki | None, _tools: dict[str, Path]) -> Verdict:
    context = ssl.create_default_context(cafile=str(trust.bundle) if trust else None)
    try:
        with (
            socket.create_connection(("127.0.0.1", port), 10) as raw,
            context.wrap_socket(raw, server_hostname=HOST),
        ):
            return 0, ""
    except ssl.SSLCertVerificationError as exc:
        return 1, str(exc)


def _java(port: int, trust_args: list[str], tools: dict[str, Path]) -> Verdict:
    return _said(
        _run(
            [
                require("java"),
                *trust_args,
                "-cp",
                str(tools["java"]),
                "TlsClient",
                "127.0.0.1",
                str(port),
                HOST,
            ]
        )
    )


def java_jks_client(port: int, trust: Pki | None, tools: dict[str, Path]) -> Verdict:
    args = (
        []
        if trust is None
        else [
            f"-Djavax.net.ssl.trustStore={trust.jks}",
            "-Djavax.net.ssl.trustStoreType=JKS",
            "-Djavax.net.ssl.trustStorePassword=changeit",
        ]
    )
    return _java(port, args, tools)


def java_pkcs12_client(port: int, trust: Pki | None, tools: dict[str, Path]) -> Verdict:
    args = (
        []
        if trust is None
        else [
            f"-Djavax.net.ssl.trustStore={trust.p12}",
            "-Djavax.net.ssl.trustStoreType=PKCS12",
            "-Djavax.net.ssl.trustStorePassword=changeit",
        ]
    )
    return _java(port, args, tools)


def go_client(port: int, trust: Pki | None, tools: dict[str, Path]) -> Verdict:
    cmd = [str(tools["go"]), "-connect", f"127.0.0.1:{port}", "-servername", HOST]
    if trust is not None:
        cmd += ["-cafile", str(trust.bundle)]
    return _said(_run(cmd))


#: Each client, and whose words judge its refusal (UNTRUSTED in conftest.py).
CLIENTS = {
    "openssl": (openssl_client, "openssl"),
    "curl": (curl_client, "curl"),
    "python-ssl": (python_client, "python"),
    "java-jks": (java_jks_client, "java"),
    "java-pkcs12": (java_pkcs12_client, "java"),
    "go": (go_client, "go"),
}


@pytest.fixture(scope="module")
def tools(go_tlsclient: Path, java_tlsclient: Path) -> dict[str, Path]:
    return {"go": go_tlsclient, "java": java_tlsclient}


@pytest.mark.integration
@pytest.mark.parametrize("server_kind", ["openssl", "python"])
@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_client_trusts_with_bundle_and_refuses_without(
    pki: Pki, server_kind: str, client: str, tools: dict[str, Path]
) -> None:
    check, speaks = CLIENTS[client]
    with tls_server(server_kind, pki.cert, pki.key) as server:
        code, said = check(server.port, pki, tools)
        assert code == 0, f"{client} refused {pki.name} via {server_kind}: {said}"
        assert_untrusted(speaks, check(server.port, None, tools), f"{client} without the bundle")


@pytest.mark.integration
@pytest.mark.parametrize("server_kind", ["openssl", "python"])
def test_airtrust_reads_and_verifies_the_live_chain(pki: Pki, server_kind: str) -> None:
    with tls_server(server_kind, pki.cert, pki.key) as server:
        url = f"https://{HOST}:{server.port}"
        ok = run_cli("verify", "--ca", pki.bundle, url, "--connect-to", "127.0.0.1")
        assert ok.code == 0, ok.err
        assert HOST in ok.out
        wrong = run_cli(
            "verify",
            "--ca",
            pki.bundle,
            url,
            "--connect-to",
            "127.0.0.1",
            "--hostname",
            "other.example.test",
        )
        assert wrong.code == 1 and "verify-hostname-mismatch" in wrong.err
        shown = run_cli("inspect", url, "--connect-to", "127.0.0.1", "-o", "json")
        assert shown.code == 0, shown.err
        sent = pki.cert.read_text().count("BEGIN CERTIFICATE")
        assert len(json.loads(shown.out)["certificates"]) == sent
