"""The folders airtrust reads and writes, and the steps that fill them.

Two layouts are part of the interface:

CA folder (``airtrust ca create --out DIR``)
    ``ca.crt`` the CA certificate; ``ca.key`` its key (0600, maybe
    encrypted); ``chain.pem`` the CA followed by its issuers up to the root
    (for a root, just ``ca.crt``).

Quickstart folder (``airtrust quickstart --out DIR``)
    ``ca.crt``/``ca.key`` as above (when airtrust made the CA), plus
    ``ca-bundle.pem`` (the CA chain: what goes into the ``runai-ca.pem`` key),
    ``tls.crt`` (leaf + intermediates) and ``tls.key`` (for the
    control plane's ``kubernetes.io/tls`` Secret).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from airtrust.errors import AirtrustError, InputError
from airtrust.files import OutputSet, read_input
from airtrust.pki import authority, keys, names
from airtrust.pki.bundle import Bundle, build_bundle, certificate_to_pem, read_certificates
from airtrust.pki.tlssecret import RENEW_BEFORE
from airtrust.pki.verify import verify_server
from airtrust.plan.steps import Step, When, manual_steps
from airtrust.profiles import Profile, load_profile

__all__ = [
    "BUNDLE",
    "CA_CERT",
    "CA_CHAIN",
    "CA_KEY",
    "TLS_CERT",
    "TLS_KEY",
    "Authority",
    "CAResult",
    "QuickstartReport",
    "ServerResult",
    "chain_pem",
    "create_ca",
    "issue_server_files",
    "load_authority",
    "quickstart",
]

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
CA_CHAIN = "chain.pem"
BUNDLE = "ca-bundle.pem"
TLS_CERT = "tls.crt"
TLS_KEY = "tls.key"
#: A reused server certificate must have at least this long left.


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
    return b"".join(certificate_to_pem(c) for c in certs)


def load_authority(folder: Path, *, passphrase: bytes | None = None) -> Authority:
    cert_path, key_path = folder / CA_CERT, folder / CA_KEY
    if not cert_path.exists() or not key_path.exists():
        raise InputError(
            f"{folder} is not a CA folder (needs {CA_CERT} and {CA_KEY})",
            hint="create one with 'airtrust ca create --out DIR'",
            reference="not-a-ca-folder",
        )
    cert = read_certificates(read_input(str(cert_path)), str(cert_path))[0].certificate
    key = keys.key_from_pem(read_input(str(key_path)), source=str(key_path), passphrase=passphrase)
    chain_path = folder / CA_CHAIN
    if chain_path.exists():
        chain = tuple(
            a.certificate for a in read_certificates(read_input(str(chain_path)), str(chain_path))
        )
    else:
        chain = (cert,)
    if not keys.public_key_matches(key, cert.public_key()):
        raise InputError(
            f"{key_path} does not belong to {cert_path}",
            hint="restore the matching pair, or create a new CA",
            reference="key-mismatch",
        )
    return Authority(cert, key, chain)


@dataclass(frozen=True)
class CAResult:
    authority: Authority
    outputs: OutputSet
    warnings: tuple[str, ...] = ()


def create_ca(
    out: Path,
    spec: authority.CASpec,
    key_type: keys.KeyType,
    *,
    now: dt.datetime,
    parent: Authority | None = None,
    passphrase: bytes | None = None,
    force: bool = False,
) -> CAResult:
    """Make a root (or, with ``parent``, an intermediate) and stage its files.

    Every new CA is checked by airtrust's own verifier: a throw-away leaf is
    issued under it and must validate, so a CA that clients would refuse is
    never written.
    """
    key = keys.generate_key(key_type)
    warnings: tuple[str, ...] = ()
    if parent is None:
        cert = authority.create_root(spec, key, now=now)
        chain: tuple[x509.Certificate, ...] = (cert,)
    else:
        issued = authority.create_intermediate(
            spec, key, issuer_chain=parent.chain, issuer_key=parent.key, now=now
        )
        cert, warnings = issued.certificate, issued.warnings
        chain = (cert, *parent.chain)
    result = Authority(cert, key, chain)
    _self_test(result, now=now)
    outputs = OutputSet(force=force)
    outputs.add(out / CA_CERT, certificate_to_pem(cert))
    outputs.add(out / CA_CHAIN, chain_pem(chain))
    outputs.add(out / CA_KEY, keys.key_to_pem(key, passphrase), secret=True)
    return CAResult(result, outputs, warnings)


def _self_test(ca: Authority, *, now: dt.datetime) -> None:
    """Issue a throw-away leaf inside every constraint of the chain and verify it."""
    constraints = [c for c in map(names.Constraints.of, ca.chain) if c is not None]
    dns = next((d for c in constraints for d in c.permitted_dns), "airtrust-self-test.invalid")
    ips = next(((n.network_address,) for c in constraints for n in c.permitted_ip), ())
    probe = authority.issue_server(
        authority.ServerSpec("self-test." + dns.lstrip("."), days=1, ips=ips),
        keys.generate_key(keys.KeyType.EC_P256).public_key(),
        issuer_chain=ca.chain,
        issuer_key=ca.key,
        now=now,
    )
    verify_server(probe.certificate, anchors=[ca.root], intermediates=ca.intermediates(), now=now)


@dataclass(frozen=True)
class ServerResult:
    certificate: x509.Certificate
    outputs: OutputSet
    warnings: tuple[str, ...] = ()


def issue_server_files(
    ca: Authority,
    spec: authority.ServerSpec,
    key_type: keys.KeyType,
    *,
    out: Path,
    now: dt.datetime,
    force: bool = False,
    cert_name: str = TLS_CERT,
    key_name: str = TLS_KEY,
) -> ServerResult:
    """Issue, verify with our own verifier, and stage ``tls.crt`` (with chain) + ``tls.key``."""
    key = keys.generate_key(key_type)
    issued = authority.issue_server(
        spec, key.public_key(), issuer_chain=ca.chain, issuer_key=ca.key, now=now
    )
    for name in (*spec.all_dns(), *map(str, spec.ips)):
        verify_server(
            issued.certificate,
            anchors=[ca.root],
            intermediates=ca.intermediates(),
            hostname=name.replace("*", "wildcard-check", 1) if name.startswith("*.") else name,
            now=now,
        )
    outputs = OutputSet(force=force)
    outputs.add(out / cert_name, chain_pem((issued.certificate, *ca.intermediates())))
    outputs.add(out / key_name, keys.key_to_pem(key), secret=True)
    return ServerResult(issued.certificate, outputs, issued.warnings)


# --- quickstart ------------------------------------------------------------------------


@dataclass
class QuickstartReport:
    folder: str
    domain: str
    steps: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    next_steps: list[Step] = field(default_factory=list)

    def step(self, name: str, action: str, detail: str) -> None:
        self.steps.append({"step": name, "action": action, "detail": detail})


def _server_reusable(
    folder: Path, ca: Authority, domain: str, sans: Sequence[str], now: dt.datetime
) -> str | None:
    """Why the existing tls.crt cannot be kept, or None when it can."""
    cert_path, key_path = folder / TLS_CERT, folder / TLS_KEY
    if not cert_path.exists() or not key_path.exists():
        return "no certificate yet"
    try:
        leaf = read_certificates(cert_path.read_bytes(), str(cert_path))[0].certificate
        key = keys.key_from_pem(key_path.read_bytes(), source=str(key_path))
    except InputError as exc:
        return f"existing files unreadable ({exc.message})"
    if not keys.public_key_matches(key, leaf.public_key()):
        return "tls.key does not match tls.crt"
    try:
        for name in (domain, *sans):
            verify_server(
                leaf, anchors=[ca.root], intermediates=ca.intermediates(), hostname=name, now=now
            )
    except AirtrustError as exc:
        return exc.message
    if leaf.not_valid_after_utc - now < RENEW_BEFORE:
        return f"expires on {leaf.not_valid_after_utc:%Y-%m-%d}"
    return None


def quickstart(
    folder: Path,
    domain: str,
    *,
    now: dt.datetime,
    sans: Sequence[str] = (),
    ips: Sequence[names.IPAddress] = (),
    ca_folder: Path | None = None,
    ca_name: str = "airtrust local root CA",
    key_type: keys.KeyType = keys.DEFAULT_KEY_TYPE,
    passphrase: bytes | None = None,
    profile: Profile | None = None,
) -> QuickstartReport:
    """Create (or reuse) CA, server certificate and bundle in ``folder``. Idempotent."""
    domain = names.normalise_dns_name(domain)
    profile = profile or load_profile()
    report = QuickstartReport(str(folder), domain)
    outputs = OutputSet(force=True)
    if ca_folder is not None:
        ca = load_authority(ca_folder, passphrase=passphrase)
        report.step("ca", "reused", f"external CA {ca.certificate.subject.rfc4514_string()}")
    elif (folder / CA_CERT).exists() or (folder / CA_KEY).exists():
        ca = load_authority(folder, passphrase=passphrase)
        report.step("ca", "reused", ca.certificate.subject.rfc4514_string())
    else:
        created = create_ca(
            folder, authority.CASpec(ca_name), key_type, now=now, passphrase=passphrase
        )
        ca = created.authority
        outputs.files.extend(created.outputs.files)
        report.step("ca", "created", ca.certificate.subject.rfc4514_string())

    bundle: Bundle = build_bundle(
        [a for c in ca.chain for a in read_certificates(certificate_to_pem(c), "CA chain")],
        now=now,
    )
    bundle_pem = bundle.to_pem()
    bundle_path = folder / BUNDLE
    if bundle_path.exists() and bundle_path.read_bytes() == bundle_pem:
        report.step("bundle", "unchanged", f"{len(bundle.anchors)} CA certificate(s)")
    else:
        outputs.add(bundle_path, bundle_pem)
        report.step("bundle", "written", f"{len(bundle.anchors)} CA certificate(s)")

    why = _server_reusable(folder, ca, domain, sans, now)
    if why is None:
        report.step("tls", "reused", f"{TLS_CERT} for {domain}")
    else:
        server = issue_server_files(
            ca,
            authority.ServerSpec(domain, tuple(sans), tuple(ips)),
            key_type,
            out=folder,
            now=now,
            force=True,
        )
        outputs.files.extend(server.outputs.files)
        report.warnings.extend(server.warnings)
        report.step("tls", "issued", f"{TLS_CERT} for {domain} ({why})")
    outputs.commit()
    report.next_steps = [
        *manual_steps(
            profile,
            profile.default_version,
            bundle=folder / BUNDLE,
            cert=folder / TLS_CERT,
            key=folder / TLS_KEY,
        ),
        Step(f"airtrust verify --ca {folder / BUNDLE} https://{domain}", When.LATER),
    ]
    return report
