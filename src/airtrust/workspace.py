"""The folders airtrust reads and writes, and the steps that fill them.

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

from cryptography import x509

from airtrust.errors import InputError
from airtrust.files import OutputSet, read_input
from airtrust.pki import authority, keys, names
from airtrust.pki.authority import Authority, chain_pem
from airtrust.pki.bundle import certificate_to_pem, read_certificates
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
    "chain_pem",
    "create_ca",
    "issue_server_files",
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
