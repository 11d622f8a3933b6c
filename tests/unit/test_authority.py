"""CA creation and issuance (pure code, our own verifier as the judge)."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest
from cryptography import x509

from airtrust.errors import CertificateError, PrivateKeyError, VerificationFailed
from airtrust.pki import authority, keys
from airtrust.pki.verify import Profile, verify_server

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


def _root(**kw: object) -> tuple[x509.Certificate, keys.CertificateIssuerPrivateKeyTypes]:
    key = keys.generate_key(keys.KeyType.EC_P256)
    return authority.create_root(authority.CASpec("Test Root", **kw), key, now=NOW), key  # type: ignore[arg-type]


@pytest.mark.parametrize("key_type", list(keys.KeyType))
def test_every_key_type_issues_a_verifiable_chain(key_type: keys.KeyType) -> None:
    key = keys.generate_key(key_type)
    root = authority.create_root(authority.CASpec("Root"), key, now=NOW)
    inter_key = keys.generate_key(key_type)
    inter = authority.create_intermediate(
        authority.CASpec("Inter"), inter_key, issuer_chain=[root], issuer_key=key, now=NOW
    ).certificate
    leaf = authority.issue_server(
        authority.ServerSpec("runai.example.com", ("*.runai.example.com",)),
        keys.generate_key(key_type).public_key(),
        issuer_chain=[inter, root],
        issuer_key=inter_key,
        now=NOW,
    ).certificate
    for host in ("runai.example.com", "ws1.runai.example.com"):
        result = verify_server(leaf, anchors=[root], intermediates=[inter], hostname=host, now=NOW)
        assert [c.subject for c in result.chain] == [leaf.subject, inter.subject, root.subject]
    assert inter.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0


def test_root_profile() -> None:
    root, _ = _root()
    bc = root.extensions.get_extension_for_class(x509.BasicConstraints)
    ku = root.extensions.get_extension_for_class(x509.KeyUsage)
    assert bc.critical and bc.value.ca and bc.value.path_length is None
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert root.not_valid_after_utc - NOW == dt.timedelta(days=3650)


def test_name_constraints_refuse_outside_names() -> None:
    root, key = _root(
        permitted_dns=("corp.example",), permitted_ip=(ipaddress.ip_network("10.0.0.0/8"),)
    )
    nc = root.extensions.get_extension_for_class(x509.NameConstraints)
    assert nc.critical
    ok = authority.issue_server(
        authority.ServerSpec("runai.corp.example", ips=(ipaddress.ip_address("10.1.2.3"),)),
        keys.generate_key(keys.KeyType.EC_P256).public_key(),
        issuer_chain=[root],
        issuer_key=key,
        now=NOW,
    )
    verify_server(ok.certificate, anchors=[root], now=NOW)
    for spec in (
        authority.ServerSpec("runai.other.example"),
        authority.ServerSpec("runai.corp.example", ips=(ipaddress.ip_address("192.168.1.1"),)),
    ):
        with pytest.raises(CertificateError) as info:
            authority.issue_server(
                spec,
                keys.generate_key(keys.KeyType.EC_P256).public_key(),
                issuer_chain=[root],
                issuer_key=key,
                now=NOW,
            )
        assert info.value.reference == "name-constraint"


def test_leaf_outliving_its_ca_is_warned() -> None:
    key = keys.generate_key(keys.KeyType.EC_P256)
    root = authority.create_root(authority.CASpec("Short Root", days=100), key, now=NOW)
    issued = authority.issue_server(
        authority.ServerSpec("a.example.com"),
        keys.generate_key(keys.KeyType.EC_P256).public_key(),
        issuer_chain=[root],
        issuer_key=key,
        now=NOW,
    )
    assert issued.warnings and "expires on" in issued.warnings[0]
    with pytest.raises(VerificationFailed) as info:
        verify_server(issued.certificate, anchors=[root], now=NOW + dt.timedelta(days=200))
    assert info.value.reason == "ca-expired"


def test_path_length_zero_cannot_sign_a_ca() -> None:
    root, key = _root(path_length=0)
    with pytest.raises(CertificateError):
        authority.create_intermediate(
            authority.CASpec("Inter"),
            keys.generate_key(keys.KeyType.EC_P256),
            issuer_chain=[root],
            issuer_key=key,
            now=NOW,
        )


def test_mismatched_key_is_refused() -> None:
    root, _ = _root()
    with pytest.raises(CertificateError):
        authority.issue_server(
            authority.ServerSpec("a.example.com"),
            keys.generate_key(keys.KeyType.EC_P256).public_key(),
            issuer_chain=[root],
            issuer_key=keys.generate_key(keys.KeyType.EC_P256),
            now=NOW,
        )


@pytest.mark.parametrize("bad", ["", "10.0.0.1", "-bad-.example.com", "*.com", "bü.example.com"])
def test_bad_domains(bad: str) -> None:
    with pytest.raises(CertificateError):
        authority.ServerSpec(bad).all_dns()


def test_encrypted_keys_round_trip_and_wrong_passphrase() -> None:
    key = keys.generate_key(keys.KeyType.EC_P256)
    pem = keys.key_to_pem(key, b"s3cret")
    assert b"ENCRYPTED PRIVATE KEY" in pem
    loaded = keys.key_from_pem(pem, source="ca.key", passphrase=b"s3cret")
    assert keys.public_key_matches(loaded, key.public_key())
    with pytest.raises(PrivateKeyError) as wrong:
        keys.key_from_pem(pem, source="ca.key", passphrase=b"nope")
    assert wrong.value.reference == "wrong-passphrase"
    with pytest.raises(PrivateKeyError) as missing:
        keys.key_from_pem(pem, source="ca.key")
    assert missing.value.reference == "key-encrypted"


def test_relaxed_profile_accepts_only_what_it_says() -> None:
    """A CA with non-critical basicConstraints: strict refuses, relaxed accepts."""
    from cryptography.hazmat.primitives import hashes

    key = keys.generate_key(keys.KeyType.EC_P256)
    name = x509.Name.from_rfc4514_string("CN=Legacy CA")
    root = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=False)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), True
        )
        .sign(key, hashes.SHA256())
    )
    leaf = authority.issue_server(
        authority.ServerSpec("legacy.example.com"),
        keys.generate_key(keys.KeyType.EC_P256).public_key(),
        issuer_chain=[root],
        issuer_key=key,
        now=NOW,
    ).certificate
    with pytest.raises(VerificationFailed) as info:
        verify_server(leaf, anchors=[root], now=NOW)
    assert info.value.reason == "profile"
    assert "relaxed" in info.value.hint
    verify_server(leaf, anchors=[root], now=NOW, profile=Profile.RELAXED)
    # Relaxed still checks names and time.
    with pytest.raises(VerificationFailed):
        verify_server(
            leaf, anchors=[root], hostname="x.example.com", now=NOW, profile=Profile.RELAXED
        )
