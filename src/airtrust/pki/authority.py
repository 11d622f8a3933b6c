"""Create a CA and issue server certificates from it.

Pure functions: the caller passes the key, the clock and (optionally) the
serial, so the same inputs give the same certificate bytes for EC-free tests
and every decision is visible in the arguments.

Profile choices, and why:

* CA validity 10 years: long enough to outlive a platform's life cycle in an
  isolated network where rotation is a project; ``airtrust rotate`` exists for
  when it must change.
* Server validity 397 days: the CA/Browser Forum limit (398) that Chrome and
  Safari enforce for public roots; keeping under it avoids surprises when a
  browser policy is later applied to private roots too.
* basicConstraints and keyUsage critical, SKI and AKI present, SAN always
  filled, EKU serverAuth on leaves: the RFC 5280 / CABF web-PKI profile that
  pyca/cryptography, Go and OpenSSL 3 check by default. A CA outside this
  profile is the most common cause of "works with curl, fails with Go".
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificateIssuerPublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from airtrust.errors import CertificateError
from airtrust.pki import names
from airtrust.pki.bundle import certificate_to_pem
from airtrust.pki.keys import public_key_matches

__all__ = [
    "BACKDATE",
    "BROWSER_MAX_DAYS",
    "DEFAULT_CA_DAYS",
    "DEFAULT_SERVER_DAYS",
    "Authority",
    "CASpec",
    "Issued",
    "ServerSpec",
    "chain_pem",
    "create_intermediate",
    "create_root",
    "issue_server",
]

DEFAULT_CA_DAYS = 3650
DEFAULT_SERVER_DAYS = 397
#: The CA/Browser Forum Baseline Requirements (6.3.2) cap a server certificate's validity
#: at 398 days; Chrome and Safari refuse longer ones from public roots.
BROWSER_MAX_DAYS = 398
#: Backdating absorbs clock skew between the machine that issues and the nodes that verify.
BACKDATE = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class CASpec:
    common_name: str
    organization: str | None = None
    days: int = DEFAULT_CA_DAYS
    path_length: int | None = None
    permitted_dns: tuple[str, ...] = ()
    permitted_ip: tuple[names.IPNetwork, ...] = ()


@dataclass(frozen=True)
class ServerSpec:
    domain: str
    dns_names: tuple[str, ...] = ()
    ips: tuple[names.IPAddress, ...] = ()
    days: int = DEFAULT_SERVER_DAYS
    organization: str | None = None

    def all_dns(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for n in (self.domain, *self.dns_names):
            seen.setdefault(names.normalise_dns_name(n), None)
        return tuple(seen)


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    warnings: tuple[str, ...] = field(default_factory=tuple)


def _hash_for(key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | hashes.SHA384 | None:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    if isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        return hashes.SHA256()
    return None  # Ed25519 / Ed448 sign without a separate hash


def _name(common_name: str, organization: str | None) -> x509.Name:
    if not common_name.strip():
        raise CertificateError("the common name is empty", hint="give --name 'Example Root CA'")
    attrs = []
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _check_days(days: int) -> None:
    if days < 1:
        raise CertificateError(
            f"validity of {days} days is too short", hint="give --days 1 or more"
        )


def _ca_extensions(
    builder: x509.CertificateBuilder,
    spec: CASpec,
    public_key: CertificateIssuerPublicKeyTypes,
    issuer_public_key: CertificateIssuerPublicKeyTypes,
) -> x509.CertificateBuilder:
    builder = (
        builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=spec.path_length), critical=True
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public_key), critical=False
        )
    )
    if spec.permitted_dns or spec.permitted_ip:
        permitted: list[x509.GeneralName] = [
            x509.DNSName(names.normalise_dns_name(d, allow_wildcard=False))
            for d in spec.permitted_dns
        ]
        permitted += [x509.IPAddress(n) for n in spec.permitted_ip]
        # Critical, as RFC 5280 4.2.1.10 requires, so clients that cannot
        # enforce the constraints refuse the chain instead of ignoring them.
        builder = builder.add_extension(
            x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None),
            critical=True,
        )
    return builder


def create_root(
    spec: CASpec,
    key: CertificateIssuerPrivateKeyTypes,
    *,
    now: dt.datetime,
    serial: int | None = None,
) -> x509.Certificate:
    _check_days(spec.days)
    name = _name(spec.common_name, spec.organization)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=spec.days))
    )
    builder = _ca_extensions(builder, spec, key.public_key(), key.public_key())
    return builder.sign(key, _hash_for(key))


def _check_issuer(
    issuer_cert: x509.Certificate, issuer_key: CertificateIssuerPrivateKeyTypes
) -> None:
    if not public_key_matches(issuer_key, issuer_cert.public_key()):
        raise CertificateError(
            "the CA key does not belong to the CA certificate "
            f"'{issuer_cert.subject.rfc4514_string()}'",
            hint="point --ca-dir (or --parent) at a folder whose ca.crt and ca.key match",
        )
    try:
        bc = issuer_cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is None or not bc.ca:
        raise CertificateError(
            f"'{issuer_cert.subject.rfc4514_string()}' is not a CA certificate",
            hint="issue from a certificate made by 'airtrust ca create'",
        )


def _constraints_of(chain: Sequence[x509.Certificate]) -> list[names.Constraints]:
    return [c for c in (names.Constraints.of(cert) for cert in chain) if c is not None]


def create_intermediate(
    spec: CASpec,
    key: CertificateIssuerPrivateKeyTypes,
    *,
    issuer_chain: Sequence[x509.Certificate],
    issuer_key: CertificateIssuerPrivateKeyTypes,
    now: dt.datetime,
    serial: int | None = None,
) -> Issued:
    """``issuer_chain`` starts with the issuing CA and goes up to its root."""
    _check_days(spec.days)
    issuer_cert = issuer_chain[0]
    _check_issuer(issuer_cert, issuer_key)
    bc = issuer_cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    if bc.path_length == 0:
        raise CertificateError(
            f"'{issuer_cert.subject.rfc4514_string()}' has path length 0 and cannot sign a CA",
            hint="sign the intermediate with the root, or recreate the parent with a larger "
            "--path-length",
        )
    subject = _name(spec.common_name, spec.organization)
    if any(ca.subject == subject for ca in issuer_chain):
        raise CertificateError(
            "the intermediate would have the same name as its issuer "
            f"('{subject.rfc4514_string()}')",
            hint="give the intermediate its own --name; clients cannot build paths through "
            "same-named CAs",
        )
    if spec.path_length is None:
        # An intermediate issues leaves only unless asked otherwise.
        spec = dataclasses.replace(spec, path_length=0)
    for constraint in _constraints_of(issuer_chain):
        for dns in spec.permitted_dns:
            if (why := constraint.violation(dns)) is not None:
                raise CertificateError(why, hint="narrow --permit-dns to the parent's subtrees")
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject)
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        # An intermediate never outlives its parent: it would be useless after that.
        .not_valid_after(min(now + dt.timedelta(days=spec.days), issuer_cert.not_valid_after_utc))
    )
    builder = _ca_extensions(builder, spec, key.public_key(), issuer_key.public_key())
    cert = builder.sign(issuer_key, _hash_for(issuer_key))
    return Issued(cert, _outlives(cert, issuer_chain))


def _outlives(cert: x509.Certificate, issuer_chain: Sequence[x509.Certificate]) -> tuple[str, ...]:
    warnings = []
    for ca in issuer_chain:
        if cert.not_valid_after_utc > ca.not_valid_after_utc:
            warnings.append(
                f"'{cert.subject.rfc4514_string()}' is valid until "
                f"{cert.not_valid_after_utc:%Y-%m-%d}, after its CA "
                f"'{ca.subject.rfc4514_string()}' expires on {ca.not_valid_after_utc:%Y-%m-%d}; "
                "clients reject it from then on"
            )
    return tuple(warnings)


def _over_browser_cap(days: int) -> tuple[str, ...]:
    # The backdate counts: 398 days from "now - 5 min" is 398 days and 5 minutes.
    if dt.timedelta(days=days) + BACKDATE <= dt.timedelta(days=BROWSER_MAX_DAYS):
        return ()
    minutes = int(BACKDATE.total_seconds() // 60)
    backdate = "" if days > BROWSER_MAX_DAYS else f" and {minutes} minutes (backdated for skew)"
    return (
        f"valid for {days} days{backdate}, over the {BROWSER_MAX_DAYS}-day cap browsers put on "
        "server certificates (CA/Browser Forum), so Chrome and Safari may refuse it; use --days "
        f"{DEFAULT_SERVER_DAYS} (the default) or less",
    )


def issue_server(
    spec: ServerSpec,
    public_key: CertificateIssuerPublicKeyTypes,
    *,
    issuer_chain: Sequence[x509.Certificate],
    issuer_key: CertificateIssuerPrivateKeyTypes,
    now: dt.datetime,
    serial: int | None = None,
) -> Issued:
    """A TLS server certificate for ``spec.domain`` and its extra names."""
    _check_days(spec.days)
    issuer_cert = issuer_chain[0]
    _check_issuer(issuer_cert, issuer_key)
    dns = spec.all_dns()
    for constraint in _constraints_of(issuer_chain):
        for name in (*dns, *spec.ips):
            if (why := constraint.violation(name)) is not None:
                raise CertificateError(
                    f"cannot issue: {why}",
                    hint="ask for a name inside the CA's name constraints, or use another CA",
                    reference="name-constraint",
                )
    san: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
    san += [x509.IPAddress(ip) for ip in spec.ips]
    is_rsa = isinstance(public_key, rsa.RSAPublicKey)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(dns[0], spec.organization))
        .issuer_name(issuer_cert.subject)
        .public_key(public_key)
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=spec.days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=is_rsa,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    cert = builder.sign(issuer_key, _hash_for(issuer_key))
    return Issued(cert, (*_over_browser_cap(spec.days), *_outlives(cert, issuer_chain)))


@dataclass(frozen=True)
class Authority:
    """A CA ready to sign: its certificate, key and the chain up to its root."""

    certificate: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes
    chain: tuple[x509.Certificate, ...]

    @property
    def root(self) -> x509.Certificate:
        return self.chain[-1]

    def intermediates(self) -> tuple[x509.Certificate, ...]:
        """CAs that a server must send after its leaf (everything but the root)."""
        return self.chain[:-1]


def chain_pem(certs: Sequence[x509.Certificate]) -> bytes:
    """Certificates as one PEM, in the order given (leaf first, or CA up to its root)."""
    return b"".join(certificate_to_pem(c) for c in certs)
