"""airtrust's verifier against the public x509-limbo vectors (tests/data/x509-limbo,
vendored from shared/data with its Apache-2.0 LICENSE, so a clone runs on its own).

Every case must give the expected result, except the ones listed in
DEVIATIONS, each with the reason airtrust deliberately differs.
"""

from __future__ import annotations

import datetime as dt
import json
import warnings

import pytest
from cryptography import x509

from airtrust.errors import VerificationFailed
from airtrust.pki.verify import verify_server
from tests.conftest import DATA

LIMBO = DATA / "x509-limbo"

DEVIATIONS = {
    # Stricter than the vector, on purpose:
    "pathlen::validation-ignores-pathlen-in-leaf": "a CA certificate served as a TLS server "
    "certificate is refused (CABF: subscriber certificates are not CAs)",
    "rfc5280::eku::ee-without-eku": "the web-PKI rule wins over plain RFC 5280: server "
    "certificates must carry serverAuth (webpki::eku::ee-without-eku expects FAILURE)",
    "rfc5280::nc::permitted-dn-match": "server certificates must carry a subjectAltName; Go, "
    "Chrome and Python ignore the common name, so a CN-only certificate breaks the platform",
    "rfc5280::nc::permitted-dns-match-noncritical": "the CA/Browser Forum allows non-critical "
    "nameConstraints (webpki::nc::permitted-dns-match-noncritical expects SUCCESS); we follow it",
    # Limits of pyca/cryptography's path builder, which airtrust wraps:
    "pathlen::self-issued-certs-pathlen": "pyca/cryptography does not build paths through "
    "self-issued (key-rollover) intermediates",
    "pathlen::max-chain-depth-1-self-issued": "same self-issued intermediate limitation",
}


def _cases() -> list[dict[str, object]]:
    cases = json.loads((LIMBO / "limbo.json").read_text())["testcases"]
    for path in sorted((LIMBO / "online").glob("*.json")):
        cases.append(json.loads(path.read_text()))
    return cases


def _load(pem: str) -> x509.Certificate:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # negative-serial vectors warn on load
        return x509.load_pem_x509_certificate(pem.encode())


CASES = _cases()


def test_suite_is_complete() -> None:
    assert len(CASES) == 135 + 14, "tests/data/x509-limbo changed; re-read its README"


@pytest.mark.parametrize("case", CASES, ids=[str(c["id"]) for c in CASES])
def test_limbo_case(case: dict[str, object]) -> None:
    time = case["validation_time"]
    now = dt.datetime.fromisoformat(str(time)) if time else dt.datetime.now(dt.UTC)
    peer_name = case["expected_peer_name"]
    assert isinstance(peer_name, dict)
    try:
        verify_server(
            _load(str(case["peer_certificate"])),
            anchors=[_load(p) for p in case["trusted_certs"]],  # type: ignore[attr-defined]
            intermediates=[_load(p) for p in case["untrusted_intermediates"]],  # type: ignore[attr-defined]
            hostname=peer_name["value"],
            now=now,
            max_depth=case["max_chain_depth"],  # type: ignore[arg-type]
        )
        got = "SUCCESS"
    except VerificationFailed as exc:
        got = "FAILURE"
        assert exc.message and exc.hint and exc.reason
    expected = case["expected_result"]
    if case["id"] in DEVIATIONS:
        assert got != expected, f"{case['id']} now agrees; drop it from DEVIATIONS"
    else:
        assert got == expected, case["description"]
