"""The CLI as users meet it: exit codes, one-line errors, nothing half-written, no key leaks."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import DATA, Result, assert_one_line_error, run_cli
from tests.unit.test_bundle import BAD_FILES, OK_FILES

CORPUS = DATA / "bad-input"
pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("name", "reference"), sorted(BAD_FILES.items()))
def test_bad_bundle_input_changes_nothing(name: str, reference: str, tmp_path: Path) -> None:
    out = tmp_path / "bundle.pem"
    result = run_cli("bundle", "build", CORPUS / name, "--out", out)
    assert_one_line_error(result, 2, f"[{reference}]", name)
    assert list(tmp_path.iterdir()) == []


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(folder)): (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize(("name", "reference"), sorted(BAD_FILES.items()))
def test_bad_input_leaves_an_existing_bundle_byte_identical(
    name: str, reference: str, tmp_path: Path
) -> None:
    out = tmp_path / "bundle.pem"
    assert run_cli("bundle", "build", CORPUS / "ok-two-cas.pem", "--out", out).code == 0
    before = _snapshot(tmp_path)
    result = run_cli("bundle", "build", CORPUS / name, "--out", out, "--force")
    assert_one_line_error(result, 2, f"[{reference}]", name)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("args", "reference"),
    [
        (["--domain", "bad_domain..example"], "bad-certificate-request"),
        (["--domain", "ok.example.test", "--days", "0"], "bad-certificate-request"),
        (["--domain", "ok.example.test", "--ip", "999.1.1.1"], "bad-certificate-request"),
        (["--domain", "ok.example.test", "--ca-dir", "/nonexistent/ca"], "not-a-ca-folder"),
    ],
)
def test_bad_input_leaves_an_existing_cert_folder_byte_identical(
    args: list[str], reference: str, tmp_path: Path
) -> None:
    assert run_cli("ca", "create", "--out", tmp_path / "ca").code == 0
    out = tmp_path / "tls"
    issued = run_cli(
        "cert", "issue", "--ca-dir", tmp_path / "ca", "--domain", "a.test", "--out", out
    )
    assert issued.code == 0, issued.err
    before = _snapshot(out)
    extra = [] if "--ca-dir" in args else ["--ca-dir", str(tmp_path / "ca")]
    result = run_cli("cert", "issue", *extra, *args, "--out", out, "--force")
    assert result.code == 2 and "Traceback" not in result.err, result.err
    assert f"[{reference}]" in result.err, result.err
    assert _snapshot(out) == before
    assert stat.S_IMODE((out / "tls.key").stat().st_mode) == 0o600


@pytest.mark.parametrize("name", sorted(OK_FILES))
def test_tolerated_inputs_build(name: str, tmp_path: Path) -> None:
    result = run_cli("bundle", "build", CORPUS / name, "--out", tmp_path / "b.pem", "-o", "json")
    assert result.code == 0, result.err
    assert len(json.loads(result.out)["certificates"]) == OK_FILES[name]
    text = (tmp_path / "b.pem").read_bytes()
    assert b"\r" not in text and not text.startswith(b"\xef\xbb\xbf")


def test_ten_thousand_certificates_are_refused(tmp_path: Path) -> None:
    """Too big for a Kubernetes Secret (1 MiB): refused, and nothing written."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    parts = []
    for i in range(10_000):
        name = x509.Name.from_rfc4514_string(f"CN=Bulk CA {i}")
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(i + 1)
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=9))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        parts.append(cert.public_bytes(serialization.Encoding.PEM))
    big = tmp_path / "in" / "big.pem"
    big.parent.mkdir()
    big.write_bytes(b"".join(parts))
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli("bundle", "build", big, "--out", out / "b.pem")
    assert_one_line_error(result, 2, "[bundle-too-large]", "10000 certificates")
    assert list(out.iterdir()) == []


def test_stdin_and_yaml_output(tmp_path: Path) -> None:
    data = (CORPUS / "ok-two-cas.pem").read_bytes()
    result = run_cli("bundle", "build", "-", "--out", tmp_path / "b.pem", "-o", "yaml", stdin=data)
    assert result.code == 0, result.err
    assert len(yaml.safe_load(result.out)["certificates"]) == 2


def test_usage_errors_are_one_line(tmp_path: Path) -> None:
    assert_one_line_error(run_cli("verify", "--bogus"), 2, "--bogus")
    assert_one_line_error(
        run_cli("ca", "create", "--out", tmp_path, "--key-type", "dsa"), 2, "rsa-2048"
    )
    assert_one_line_error(
        run_cli(
            "cert", "issue", "--ca-dir", tmp_path, "--domain", "x.example", "--out", tmp_path / "o"
        ),
        2,
        "[not-a-ca-folder]",
    )
    assert_one_line_error(run_cli("inspect", tmp_path / "missing.pem"), 2, "does not exist")
    assert_one_line_error(
        run_cli("verify", "--ca", CORPUS / "ok-root.pem", "https://"), 2, "https://"
    )
    assert list(tmp_path.iterdir()) == []


def test_unreachable_endpoint_exits_3() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run_cli("inspect", f"https://127.0.0.1:{port}")
    assert_one_line_error(result, 3, "[endpoint-unreachable]", f"127.0.0.1:{port}")


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    assert run_cli("ca", "create", "--out", tmp_path / "ca").code == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "ca").iterdir()}
    assert_one_line_error(run_cli("ca", "create", "--out", tmp_path / "ca"), 2, "[output-exists]")
    assert before == {p.name: p.read_bytes() for p in (tmp_path / "ca").iterdir()}
    assert run_cli("ca", "create", "--out", tmp_path / "ca", "--force").code == 0
    assert before["ca.crt"] != (tmp_path / "ca" / "ca.crt").read_bytes()


def test_encrypted_ca_key_and_wrong_passphrase(tmp_path: Path) -> None:
    env = {"CA_PASS": "correct horse", "WRONG": "battery staple"}
    created = run_cli(
        "ca", "create", "--out", tmp_path / "ca", "--passphrase-env", "CA_PASS", env=env
    )
    assert created.code == 0, created.err
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "ca" / "ca.key").read_bytes()
    issue = [
        "cert",
        "issue",
        "--ca-dir",
        tmp_path / "ca",
        "--domain",
        "a.example.com",
        "--out",
        tmp_path / "leaf",
    ]
    assert_one_line_error(
        run_cli(*issue, "--passphrase-env", "WRONG", env=env), 2, "[wrong-passphrase]", "ca.key"
    )
    assert_one_line_error(run_cli(*issue, env=env), 2, "[key-encrypted]")
    assert not (tmp_path / "leaf").exists()
    (tmp_path / "pass.txt").write_text("correct horse\n")
    ok = run_cli(*issue, "--passphrase-file", tmp_path / "pass.txt")
    assert ok.code == 0, ok.err
    assert env["CA_PASS"] not in ok.out + ok.err


def test_intermediate_with_name_constraints(tmp_path: Path) -> None:
    assert (
        run_cli(
            "ca",
            "create",
            "--out",
            tmp_path / "root",
            "--permit-dns",
            "corp.example",
            "--path-length",
            "1",
        ).code
        == 0
    )
    assert (
        run_cli(
            "ca",
            "create",
            "--intermediate",
            "--parent",
            tmp_path / "root",
            "--out",
            tmp_path / "inter",
        ).code
        == 0
    )
    chain = (tmp_path / "inter" / "chain.pem").read_text()
    assert chain.count("BEGIN CERTIFICATE") == 2
    refused = run_cli(
        "cert",
        "issue",
        "--ca-dir",
        tmp_path / "inter",
        "--domain",
        "a.other.example",
        "--out",
        tmp_path / "leaf",
    )
    assert_one_line_error(refused, 2, "[name-constraint]", "corp.example")
    assert not (tmp_path / "leaf").exists()
    ok = run_cli(
        "cert",
        "issue",
        "--ca-dir",
        tmp_path / "inter",
        "--domain",
        "runai.corp.example",
        "--out",
        tmp_path / "leaf",
    )
    assert ok.code == 0, ok.err
    verified = run_cli(
        "verify",
        "--ca",
        tmp_path / "root" / "ca.crt",
        tmp_path / "leaf" / "tls.crt",
        "--hostname",
        "runai.corp.example",
    )
    assert verified.code == 0, verified.err


def test_leaf_outliving_ca_warns(tmp_path: Path) -> None:
    assert run_cli("ca", "create", "--out", tmp_path / "ca", "--days", "30").code == 0
    result = run_cli(
        "cert",
        "issue",
        "--ca-dir",
        tmp_path / "ca",
        "--domain",
        "a.example.com",
        "--out",
        tmp_path / "leaf",
    )
    assert result.code == 0
    assert "airtrust: warning:" in result.err and "expires on" in result.err


def test_quickstart_is_idempotent(tmp_path: Path) -> None:
    out = tmp_path / "qs"
    first = run_cli("quickstart", "--domain", "runai.example.com", "--out", out, "-o", "json")
    assert first.code == 0, first.err
    assert {p.name for p in out.iterdir()} >= {
        "ca.crt",
        "ca.key",
        "ca-bundle.pem",
        "tls.crt",
        "tls.key",
    }
    snapshot = {p.name: p.read_bytes() for p in out.iterdir()}
    second = run_cli("quickstart", "--domain", "runai.example.com", "--out", out, "-o", "json")
    assert [s["action"] for s in json.loads(second.out)["steps"]] == [
        "reused",
        "unchanged",
        "reused",
    ]
    assert snapshot == {p.name: p.read_bytes() for p in out.iterdir()}
    third = run_cli("quickstart", "--domain", "runai2.example.com", "--out", out, "-o", "json")
    actions = {s["step"]: s["action"] for s in json.loads(third.out)["steps"]}
    assert actions == {"ca": "reused", "bundle": "unchanged", "tls": "issued"}
    assert snapshot["ca.key"] == (out / "ca.key").read_bytes()
    ok = run_cli(
        "verify", "--ca", out / "ca-bundle.pem", out / "tls.crt", "--hostname", "runai2.example.com"
    )
    assert ok.code == 0, ok.err
    assert "runai-ca.pem" in first.out  # next steps name the documented Secret key


def _all_outputs(tmp_path: Path) -> list[Result]:
    """Exercise every command that writes or prints something."""
    results = [
        run_cli("quickstart", "--domain", "runai.example.com", "--out", tmp_path / "qs"),
        run_cli("ca", "create", "--out", tmp_path / "root", "--key-type", "rsa-2048"),
        run_cli(
            "ca",
            "create",
            "--intermediate",
            "--parent",
            tmp_path / "root",
            "--out",
            tmp_path / "inter",
            "--passphrase-env",
            "P",
            env={"P": "pw"},
        ),
        run_cli(
            "cert",
            "issue",
            "--ca-dir",
            tmp_path / "inter",
            "--domain",
            "a.example.com",
            "--out",
            tmp_path / "leaf",
            "--passphrase-env",
            "P",
            env={"P": "pw"},
        ),
        run_cli(
            "bundle",
            "build",
            tmp_path / "root" / "chain.pem",
            tmp_path / "inter" / "ca.crt",
            "--out",
            tmp_path / "b.pem",
            "--comments",
        ),
        run_cli("bundle", "build", tmp_path / "b.pem", "-f", "jks", "--out", tmp_path / "b.jks"),
        run_cli("bundle", "build", tmp_path / "b.pem", "-f", "pkcs12", "--out", tmp_path / "b.p12"),
        run_cli("bundle", "build", tmp_path / "b.pem", "-f", "hashdir", "--out", tmp_path / "hd"),
        run_cli("inspect", tmp_path / "leaf" / "tls.crt", "-o", "json"),
        run_cli("inspect", tmp_path / "qs" / "tls.crt"),
        run_cli("verify", "--ca", tmp_path / "b.pem", tmp_path / "leaf" / "tls.crt"),
        run_cli("bundle", "build", tmp_path / "leaf" / "tls.key", "--out", tmp_path / "x.pem"),
    ]
    assert [r.code for r in results] == [0] * 11 + [2], [r.err for r in results]
    assert results[-1].code == 2
    return results


def _secret_bytes(path: Path) -> bytes:
    """The private scalar of a key file, big-endian: what must never appear elsewhere."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    password = b"pw" if b"ENCRYPTED" in path.read_bytes() else None
    key = load_pem_private_key(path.read_bytes(), password)
    if isinstance(key, rsa.RSAPrivateKey):
        d = key.private_numbers().d
    else:
        d = key.private_numbers().private_value  # type: ignore[union-attr]
    return d.to_bytes((d.bit_length() + 7) // 8, "big")


def _decoded_views(data: bytes) -> list[bytes]:
    """The raw bytes and every base64 PEM body decoded, so DER content is searched too."""
    import base64
    import re

    views = [data]
    for body in re.findall(rb"-----BEGIN [^-]+-----(.*?)-----END", data, re.S):
        views.append(base64.b64decode(b"".join(body.split())))
    return views


def test_no_private_key_material_outside_key_files(tmp_path: Path) -> None:
    results = _all_outputs(tmp_path)
    key_files = sorted(tmp_path.rglob("*.key"))
    assert len(key_files) == 5  # qs ca + tls, root, inter, leaf
    secrets = []
    for key in key_files:
        mode = stat.S_IMODE(key.stat().st_mode)
        assert mode == 0o600, f"{key} is {oct(mode)}"
        secrets.append(_secret_bytes(key))
        if b"ENCRYPTED" not in key.read_bytes():  # the detector finds a key where one is
            assert any(secrets[-1] in view for view in _decoded_views(key.read_bytes()))
    blobs = [(r.out + r.err).encode() for r in results]
    blobs += [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".key"]
    assert len(blobs) > 20
    for blob in blobs:
        assert b"PRIVATE KEY-----" not in blob
        for view in _decoded_views(blob):
            for secret in secrets:
                assert secret not in view


def test_kubectl_plugin_entry_point() -> None:
    plugin = Path(sys.executable).parent / "kubectl-airtrust"
    assert plugin.exists(), "pip install did not create the kubectl-airtrust script"
    proc = subprocess.run(
        [str(plugin), "--help"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert proc.returncode == 0 and "quickstart" in proc.stdout


FULL_CLI = (
    "import sys; from airtrust.cli import entry; "
    "entry.fast_lane = lambda args: None; entry.run(sys.argv[1:])"
)


@pytest.mark.parametrize(
    ("args", "stdin"),
    [
        (["inspect", str(CORPUS / "ok-root.pem"), "-o", "json"], None),
        (["inspect", "-", "--output=yaml"], (CORPUS / "ok-root.pem").read_bytes()),
        (["inspect", str(CORPUS / "ok-root.pem"), "--no-color"], None),
        (["inspect", "/etc/ssl/certs/ca-certificates.crt", "-o", "JSON"], None),
        (["inspect", str(CORPUS / "ok-root.pem"), "-q"], None),
        (["inspect", str(CORPUS / "missing.pem"), "-o", "json"], None),
        (["inspect", str(CORPUS / "junk.bin")], None),
    ],
)
def test_fast_lane_answers_exactly_like_the_full_cli(args: list[str], stdin: bytes | None) -> None:
    def run(*prefix: str) -> tuple[int, bytes, bytes]:
        proc = subprocess.run(
            [sys.executable, *prefix, *args],
            input=stdin,
            capture_output=True,
            env={**os.environ, "COLUMNS": "200"},
            timeout=60,
            check=False,
        )
        return proc.returncode, proc.stdout, proc.stderr

    full = run("-c", FULL_CLI)
    lane = run("-m", "airtrust")
    assert lane == full
    # Something was printed or refused, not a silent no-op (-q hides the table).
    assert full[1] or full[0] != 0 or "-q" in args


def test_fast_lane_never_loads_typer(tmp_path: Path) -> None:
    probe = (
        "import atexit, sys\n"
        "atexit.register(lambda: sys.stderr.write("
        "'LOADED:' + ','.join(m for m in ('typer', 'click', 'rich') if m in sys.modules)))\n"
        "from airtrust.cli.entry import run\n"
        "run(sys.argv[1:])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, "inspect", str(CORPUS / "ok-root.pem"), "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().endswith("LOADED:"), proc.stderr


def test_big_bundle_prints_a_summary_and_the_table_on_request(tmp_path: Path) -> None:
    from tests.helpers.certs import make

    big = tmp_path / "big.pem"
    cas = [make(f"Field CA {i:03d}").pem for i in range(117)]
    big.write_bytes(b"".join(cas) + cas[0] + cas[1])
    out = tmp_path / "bundle.pem"
    short = run_cli("bundle", "build", big, "--out", out)
    assert short.code == 0, short.err
    lines = short.out.strip().splitlines()
    assert len(lines) == 1, short.out
    assert "117 CA certificate(s) kept from 1 file(s), 2 duplicate(s) dropped" in lines[0]
    for flag in (["-o", "table"], ["--verbose"]):
        full = run_cli("bundle", "build", big, "--out", out, "--force", *flag)
        assert full.code == 0 and full.out.count("Field CA") == 117, flag
    data = json.loads(run_cli("bundle", "build", big, "--out", out, "--force", "-o", "json").out)
    assert (data["files"], data["kept"], data["duplicates"]) == (1, 117, 2)


@pytest.mark.parametrize(
    "name", ["ok-crl2pkcs7.p7b", "ok-trusted-certificate.pem", "ok-openssl-text.pem"]
)
def test_field_shapes_build_quietly_and_openssl_agrees(name: str, tmp_path: Path) -> None:
    """No library warning reaches the terminal; openssl reads the result as the same CAs."""
    out = tmp_path / "b.pem"
    result = run_cli("bundle", "build", CORPUS / name, "--out", out)
    assert result.code == 0 and result.err == "", result.err
    if name == "ok-trusted-certificate.pem":
        assert "note: OpenSSL trust settings dropped" in result.out
    ours = subprocess.run(
        ["openssl", "crl2pkcs7", "-nocrl", "-certfile", str(out)],
        capture_output=True,
        check=True,
    ).stdout
    listed = subprocess.run(
        ["openssl", "pkcs7", "-print_certs", "-noout"], input=ours, capture_output=True, check=True
    ).stdout.decode()
    expected = json.loads((CORPUS / "expected.json").read_text())[name]["certificates"]
    assert listed.count("subject=") == expected


def test_verify_refuses_an_unusable_host_name_in_one_line(tmp_path: Path) -> None:
    from tests.helpers.certs import make

    root = make("Underscore Root")
    leaf = make("foo_bar.example.com", issuer=root, ca=False, dns=("foo_bar.example.com",))
    (tmp_path / "ca.pem").write_bytes(root.pem)
    (tmp_path / "leaf.pem").write_bytes(leaf.pem)
    for extra in ([], ["--hostname", "foo_bar.example.com"], ["--hostname", "bad\x01name"]):
        result = run_cli("verify", "--ca", tmp_path / "ca.pem", tmp_path / "leaf.pem", *extra)
        assert_one_line_error(result, 1, "[verify-bad-hostname]")
