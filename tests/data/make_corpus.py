"""Regenerate tests/data/bad-input (run once; the outputs are committed).

    .venv/bin/python tests/data/make_corpus.py

Keys in this corpus are throw-away test keys made here; they protect nothing.
The 10 000-certificate bundle is made by a test fixture instead (6 MB).
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.helpers.certs import make

OUT = Path(__file__).parent / "bad-input"
FIXED = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    root = make("Corpus Root CA", not_before=FIXED, not_after=FIXED + dt.timedelta(days=365 * 30))
    other = make("Corpus Other CA", not_before=FIXED, not_after=FIXED + dt.timedelta(days=3650 * 3))
    leaf = make(
        "corpus.example.com",
        issuer=root,
        ca=False,
        dns=("corpus.example.com",),
        not_before=FIXED,
        not_after=FIXED + dt.timedelta(days=365 * 30),
    )
    expired = make(
        "Corpus Expired CA",
        not_before=FIXED - dt.timedelta(days=800),
        not_after=FIXED - dt.timedelta(days=400),
    )
    files = {
        "ok-root.pem": root.pem,
        "ok-two-cas.pem": root.pem + other.pem,
        "ok-duplicates.pem": root.pem + other.pem + root.pem,
        "ok-crlf.pem": root.pem.replace(b"\n", b"\r\n"),
        "ok-bom.pem": b"\xef\xbb\xbf" + root.pem,
        "ok-comments.pem": b"# Corpus Root CA\n\n" + root.pem + b"\n# another\n" + other.pem,
        "ok-root.der": root.cert.public_bytes(serialization.Encoding.DER),
        "ok-two-cas.p7b": pkcs7.serialize_certificates(
            [root.cert, other.cert], serialization.Encoding.DER
        ),
        "ok-two-cas.p7c.pem": pkcs7.serialize_certificates(
            [root.cert, other.cert], serialization.Encoding.PEM
        ),
        "empty.pem": b"",
        "whitespace.pem": b"\n  \n\t\n",
        "truncated.pem": root.pem[: len(root.pem) // 2],
        "truncated.der": root.cert.public_bytes(serialization.Encoding.DER)[:200],
        "junk.bin": bytes(range(256)) * 4,
        "key-in-bundle.pem": root.pem + leaf.key_pem,
        "key-only.der": leaf.key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        "encrypted-key.pem": leaf.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"right passphrase"),
        ),
        "leaf-only.pem": leaf.pem,
        "expired-ca.pem": expired.pem,
        "ok-text-between.pem": root.pem + b"this line is not a comment\n" + other.pem,
        "binary-between.pem": root.pem + b"\x00\x01\x02 binary\xff\n" + other.pem,
        "broken-boundary.pem": root.pem + b"-----BEGIN CERTIFICAT\n" + other.pem,
        "pem-headers.pem": root.pem.replace(
            b"-----BEGIN CERTIFICATE-----\n",
            b"-----BEGIN CERTIFICATE-----\nProc-Type: 4,ENCRYPTED\n\n",
        ),
        "mismatched-end.pem": root.pem.replace(b"END CERTIFICATE", b"END X509 CRL"),
        "bad-base64.pem": root.pem.replace(b"M", b"!", 3),
        "certificate-request.pem": b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"
        b"-----END CERTIFICATE REQUEST-----\n",
    }
    for name, data in files.items():
        (OUT / name).write_bytes(data)
    field_shapes()


def _openssl(*args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(["openssl", *args], input=stdin, capture_output=True, check=True).stdout


def field_shapes() -> None:
    """CA files as they come from the field, written by the real openssl from the corpus
    CAs (run after main, or alone: ``make_corpus.py field``)."""
    root, two = OUT / "ok-root.pem", OUT / "ok-two-cas.pem"
    with tempfile.TemporaryDirectory() as tmp:
        # `openssl x509 -text`: the text dump above the PEM block, as corporate CAs are sent.
        text = _openssl("x509", "-in", str(root), "-text")
        (OUT / "ok-openssl-text.pem").write_bytes(text)
        # `openssl pkcs12 -nokeys`: Bag Attributes, subject= and issuer= lines.
        p12 = Path(tmp) / "cas.p12"
        _openssl(
            "pkcs12", "-export", "-nokeys", "-in", str(two), "-out", str(p12), "-passout", "pass:"
        )
        (OUT / "ok-pkcs12-nokeys.pem").write_bytes(
            _openssl("pkcs12", "-in", str(p12), "-nokeys", "-passin", "pass:")
        )
        # `openssl crl2pkcs7`: BER with an unsorted SET, which pyca warns about.
        (OUT / "ok-crl2pkcs7.p7b").write_bytes(
            _openssl("crl2pkcs7", "-nocrl", "-certfile", str(two), "-outform", "DER")
        )
        # RHEL's ca-bundle.trust.crt shape: TRUSTED CERTIFICATE with trust settings.
        (OUT / "ok-trusted-certificate.pem").write_bytes(
            _openssl("x509", "-in", str(root), "-addtrust", "serverAuth", "-trustout")
        )


if __name__ == "__main__":
    if sys.argv[1:] == ["field"]:
        field_shapes()
    else:
        main()
