"""Parse and judge a ``kubernetes.io/tls`` Secret, once, for every use case.

apply decides whether a live TLS secret can be kept, doctor reports what is
wrong with it, rotation asks whether it already chains to the new CA, and the
endpoint check compares the served chain with it. They all ask the same
questions in the same order (readable, key matches, names covered, chain
verifies, time left), so the answers live here and nowhere else.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from airtrust.errors import AirtrustError, ConfigError
from airtrust.pki import keys, names
from airtrust.pki.bundle import fingerprint, read_certificates
from airtrust.pki.inspect import EXPIRY_WARNING_DAYS
from airtrust.pki.verify import verify_server

__all__ = [
    "RENEW_BEFORE",
    "TLS_TYPE",
    "Problem",
    "TLSMaterial",
    "TLSPair",
    "TLSVerdict",
    "judge_tls_secret",
    "served_chain",
    "tls_material",
]

TLS_TYPE = "kubernetes.io/tls"
#: A certificate closer than this to its end is renewed (apply, quickstart) and warned
#: about (doctor's default window).
RENEW_BEFORE = dt.timedelta(days=EXPIRY_WARNING_DAYS)


@dataclass(frozen=True)
class TLSMaterial:
    """A certificate chain and key as they go into a kubernetes.io/tls Secret."""

    chain_pem: bytes
    key_pem: bytes
    fingerprint: str


@dataclass(frozen=True)
class TLSPair:
    """A parsed chain (leaf first) and its key."""

    chain: tuple[x509.Certificate, ...]
    material: TLSMaterial

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]


class Problem(enum.StrEnum):
    """The first thing wrong with a TLS secret; the order is the order of the checks."""

    MISSING = "missing"
    WRONG_TYPE = "wrong-type"
    UNREADABLE = "unreadable"
    KEY_MISMATCH = "key-mismatch"
    NAMES_NOT_COVERED = "names-not-covered"
    UNTRUSTED = "untrusted"


@dataclass(frozen=True)
class TLSVerdict:
    pair: TLSPair | None
    problem: Problem | None
    detail: str
    days_left: int = 0
    #: the leaf expires after the CA that issued it
    outlives_ca: bool = False
    #: the leaf expires within the window the caller asked about
    expiring: bool = False

    @property
    def sound(self) -> bool:
        """Readable, matching, covering and trusted (it may still be expiring)."""
        return self.problem is None


def _decode(value: Any) -> bytes:
    return base64.b64decode(str(value), validate=True)


def _pair(chain_pem: bytes, key_pem: bytes, chain_source: str, key_source: str) -> TLSPair:
    chain = tuple(a.certificate for a in read_certificates(chain_pem, chain_source))
    key = keys.key_from_pem(key_pem, source=key_source)
    if not keys.public_key_matches(key, chain[0].public_key()):
        raise _KeyMismatch
    return TLSPair(chain, TLSMaterial(chain_pem, key_pem, fingerprint(chain[0])))


class _KeyMismatch(Exception):
    pass


def served_chain(live: Mapping[str, Any] | None) -> list[x509.Certificate] | None:
    """The chain a secret holds (``tls.crt``), for comparing with what a server sends."""
    try:
        data = (live or {}).get("data") or {}
        return [a.certificate for a in read_certificates(_decode(data["tls.crt"]), "tls.crt")]
    except (AirtrustError, KeyError, ValueError, binascii.Error):
        return None


def judge_tls_secret(
    live: Mapping[str, Any] | None,
    *,
    hosts: Sequence[str],
    anchors: Sequence[x509.Certificate],
    now: dt.datetime,
    window: dt.timedelta,
) -> TLSVerdict:
    """Everything about one TLS secret, stopping at the first problem that breaks clients."""
    if live is None:
        return TLSVerdict(None, Problem.MISSING, "missing")
    if live.get("type") != TLS_TYPE:
        return TLSVerdict(
            None, Problem.WRONG_TYPE, f"type is {live.get('type')}, must be {TLS_TYPE}"
        )
    data = live.get("data") or {}
    try:
        pair = _pair(_decode(data["tls.crt"]), _decode(data["tls.key"]), "tls.crt", "tls.key")
    except _KeyMismatch:
        return TLSVerdict(None, Problem.KEY_MISMATCH, "tls.key does not match tls.crt")
    except KeyError as exc:
        return TLSVerdict(None, Problem.UNREADABLE, f"unreadable: no key {exc}")
    except (AirtrustError, ValueError, binascii.Error) as exc:
        text = exc.message if isinstance(exc, AirtrustError) else str(exc)
        return TLSVerdict(None, Problem.UNREADABLE, f"unreadable: {text}")
    leaf = pair.leaf
    if not hosts:
        # No name to check: the chain is still judged, never passed unverified.
        try:
            verify_server(leaf, anchors=anchors, intermediates=pair.chain[1:], now=now)
        except AirtrustError as exc:
            return TLSVerdict(pair, Problem.UNTRUSTED, exc.message)
    for host in hosts:
        probe = host.replace("*", "x", 1)
        if not names.covers(leaf, probe):
            dns, ips = names.san_names(leaf)
            shown = ", ".join([*dns, *map(str, ips)]) or "none"
            return TLSVerdict(pair, Problem.NAMES_NOT_COVERED, f"SANs {shown} do not cover {host}")
        try:
            verify_server(
                leaf, anchors=anchors, intermediates=pair.chain[1:], hostname=probe, now=now
            )
        except AirtrustError as exc:
            return TLSVerdict(pair, Problem.UNTRUSTED, exc.message)
    left = leaf.not_valid_after_utc - now
    outlives = any(
        c.subject == leaf.issuer and leaf.not_valid_after_utc > c.not_valid_after_utc
        for c in (*pair.chain[1:], *anchors)
    )
    return TLSVerdict(
        pair,
        None,
        f"{leaf.subject.rfc4514_string()} for {', '.join(hosts)}, chain verifies, "
        f"{left.days} days left",
        days_left=left.days,
        outlives_ca=outlives,
        expiring=left < window,
    )


def tls_material(
    chain_pem: bytes,
    key_pem: bytes,
    *,
    chain_source: str,
    key_source: str,
    anchors: Sequence[x509.Certificate],
    now: dt.datetime,
) -> TLSMaterial:
    """The control plane's certificate and key, refused unless they belong together
    and chain to the bundle (a wrong pair would be distributed everywhere)."""
    try:
        pair = _pair(chain_pem, key_pem, chain_source, key_source)
    except _KeyMismatch:
        raise ConfigError(
            f"{key_source} does not belong to {chain_source}", hint="give the matching key"
        ) from None
    verify_server(pair.leaf, anchors=anchors, intermediates=pair.chain[1:], now=now)
    return pair.material
