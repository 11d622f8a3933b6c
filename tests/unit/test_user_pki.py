"""Issue #27 in the pure code: the writer that never deletes a folder, PKCS#12 reading,
what counts as a trust anchor and a target, the 398-day cap and --connect-to's forms."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from hypothesis import given
from hypothesis import strategies as st

from airtrust.errors import (
    BundleError,
    InputError,
    OutputExistsError,
    OutputIsFolder,
    OutputNotAFolder,
    VerificationFailed,
)
from airtrust.files import OutputSet
from airtrust.pki import authority, keys
from airtrust.pki.bundle import PKCS12_KEY_LEFT_OUT, Anchor, read_certificates
from airtrust.pki.choices import BundleFormat, KeyType, Profile
from airtrust.pki.truststore import HASH_DIR_NAMES
from airtrust.pki.verify import ca_anchors, verify_server
from airtrust.probe.tls import Endpoint
from tests.helpers.certs import NOW, make

ROOT = make("Unit Root")
LEAF = make("leaf.example.test", issuer=ROOT, ca=False, dns=("leaf.example.test",))


# --- OutputSet --------------------------------------------------------------------------


@pytest.mark.parametrize("force", [False, True])
def test_a_file_target_that_is_a_folder_is_never_replaced(tmp_path: Path, force: bool) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "keepme").write_text("x")
    outputs = OutputSet(force=force)
    outputs.add(tmp_path / "other.pem", b"other")
    outputs.add(d, b"pem", folder_hint="give a file path (or -f hashdir)")
    with pytest.raises(OutputIsFolder) as info:
        outputs.commit()
    assert info.value.one_line() == (
        f"{d} is a folder; give a file path (or -f hashdir) [output-is-folder]"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # nothing half-written
    assert (d / "keepme").read_text() == "x"


def test_a_link_to_a_folder_is_a_folder_too(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    outputs = OutputSet(force=True)
    outputs.add(tmp_path / "link", b"pem")
    with pytest.raises(OutputIsFolder) as info:
        outputs.commit()
    assert info.value.hint == "give a file path"
    assert (tmp_path / "link").is_symlink() and (tmp_path / "real").is_dir()


def test_a_parent_that_is_a_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "f1").write_bytes(b"")
    outputs = OutputSet(force=True)
    outputs.add(tmp_path / "f1" / "sub" / "ca.crt", b"pem")
    with pytest.raises(OutputNotAFolder) as info:
        outputs.commit()
    assert info.value.message.startswith(f"{tmp_path / 'f1'} is a file, not a folder")


def _tree(path: Path) -> OutputSet:
    outputs = OutputSet(force=True)
    outputs.add_tree(path, [("0123abcd.0", b"pem")], names=HASH_DIR_NAMES)
    return outputs


@pytest.mark.parametrize(
    "foreign", ["keepme", "0123abcd.0.bak", "sub/", "link->0123abcd.0", "ABCDEF01.0"]
)
def test_a_tree_replaces_only_a_folder_of_its_own_names(tmp_path: Path, foreign: str) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "89abcdef.1").write_bytes(b"old")
    if foreign.endswith("/"):
        (d / foreign.rstrip("/")).mkdir()
    elif "->" in foreign:
        name, target = foreign.split("->")
        (d / name).symlink_to(target)
    else:
        (d / foreign).write_bytes(b"mine")
    before = sorted(p.name for p in d.iterdir())
    with pytest.raises(OutputIsFolder, match="which airtrust did not write"):
        _tree(d).commit()
    assert sorted(p.name for p in d.iterdir()) == before


def test_a_tree_replaces_its_own_earlier_output_and_fills_an_empty_folder(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    outputs = OutputSet()  # no --force: an empty folder loses nothing
    outputs.add_tree(d, [("0123abcd.0", b"one")], names=HASH_DIR_NAMES)
    outputs.commit()
    with pytest.raises(OutputExistsError):
        again = OutputSet()
        again.add_tree(d, [("0123abcd.0", b"two")], names=HASH_DIR_NAMES)
        again.commit()
    _tree(d).commit()
    assert {p.name: p.read_bytes() for p in d.iterdir()} == {"0123abcd.0": b"pem"}


# --- PKCS#12 ----------------------------------------------------------------------------


def _p12(password: bytes | None, *, key: bool = True) -> bytes:
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return pkcs12.serialize_key_and_certificates(
        b"leaf", LEAF.key if key else None, LEAF.cert if key else None, [ROOT.cert], encryption
    )


def test_pkcs12_gives_its_certificates_and_never_its_key() -> None:
    anchors = read_certificates(_p12(None), "x.p12")
    assert [a.certificate for a in anchors] == [LEAF.cert, ROOT.cert]
    assert [a.origin for a in anchors] == ["x.p12 (PKCS#12 #1)", "x.p12 (PKCS#12 #2)"]
    assert all(a.notes == (PKCS12_KEY_LEFT_OUT,) for a in anchors)
    assert all(isinstance(a, Anchor) for a in anchors)
    only_ca = read_certificates(_p12(None, key=False), "ca.p12")
    assert [a.certificate for a in only_ca] == [ROOT.cert] and only_ca[0].notes == ()


def test_pkcs12_passwords() -> None:
    sealed = _p12(b"pw")
    assert len(read_certificates(sealed, "s.p12", password=b"pw")) == 2
    with pytest.raises(BundleError) as missing:
        read_certificates(sealed, "s.p12")
    assert missing.value.reference == "pkcs12-password-needed"
    assert "--password-env" in missing.value.hint and "--password-file" in missing.value.hint
    with pytest.raises(BundleError) as wrong:
        read_certificates(sealed, "s.p12", password=b"nope")
    assert wrong.value.reference == "pkcs12-wrong-password"
    java = _p12(b"changeit")  # Java's default opens without being asked for
    assert len(read_certificates(java, "java.p12")) == 2


@given(st.binary(max_size=64))
def test_anything_shaped_like_pkcs12_is_one_bundle_error(tail: bytes) -> None:
    data = b"\x30\x82\x01\x00\x02\x01\x03\x30\x0b\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x01"
    with pytest.raises(BundleError):
        read_certificates(data + tail, "fuzz.p12")


# --- anchors and targets ------------------------------------------------------------------


def test_ca_anchors_refuses_a_file_without_a_ca_and_drops_leaves_beside_cas() -> None:
    with pytest.raises(BundleError) as info:
        ca_anchors("tls.crt", [Anchor(LEAF.cert, "tls.crt")])
    assert info.value.reference == "no-ca-in-bundle"
    assert info.value.message.startswith("tls.crt holds no CA certificate")
    cas, others = ca_anchors("m.pem", [Anchor(LEAF.cert, "m"), Anchor(ROOT.cert, "m")])
    assert cas == [ROOT.cert] and others == ["CN=leaf.example.test"]


def test_a_ca_as_target_is_named_before_any_san_advice() -> None:
    with pytest.raises(VerificationFailed) as info:
        verify_server(ROOT.cert, anchors=[ROOT.cert], now=NOW)
    assert info.value.reason == "leaf-is-ca"
    assert "pass the server certificate" in info.value.hint
    assert "SAN" not in info.value.one_line()
    assert verify_server(LEAF.cert, anchors=[ROOT.cert], now=NOW).chain[-1] == ROOT.cert


# --- the 398-day cap ---------------------------------------------------------------------


@pytest.mark.parametrize(("days", "warns"), [(1, False), (397, False), (398, True), (5000, True)])
def test_server_certificates_over_the_browser_cap_warn(days: int, warns: bool) -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    ca_key = keys.generate_key(KeyType.EC_P256)
    root = authority.create_root(authority.CASpec("Cap Root"), ca_key, now=now)
    issued = authority.issue_server(
        authority.ServerSpec("cap.example.test", days=days),
        keys.generate_key(KeyType.EC_P256).public_key(),
        issuer_chain=[root],
        issuer_key=ca_key,
        now=now,
    )
    capped = [w for w in issued.warnings if "398-day cap" in w]
    assert bool(capped) is warns
    if warns:
        assert "CA/Browser Forum" in capped[0] and f"valid for {days} days" in capped[0]


# --- typed choices ------------------------------------------------------------------------


def test_choices_are_the_core_enums() -> None:
    assert keys.KeyType is KeyType
    from airtrust.pki import verify

    assert verify.Profile is Profile
    assert [f.value for f in BundleFormat] == ["pem", "pkcs12", "jks", "hashdir"]


# --- --connect-to ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "address", "port"),
    [
        ("10.0.0.1", "10.0.0.1", 443),
        ("10.0.0.1:8443", "10.0.0.1", 8443),
        ("a.example:443:10.0.0.1:8443", "10.0.0.1", 8443),
        ("A.EXAMPLE:443:10.0.0.1:8443", "10.0.0.1", 8443),
        (":443:10.0.0.1:8443", "10.0.0.1", 8443),
        ("a.example:443::8443", "a.example", 8443),
    ],
)
def test_connect_to_forms(rule: str, address: str, port: int) -> None:
    from airtrust.cli.inspect import route

    routed = route(Endpoint("a.example", 443), rule)
    assert (routed.host, routed.connect_to, routed.port) == ("a.example", address, port)


@pytest.mark.parametrize(
    "rule", ["", ":", "a:b:c", "a.example:443:10.0.0.1", "b.example:443:1.2.3.4:1", "x:0", "x:y"]
)
def test_connect_to_refuses_the_rest(rule: str) -> None:
    from airtrust.cli.inspect import route

    with pytest.raises(InputError, match="--connect-to"):
        route(Endpoint("a.example", 443), rule)
