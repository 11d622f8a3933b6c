"""What a person needs to know about each certificate of a bundle or chain.

Reports are plain data (for ``--output json``); warnings name problems that
do not stop a handshake today but will, or that some clients refuse.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from airtrust.errors import InputError
from airtrust.pki.bundle import fingerprint, is_ca
from airtrust.pki.keys import describe_public_key

__all__ = ["EXPIRY_WARNING_DAYS", "CertificateReport", "describe", "describe_chain"]

EXPIRY_WARNING_DAYS = 30
_WEAK_HASHES = {"sha1", "md5"}


@dataclass(frozen=True)
class CertificateReport:
    index: int
    subject: str
    issuer: str
    serial: str
    sha256: str
    not_before: str
    not_after: str
    days_left: int
    is_ca: bool
    path_length: int | None
    self_signed: bool
    key_type: str
    key_bits: int
    signature_hash: str
    subject_alt_names: list[str] = field(default_factory=list)
    key_usage: list[str] = field(default_factory=list)
    extended_key_usage: list[str] = field(default_factory=list)
    name_constraints: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        # Shallow on purpose: asdict() deep-copies and doubles inspect's run time.
        return {f.name: getattr(self, f.name) for f in fields(self)}


_KEY_USAGE_FIELDS = (
    ("digital_signature", "digitalSignature"),
    ("content_commitment", "contentCommitment"),
    ("key_encipherment", "keyEncipherment"),
    ("data_encipherment", "dataEncipherment"),
    ("key_agreement", "keyAgreement"),
    ("key_cert_sign", "keyCertSign"),
    ("crl_sign", "cRLSign"),
)


def describe(cert: x509.Certificate, *, now: dt.datetime, index: int = 0) -> CertificateReport:
    """Everything a person needs to judge one certificate, with warnings in plain words.
    A field pyca cannot decode is reported, never raised; a certificate that cannot be
    described at all is one :class:`InputError`."""
    try:
        return _describe(cert, now=now, index=index)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InputError(
            f"certificate {index + 1} cannot be read ({exc})",
            hint="the certificate is malformed; get it again from its issuer",
            reference="malformed-certificate",
        ) from None


def _describe(cert: x509.Certificate, *, now: dt.datetime, index: int) -> CertificateReport:
    warnings: list[str] = []
    try:
        # One pass over the extensions: looking each type up by class rescans them.
        found: dict[type[Any], x509.Extension[Any]] = {type(e.value): e for e in cert.extensions}
        extensions_ok = True
    except (ValueError, x509.DuplicateExtension) as exc:
        found, extensions_ok = {}, False
        warnings.append(f"malformed extensions: {exc}")
    bc = found.get(x509.BasicConstraints)
    ku = found.get(x509.KeyUsage)
    eku = found.get(x509.ExtendedKeyUsage)
    san = found.get(x509.SubjectAlternativeName)
    nc = found.get(x509.NameConstraints)
    ski = found.get(x509.SubjectKeyIdentifier)
    aki = found.get(x509.AuthorityKeyIdentifier)
    ca = extensions_ok and (bc.value.ca if bc is not None else is_ca(cert))
    self_signed = cert.subject == cert.issuer
    public_key: Any = None
    try:
        public_key = cert.public_key()
        key_type, key_bits = describe_public_key(public_key)
    except (UnsupportedAlgorithm, ValueError) as exc:
        key_type, key_bits = "unreadable", 0
        warnings.append(f"public key cannot be read ({exc}): no client can use this certificate")
    try:
        algo = cert.signature_hash_algorithm
        signature_hash = algo.name if algo is not None else cert.signature_algorithm_oid._name
    except (UnsupportedAlgorithm, ValueError):
        signature_hash = cert.signature_algorithm_oid.dotted_string
        warnings.append(f"unknown signature algorithm {signature_hash}")
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    days_left = (not_after - now).days

    if now > not_after:
        warnings.append(f"expired on {not_after:%Y-%m-%d}")
    elif days_left < EXPIRY_WARNING_DAYS:
        warnings.append(f"expires in {days_left} days")
    if now < not_before:
        warnings.append(f"not valid before {not_before:%Y-%m-%d}")
    if isinstance(public_key, rsa.RSAPublicKey) and key_bits < 2048:
        warnings.append(f"RSA key of {key_bits} bits; clients require 2048 or more")
    if signature_hash in _WEAK_HASHES and not self_signed:
        warnings.append(f"signed with {signature_hash.upper()}, which clients reject")
    if cert.serial_number <= 0:
        warnings.append("serial number is not positive (RFC 5280 forbids it)")
    if cert.version is x509.Version.v1:
        warnings.append("X.509 v1 certificate (no extensions)")
    if ca:
        if bc is not None and not bc.critical:
            warnings.append("basicConstraints is not critical (strict verifiers reject this CA)")
        if ku is not None and not ku.value.key_cert_sign:
            warnings.append("keyUsage lacks keyCertSign: this CA cannot sign certificates")
        if ski is None:
            warnings.append("no subjectKeyIdentifier")
        if aki is None and not self_signed:
            warnings.append("no authorityKeyIdentifier")
    else:
        if san is None:
            warnings.append("no subjectAltName: Go, Chrome and Python ignore the common name")
        lifetime = (not_after - not_before).days
        if lifetime > 398:
            warnings.append(f"valid for {lifetime} days; browsers cap server certificates at 398")
        if eku is not None and ExtendedKeyUsageOID.SERVER_AUTH not in list(eku.value):
            warnings.append("extendedKeyUsage lacks serverAuth: not usable as a TLS server")
        if aki is None:
            warnings.append("no authorityKeyIdentifier")

    constraints: dict[str, list[str]] = {}
    if nc is not None:
        for kind, subtrees in (
            ("permitted", nc.value.permitted_subtrees),
            ("excluded", nc.value.excluded_subtrees),
        ):
            if subtrees:
                constraints[kind] = [str(g.value) for g in subtrees]
    return CertificateReport(
        index=index,
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial=f"{cert.serial_number:x}",
        sha256=fingerprint(cert),
        not_before=not_before.isoformat(),
        not_after=not_after.isoformat(),
        days_left=days_left,
        is_ca=ca,
        path_length=bc.value.path_length if bc is not None else None,
        self_signed=self_signed,
        key_type=key_type,
        key_bits=key_bits,
        signature_hash=signature_hash,
        subject_alt_names=[str(g.value) for g in san.value] if san is not None else [],
        key_usage=[label for attr, label in _KEY_USAGE_FIELDS if ku and getattr(ku.value, attr)],
        extended_key_usage=[
            getattr(oid, "_name", oid.dotted_string) for oid in (eku.value if eku else [])
        ],
        name_constraints=constraints,
        warnings=warnings,
    )


def describe_chain(
    certs: Sequence[x509.Certificate], *, now: dt.datetime, presented: bool | None = None
) -> list[CertificateReport]:
    """Reports for each certificate; for a presented chain also order and lifetimes.

    ``presented`` defaults to "starts with a non-CA certificate": a served
    chain or tls.crt, as opposed to a CA bundle, whose order means nothing.
    """
    reports = [describe(c, now=now, index=i) for i, c in enumerate(certs)]
    if presented is None:
        presented = bool(reports) and not reports[0].is_ca
    for i in range(len(certs) - 1 if presented else 0):
        child, parent = certs[i], certs[i + 1]
        if child.issuer != parent.subject:
            reports[i].warnings.append(
                f"the next certificate ('{parent.subject.rfc4514_string()}') did not issue this "
                "one: chain out of order or missing an intermediate"
            )
        elif child.not_valid_after_utc > parent.not_valid_after_utc:
            reports[i].warnings.append(
                "outlives its issuer; clients reject it once the issuer expires"
            )
    return reports
