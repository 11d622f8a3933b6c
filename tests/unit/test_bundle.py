"""Bundle reading and canonical writing (pure code, no servers)."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import warnings

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airtrust.errors import AirtrustError, BundleError
from airtrust.pki.bundle import (
    Bundle,
    build_bundle,
    fingerprint,
    parse_bundle,
    pem_fingerprints,
    read_certificates,
)
from tests.conftest import DATA
from tests.helpers.certs import make

CORPUS = DATA / "bad-input"
NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)  # inside every corpus CA's validity

#: Every corpus file with the result it must give (tests/data/bad-input/expected.json):
#: accepted with N certificates (and a note), or refused with a reference and words.
EXPECTED: dict[str, dict[str, object]] = json.loads((CORPUS / "expected.json").read_text())
OK_FILES = {n: int(str(e["certificates"])) for n, e in EXPECTED.items() if "certificates" in e}
BAD_FILES = {n: str(e["error"]) for n, e in EXPECTED.items() if "error" in e}


def test_every_corpus_file_has_an_expected_result() -> None:
    on_disk = {p.name for p in CORPUS.iterdir() if p.name != "expected.json"}
    assert on_disk == set(EXPECTED)


def _parse(name: str, **kw: bool) -> Bundle:
    return parse_bundle([(name, (CORPUS / name).read_bytes())], now=NOW, **kw)


@pytest.mark.parametrize(("name", "count"), sorted(OK_FILES.items()))
def test_accepted_inputs(name: str, count: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no library warning may reach a user
        bundle = _parse(name)
    assert len(bundle.anchors) == count
    assert bundle.to_pem().count(b"-----BEGIN CERTIFICATE-----") == count
    assert bundle.duplicates == EXPECTED[name].get("duplicates", 0)
    note = EXPECTED[name].get("note")
    assert bundle.notes == ((note,) if note else ())


@pytest.mark.parametrize(("name", "reference"), sorted(BAD_FILES.items()))
def test_rejected_inputs(name: str, reference: str) -> None:
    with pytest.raises(BundleError) as info:
        _parse(name)
    assert info.value.reference == reference
    assert name in info.value.message
    assert info.value.one_line() == EXPECTED[name]["result"]
    assert info.value.hint


def test_key_error_never_echoes_key_material() -> None:
    data = (CORPUS / "key-in-bundle.pem").read_bytes()
    key_body = data.split(b"-----BEGIN PRIVATE KEY-----")[1].split(b"-----END")[0].strip()
    with pytest.raises(BundleError) as info:
        _parse("key-in-bundle.pem")
    text = info.value.one_line()
    assert "block 2" in text
    for line in key_body.splitlines():
        assert line.decode() not in text


def test_escape_hatches() -> None:
    assert len(_parse("leaf-only.pem", allow_leaf=True).anchors) == 1
    assert len(_parse("expired-ca.pem", allow_expired=True).anchors) == 1


def test_same_set_same_bytes_whatever_the_order() -> None:
    cas = [make(f"CA {i}") for i in range(4)]
    outputs = set()
    for perm in itertools.permutations(cas):
        anchors = [a for m in perm for a in read_certificates(m.pem, "x")]
        outputs.add(build_bundle(anchors, now=dt.datetime.now(dt.UTC)).to_pem())
    assert len(outputs) == 1


def test_comments_and_trailing_newlines() -> None:
    cas = [make("Alpha CA"), make("Beta CA")]
    data = b"".join(m.pem.rstrip(b"\n") + b"\n\n" for m in cas)
    bundle = parse_bundle([("in", data)], now=dt.datetime.now(dt.UTC))
    pem = bundle.to_pem(comments=True)
    assert pem.startswith(b"# CN=Alpha CA\n-----BEGIN CERTIFICATE-----")
    assert pem.endswith(b"-----END CERTIFICATE-----\n")
    assert b"-----\n# CN=Beta CA\n" in pem


def test_size_limit_names_the_fix() -> None:
    cas = [make(f"CA {i}") for i in range(3)]
    anchors = [a for m in cas for a in read_certificates(m.pem, "x")]
    with pytest.raises(BundleError) as info:
        build_bundle(anchors, now=dt.datetime.now(dt.UTC), max_bytes=1000)
    assert info.value.reference == "bundle-too-large"


_VALID = [make(f"Hypothesis CA {i}") for i in range(3)]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_any_bytes_give_a_bundle_or_our_error(data: bytes) -> None:
    try:
        parse_bundle([("fuzz", data)], now=dt.datetime.now(dt.UTC))
    except AirtrustError:
        pass


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(range(3)), min_size=1, max_size=5),
    st.integers(min_value=0, max_value=4000),
    st.binary(max_size=8),
    st.booleans(),
)
def test_mangled_pem_gives_a_bundle_or_our_error(
    picks: list[int], cut: int, noise: bytes, crlf: bool
) -> None:
    data = b"".join(_VALID[i].pem for i in picks)
    data = data[:cut] + noise + data[cut:]
    if crlf:
        data = data.replace(b"\n", b"\r\n")
    try:
        parse_bundle([("fuzz", data)], now=dt.datetime.now(dt.UTC))
    except AirtrustError:
        pass


@settings(max_examples=50)
@given(st.lists(st.sampled_from(range(3)), min_size=1, max_size=6), st.booleans())
def test_build_read_build_is_a_fixed_point(picks: list[int], comments: bool) -> None:
    now = dt.datetime.now(dt.UTC)
    data = b"".join(_VALID[i].pem for i in picks)
    first = parse_bundle([("a", data)], now=now).to_pem(comments=comments)
    second = parse_bundle([("b", first)], now=now).to_pem(comments=comments)
    assert first == second
    assert len(set(picks)) == first.count(b"BEGIN CERTIFICATE")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_remembered_fingerprints_are_what_reading_the_bundle_gives(name: str) -> None:
    """pem_fingerprints answers from memory on a second read of the same bytes; both
    answers are read_certificates' own (None where it refuses the file)."""
    data = (CORPUS / name).read_bytes()
    try:
        want: frozenset[str] | None = frozenset(
            a.fingerprint for a in read_certificates(data, name)
        )
    except Exception:
        want = None
    assert pem_fingerprints(data) == want
    assert pem_fingerprints(data) == want  # the remembered answer


def test_fingerprint_is_the_sha256_of_the_der_encoding() -> None:
    cert = make("fp").cert
    der = cert.public_bytes(serialization.Encoding.DER)
    assert fingerprint(cert) == hashlib.sha256(der).hexdigest()
