"""The folders airtrust reads and writes, and the steps that fill them
(``ca create``, ``cert issue``, and quickstart's first half).

Two layouts are part of the interface:

CA folder (``airtrust ca create --out DIR``)
    ``ca.crt`` the CA certificate; ``ca.key`` its key (0600, maybe
    encrypted); ``chain.pem`` the CA followed by its issuers up to the root
    (for a root, just ``ca.crt``).

Quickstart folder (``airtrust quickstart --out DIR``, filled by
:mod:`airtrust.usecases.quickstart`)
    ``ca.crt``/``ca.key`` as above (when airtrust made the CA), plus
    ``ca-bundle.pem`` (the CA chain: what goes into the ``runai-ca.pem`` key),
    ``tls.crt`` (leaf + intermediates) and ``tls.key`` (for the
    control plane's ``kubernetes.io/tls`` Secret).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from airtrust.errors import InputError
from airtrust.files import OutputSet, read_input
from airtrust.pki import authority, keys, names
from airtrust.pki.authority import Authority, chain_pem
from airtrust.pki.bundle import certificate_to_pem, fingerprint, read_certificates
from airtrust.pki.verify import verify_server

__all__ = [
    "BUNDLE",
    "CA_CERT",
    "CA_CHAIN",
    "CA_KEY",
    "TLS_CERT",
    "TLS_KEY",
    "Authority",
    "CAResult",
    "ServerResult",
    "WrittenCA",
    "WrittenServer",
    "chain_pem",
    "create_ca",
    "create_ca_folder",
    "issue_server_files",
    "issue_to_folder",
    "load_authority",
]

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
CA_CHAIN = "chain.pem"
BUNDLE = "ca-bundle.pem"
TLS_CERT = "tls.crt"
TLS_KEY = "tls.key"


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


# --- the commands: stage, then write all files or none ---------------------------------


@dataclass(frozen=True)
class WrittenCA:
    """What ``ca create`` made and wrote."""

    certificate: x509.Certificate
    files: list[Path]
    warnings: tuple[str, ...]
    key_encrypted: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.certificate.subject.rfc4514_string(),
            "sha256": fingerprint(self.certificate),
            "not_after": self.certificate.not_valid_after_utc.isoformat(),
            "files": [str(p) for p in self.files],
            "key_encrypted": self.key_encrypted,
        }


def create_ca_folder(
    out: Path,
    spec: authority.CASpec,
    key_type: keys.KeyType,
    *,
    now: dt.datetime,
    parent: Path | None = None,
    parent_passphrase: bytes | None = None,
    passphrase: bytes | None = None,
    force: bool = False,
) -> WrittenCA:
    """``ca create``: a root, or with ``parent`` (a CA folder) an intermediate, written
    to ``out``. The parent is loaded (and its key checked) before a key is generated."""
    parent_ca = None if parent is None else load_authority(parent, passphrase=parent_passphrase)
    result = create_ca(
        out, spec, key_type, now=now, parent=parent_ca, passphrase=passphrase, force=force
    )
    written = result.outputs.commit()
    return WrittenCA(result.authority.certificate, written, result.warnings, passphrase is not None)


@dataclass(frozen=True)
class WrittenServer:
    """What ``cert issue`` issued and wrote, and for which names."""

    certificate: x509.Certificate
    names: list[str]
    files: list[Path]
    warnings: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.certificate.subject.rfc4514_string(),
            "names": list(self.names),
            "sha256": fingerprint(self.certificate),
            "not_after": self.certificate.not_valid_after_utc.isoformat(),
            "files": [str(p) for p in self.files],
        }


def issue_to_folder(
    ca_folder: Path,
    spec: authority.ServerSpec,
    key_type: keys.KeyType,
    *,
    out: Path,
    now: dt.datetime,
    passphrase: bytes | None = None,
    force: bool = False,
) -> WrittenServer:
    """``cert issue``: a server certificate from the CA in ``ca_folder``, verified for
    every name it carries, written to ``out`` as ``tls.crt`` (with chain) and ``tls.key``."""
    ca = load_authority(ca_folder, passphrase=passphrase)
    result = issue_server_files(ca, spec, key_type, out=out, now=now, force=force)
    written = result.outputs.commit()
    names = [*spec.all_dns(), *map(str, spec.ips)]
    return WrittenServer(result.certificate, names, written, result.warnings)
