"""Truststore formats read back by the tools that use them: openssl, keytool."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.name import _ASN1Type
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airtrust.pki.truststore import subject_hash
from tests.conftest import run_cli
from tests.helpers.certs import make, write
from tests.integration.conftest import assert_untrusted, require

pytestmark = pytest.mark.integration
_KEY = ec.generate_private_key(ec.SECP256R1())
_NOW = dt.datetime.now(dt.UTC)


def _openssl_hash(pem: bytes) -> str:
    out = subprocess.run(
        [require("openssl"), "x509", "-subject_hash", "-noout"],
        input=pem,
        capture_output=True,
        check=True,
    )
    return out.stdout.decode().strip()


_text = st.text(
    alphabet=st.sampled_from([*"abcXYZ019 -.\t", "é", "ß", "Ж", "中"]),
    min_size=1,
    max_size=12,
).filter(lambda s: s.strip())
_string_types = st.sampled_from(
    [_ASN1Type.UTF8String, _ASN1Type.PrintableString, _ASN1Type.BMPString, _ASN1Type.IA5String]
)


@st.composite
def names(draw: st.DrawFn) -> x509.Name:
    rdns = []
    for _ in range(draw(st.integers(1, 4))):
        attrs = []
        for oid in draw(
            st.lists(
                st.sampled_from(
                    [
                        x509.NameOID.COMMON_NAME,
                        x509.NameOID.ORGANIZATION_NAME,
                        x509.NameOID.ORGANIZATIONAL_UNIT_NAME,
                    ]
                ),
                min_size=1,
                max_size=2,
                unique=True,
            )
        ):
            kind = draw(_string_types)
            value = draw(_text)
            if kind in (_ASN1Type.PrintableString, _ASN1Type.IA5String):
                value = "".join(c for c in value if c.isascii() and c != "\t") or "x"
            attrs.append(x509.NameAttribute(oid, value, _type=kind))
        rdns.append(x509.RelativeDistinguishedName(attrs))
    return x509.Name(rdns)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names())
def test_subject_hash_matches_openssl(name: x509.Name) -> None:
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(_KEY.public_key())
        .serial_number(1)
        .not_valid_before(_NOW)
        .not_valid_after(_NOW + dt.timedelta(days=1))
        .sign(_KEY, hashes.SHA256())
    )
    assert subject_hash(cert) == _openssl_hash(cert.public_bytes(serialization.Encoding.PEM))


def test_hash_dir_is_an_openssl_capath(tmp_path: Path) -> None:
    roots = [make("Alpha Root"), make("Beta Root"), make("alpha   ROOT")]  # same canonical name
    leaf = make("svc.example.test", issuer=roots[1], ca=False, dns=("svc.example.test",))
    write(tmp_path / "cas.pem", *(r.pem for r in roots))
    result = run_cli(
        "bundle", "build", tmp_path / "cas.pem", "-f", "hashdir", "--out", tmp_path / "capath"
    )
    assert result.code == 0, result.err
    files = sorted(p.name for p in (tmp_path / "capath").iterdir())
    alpha = _openssl_hash(roots[0].pem)
    assert f"{alpha}.0" in files and f"{alpha}.1" in files  # collision numbered
    assert f"{_openssl_hash(roots[1].pem)}.0" in files
    ok = subprocess.run(
        [
            require("openssl"),
            "verify",
            "-CApath",
            str(tmp_path / "capath"),
            str(write(tmp_path / "leaf.pem", leaf.pem)),
        ],
        capture_output=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    other = make("svc.example.test", issuer=make("Gamma Root"), ca=False, dns=("svc.example.test",))
    refused = subprocess.run(
        [
            require("openssl"),
            "verify",
            "-no-CAfile",
            "-no-CAstore",
            "-CApath",
            str(tmp_path / "capath"),
            str(write(tmp_path / "other.pem", other.pem)),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert_untrusted("openssl verify", refused, "openssl with the hash directory, other issuer")


@pytest.mark.parametrize(("fmt", "store_type"), [("jks", "JKS"), ("pkcs12", "PKCS12")])
def test_keytool_reads_truststores(fmt: str, store_type: str, tmp_path: Path) -> None:
    roots = [make("Alpha Root"), make("Beta Root")]
    write(tmp_path / "cas.pem", *(r.pem for r in roots))
    out = tmp_path / f"trust.{fmt}"
    result = run_cli(
        "bundle",
        "build",
        tmp_path / "cas.pem",
        "-f",
        fmt,
        "--out",
        out,
        "--store-password-env",
        "SP",
        env={"SP": "s3cret-store"},
    )
    assert result.code == 0, result.err
    listing = subprocess.run(
        [
            require("keytool"),
            "-list",
            "-keystore",
            str(out),
            "-storetype",
            store_type,
            "-storepass",
            "s3cret-store",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.count("trustedCertEntry") == 2
    wrong = subprocess.run(
        [
            require("keytool"),
            "-list",
            "-keystore",
            str(out),
            "-storetype",
            store_type,
            "-storepass",
            "not-it",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert wrong.returncode != 0
    assert "password was incorrect" in wrong.stdout + wrong.stderr, wrong


def test_jks_is_deterministic(tmp_path: Path) -> None:
    write(tmp_path / "cas.pem", make("Alpha Root").pem)
    for name in ("a.jks", "b.jks"):
        assert (
            run_cli(
                "bundle", "build", tmp_path / "cas.pem", "-f", "jks", "--out", tmp_path / name
            ).code
            == 0
        )
    assert (tmp_path / "a.jks").read_bytes() == (tmp_path / "b.jks").read_bytes()
