"""pki/tlssecret.py: one TLS secret judged in the order clients break, with a pinned clock."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from hypothesis import given, settings
from hypothesis import strategies as st

from airtrust.errors import ConfigError, VerificationFailed
from airtrust.pki import authority, keys
from airtrust.pki.bundle import fingerprint
from airtrust.pki.tlssecret import (
    RENEW_BEFORE,
    TLS_TYPE,
    Problem,
    TLSMaterial,
    judge_tls_secret,
    served_chain,
    tls_material,
)

NOW = dt.datetime(2026, 5, 4, 9, 30, tzinfo=dt.UTC)
WINDOW = dt.timedelta(days=30)
HOSTS = ("runai.example.com", "*.runai.example.com")
IP = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class CA:
    cert: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes


@dataclass(frozen=True)
class Leaf:
    chain: tuple[x509.Certificate, ...]
    key: CertificateIssuerPrivateKeyTypes

    @property
    def chain_pem(self) -> bytes:
        return authority.chain_pem(self.chain)

    @property
    def key_pem(self) -> bytes:
        return keys.key_to_pem(self.key)


def _root(name: str, days: int = authority.DEFAULT_CA_DAYS) -> CA:
    key = keys.generate_key(keys.KeyType.EC_P256)
    return CA(authority.create_root(authority.CASpec(name, days=days), key, now=NOW), key)


def _leaf(
    issuer: CA,
    *,
    dns: tuple[str, ...] = ("*.runai.example.com",),
    ips: tuple[IP, ...] = (),
    days: int = authority.DEFAULT_SERVER_DAYS,
    above: tuple[x509.Certificate, ...] = (),
) -> Leaf:
    key = keys.generate_key(keys.KeyType.EC_P256)
    cert = authority.issue_server(
        authority.ServerSpec("runai.example.com", dns, ips=ips, days=days),
        key.public_key(),
        issuer_chain=[issuer.cert, *above],
        issuer_key=issuer.key,
        now=NOW,
    ).certificate
    return Leaf((cert, *above) if above else (cert,), key)


ROOT = _root("TLS Test Root")
OTHER = _root("Other Root")
LEAF = _leaf(ROOT)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _secret(chain_pem: bytes, key_pem: bytes, secret_type: str = TLS_TYPE) -> dict[str, Any]:
    return {
        "type": secret_type,
        "data": {"tls.crt": _b64(chain_pem), "tls.key": _b64(key_pem)},
    }


def _judge(
    live: dict[str, Any] | None,
    *,
    hosts: tuple[str, ...] = HOSTS,
    anchors: tuple[x509.Certificate, ...] = (ROOT.cert,),
    now: dt.datetime = NOW,
    window: dt.timedelta = WINDOW,
) -> Any:
    return judge_tls_secret(live, hosts=hosts, anchors=anchors, now=now, window=window)


def test_a_sound_secret_says_what_it_covers_and_how_long() -> None:
    verdict = _judge(_secret(LEAF.chain_pem, LEAF.key_pem))
    assert verdict.sound and verdict.problem is None
    assert verdict.pair is not None
    assert verdict.pair.leaf == LEAF.chain[0]
    assert verdict.pair.chain == LEAF.chain
    assert verdict.pair.material == TLSMaterial(
        LEAF.chain_pem, LEAF.key_pem, fingerprint(LEAF.chain[0])
    )
    assert verdict.days_left == 397
    assert not verdict.expiring and not verdict.outlives_ca
    assert verdict.detail == (
        "CN=runai.example.com for runai.example.com, *.runai.example.com, chain verifies, "
        "397 days left"
    )
    assert RENEW_BEFORE == dt.timedelta(days=30)


def test_missing_and_wrong_type_come_first() -> None:
    missing = _judge(None)
    assert (missing.problem, missing.detail, missing.pair) == (Problem.MISSING, "missing", None)
    assert not missing.sound
    opaque = _judge(_secret(LEAF.chain_pem, LEAF.key_pem, secret_type="Opaque"))
    assert opaque.problem is Problem.WRONG_TYPE
    assert opaque.detail == "type is Opaque, must be kubernetes.io/tls"
    untyped = _judge({"data": {}})
    assert untyped.detail == "type is None, must be kubernetes.io/tls"


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (None, "unreadable: no key 'tls.crt'"),
        ({"tls.crt": _b64(LEAF.chain_pem)}, "unreadable: no key 'tls.key'"),
        (
            {"tls.crt": _b64(b"not a certificate"), "tls.key": _b64(LEAF.key_pem)},
            "unreadable: tls.crt is not PEM, DER or PKCS#7",
        ),
        (
            {"tls.crt": _b64(b""), "tls.key": _b64(LEAF.key_pem)},
            "unreadable: tls.crt is empty",
        ),
        (
            {"tls.crt": _b64(LEAF.chain_pem), "tls.key": _b64(b"-----BEGIN nonsense")},
            "unreadable: tls.key is not a PEM private key",
        ),
    ],
)
def test_unreadable_secrets_name_the_part(data: dict[str, str] | None, detail: str) -> None:
    verdict = _judge({"type": TLS_TYPE, "data": data})
    assert (verdict.problem, verdict.detail, verdict.pair) == (Problem.UNREADABLE, detail, None)


def test_bad_base64_is_unreadable_not_an_exception() -> None:
    verdict = _judge({"type": TLS_TYPE, "data": {"tls.crt": "!!not base64!!", "tls.key": "x"}})
    assert verdict.problem is Problem.UNREADABLE
    assert verdict.detail.startswith("unreadable: ") and "base64" in verdict.detail
    assert verdict.pair is None


def test_a_key_of_another_certificate_is_a_mismatch_before_names_are_checked() -> None:
    stranger = keys.key_to_pem(keys.generate_key(keys.KeyType.EC_P256))
    verdict = _judge(_secret(LEAF.chain_pem, stranger), hosts=("elsewhere.example.org",))
    assert verdict.problem is Problem.KEY_MISMATCH
    assert verdict.detail == "tls.key does not match tls.crt"
    assert verdict.pair is None
    rsa = keys.key_to_pem(keys.generate_key(keys.KeyType.RSA_2048))
    assert _judge(_secret(LEAF.chain_pem, rsa)).problem is Problem.KEY_MISMATCH


def test_names_not_covered_lists_the_sans() -> None:
    leaf = _leaf(ROOT, dns=(), ips=(ipaddress.ip_address("10.0.0.5"),))
    verdict = _judge(_secret(leaf.chain_pem, leaf.key_pem), hosts=("runai.example.com", "*.x.io"))
    assert verdict.problem is Problem.NAMES_NOT_COVERED
    assert verdict.detail == "SANs runai.example.com, 10.0.0.5 do not cover *.x.io"
    assert verdict.pair is not None  # readable: doctor shows the certificate anyway


def test_a_wildcard_host_needs_a_wildcard_certificate() -> None:
    bare = _leaf(ROOT, dns=())
    verdict = _judge(_secret(bare.chain_pem, bare.key_pem))
    assert verdict.problem is Problem.NAMES_NOT_COVERED
    assert verdict.detail == "SANs runai.example.com do not cover *.runai.example.com"
    assert _judge(_secret(bare.chain_pem, bare.key_pem), hosts=("runai.example.com",)).sound


def test_a_certificate_from_another_ca_is_untrusted() -> None:
    verdict = _judge(_secret(LEAF.chain_pem, LEAF.key_pem), anchors=(OTHER.cert,))
    assert verdict.problem is Problem.UNTRUSTED
    assert verdict.detail == (
        "'CN=runai.example.com' was issued by 'CN=TLS Test Root', which is neither in the CA "
        "bundle nor sent as an intermediate"
    )


def test_an_intermediate_must_be_in_the_secret() -> None:
    inter_key = keys.generate_key(keys.KeyType.EC_P256)
    inter = authority.create_intermediate(
        authority.CASpec("TLS Issuing CA"),
        inter_key,
        issuer_chain=[ROOT.cert],
        issuer_key=ROOT.key,
        now=NOW,
    ).certificate
    full = _leaf(CA(inter, inter_key), above=(inter,))
    assert _judge(_secret(full.chain_pem, full.key_pem)).sound
    leaf_only = _judge(_secret(authority.chain_pem(full.chain[:1]), full.key_pem))
    assert leaf_only.problem is Problem.UNTRUSTED
    assert "neither in the CA bundle nor sent as an intermediate" in leaf_only.detail


def test_expired_at_the_pinned_time_is_untrusted() -> None:
    after = LEAF.chain[0].not_valid_after_utc + dt.timedelta(seconds=1)
    verdict = _judge(_secret(LEAF.chain_pem, LEAF.key_pem), now=after)
    assert verdict.problem is Problem.UNTRUSTED
    expires = NOW + dt.timedelta(days=397)
    assert verdict.detail == f"'CN=runai.example.com' expired on {expires:%Y-%m-%d %H:%M} UTC"


def test_near_expiry_is_sound_but_expiring_and_the_window_is_exclusive() -> None:
    live = _secret(LEAF.chain_pem, LEAF.key_pem)
    later = NOW + dt.timedelta(days=380)  # 17 days before the end
    near = _judge(live, now=later)
    assert near.sound and near.expiring and near.days_left == 17
    assert near.detail.endswith("chain verifies, 17 days left")
    # Exactly the window left: not yet expiring (left < window).
    assert not _judge(live, now=later, window=dt.timedelta(days=17)).expiring
    assert _judge(live, now=later, window=dt.timedelta(days=17, seconds=1)).expiring
    # A zero window (the session's) never calls a sound secret expiring.
    assert not _judge(live, now=later, window=dt.timedelta(0)).expiring


def test_a_leaf_that_outlives_its_ca_is_flagged() -> None:
    short = _root("Short Root", days=100)
    leaf = _leaf(short)
    verdict = _judge(_secret(leaf.chain_pem, leaf.key_pem), anchors=(short.cert,))
    assert verdict.sound and verdict.outlives_ca
    assert verdict.days_left == 397  # the leaf's own end, not the CA's
    # Only the issuer counts: a long-lived unrelated anchor beside it changes nothing,
    # and the same leaf judged against a long-lived issuer does not outlive it.
    both = _judge(_secret(leaf.chain_pem, leaf.key_pem), anchors=(ROOT.cert, short.cert))
    assert both.outlives_ca
    assert not _judge(_secret(LEAF.chain_pem, LEAF.key_pem)).outlives_ca


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=397 * 86400 - 1), st.integers(0, 400))
def test_days_left_and_expiring_follow_the_clock(elapsed: int, window_days: int) -> None:
    now = NOW + dt.timedelta(seconds=elapsed)
    window = dt.timedelta(days=window_days)
    verdict = _judge(_secret(LEAF.chain_pem, LEAF.key_pem), now=now, window=window)
    left = LEAF.chain[0].not_valid_after_utc - now
    assert verdict.sound
    assert verdict.days_left == left.days
    assert verdict.expiring is (left < window)


def test_served_chain_reads_tls_crt_or_gives_none() -> None:
    inter_key = keys.generate_key(keys.KeyType.EC_P256)
    inter = authority.create_intermediate(
        authority.CASpec("Served CA"),
        inter_key,
        issuer_chain=[ROOT.cert],
        issuer_key=ROOT.key,
        now=NOW,
    ).certificate
    leaf = _leaf(CA(inter, inter_key), above=(inter,))
    assert served_chain(_secret(leaf.chain_pem, b"")) == list(leaf.chain)
    assert served_chain(None) is None
    assert served_chain({}) is None
    assert served_chain({"data": None}) is None
    assert served_chain({"data": {"tls.crt": "%%%"}}) is None
    assert served_chain({"data": {"tls.crt": _b64(b"garbage")}}) is None


def test_tls_material_accepts_only_a_matching_trusted_pair() -> None:
    material = tls_material(
        LEAF.chain_pem,
        LEAF.key_pem,
        chain_source="tls.crt",
        key_source="tls.key",
        anchors=[ROOT.cert],
        now=NOW,
    )
    assert material == TLSMaterial(LEAF.chain_pem, LEAF.key_pem, fingerprint(LEAF.chain[0]))

    with pytest.raises(ConfigError) as mismatch:
        tls_material(
            LEAF.chain_pem,
            keys.key_to_pem(keys.generate_key(keys.KeyType.EC_P256)),
            chain_source="server.crt",
            key_source="server.key",
            anchors=[ROOT.cert],
            now=NOW,
        )
    assert mismatch.value.message == "server.key does not belong to server.crt"
    assert mismatch.value.hint == "give the matching key"
    assert mismatch.value.reference == "bad-config"
    assert mismatch.value.__cause__ is None and mismatch.value.__suppress_context__

    with pytest.raises(VerificationFailed) as foreign:
        tls_material(
            LEAF.chain_pem,
            LEAF.key_pem,
            chain_source="c",
            key_source="k",
            anchors=[OTHER.cert],
            now=NOW,
        )
    assert foreign.value.reason == "unknown-issuer"
    assert foreign.value.reference == "verify-unknown-issuer"

    with pytest.raises(VerificationFailed) as expired:
        tls_material(
            LEAF.chain_pem,
            LEAF.key_pem,
            chain_source="c",
            key_source="k",
            anchors=[ROOT.cert],
            now=NOW + dt.timedelta(days=398),
        )
    assert expired.value.reason == "expired"


def test_with_no_host_to_check_the_chain_is_still_judged() -> None:
    untrusted = _judge(_secret(LEAF.chain_pem, LEAF.key_pem), hosts=(), anchors=(OTHER.cert,))
    assert untrusted.problem is Problem.UNTRUSTED
    assert _judge(_secret(LEAF.chain_pem, LEAF.key_pem), hosts=()).problem is None
