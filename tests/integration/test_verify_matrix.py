"""``airtrust verify`` agrees with ``openssl verify`` on a generated matrix of chains."""

from __future__ import annotations

import datetime as dt
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.helpers.certs import NOW, Made, make, write
from tests.integration.conftest import require

HOST = "app.corp.example"
PAST = NOW - dt.timedelta(days=400)


@dataclass(frozen=True)
class Case:
    name: str
    leaf: Made
    anchors: tuple[Made, ...]
    intermediates: tuple[Made, ...] = ()
    hostname: str = HOST
    reason: str | None = None  # None: must verify


def _cases() -> list[Case]:
    root = make("Matrix Root")
    inter = make("Matrix Issuing CA", issuer=root, path_length=0)
    other = make("Other Root")
    same_name = make("Matrix Root")  # a re-created CA: same name, new key
    expired_root = make("Expired Root", not_before=PAST, not_after=NOW - dt.timedelta(days=1))
    leaf = make(HOST, issuer=root, ca=False, dns=(HOST,))
    leaf_via_inter = make(HOST, issuer=inter, ca=False, dns=(HOST,))
    sub_inter = make("Too Deep CA", issuer=inter)
    constrained = make("Constrained Root", permitted_dns=("corp.example",))
    return [
        Case("valid-direct", leaf, (root,)),
        Case("valid-with-intermediate", leaf_via_inter, (root,), (inter,)),
        Case("valid-intermediate-in-bundle", leaf_via_inter, (root, inter)),
        Case(
            "expired-leaf",
            make(
                HOST,
                issuer=root,
                ca=False,
                dns=(HOST,),
                not_before=PAST,
                not_after=NOW - dt.timedelta(days=2),
            ),
            (root,),
            reason="expired",
        ),
        Case(
            "not-yet-valid-leaf",
            make(
                HOST,
                issuer=root,
                ca=False,
                dns=(HOST,),
                not_before=NOW + dt.timedelta(days=2),
                not_after=NOW + dt.timedelta(days=20),
            ),
            (root,),
            reason="not-yet-valid",
        ),
        Case(
            "expired-ca",
            make(HOST, issuer=expired_root, ca=False, dns=(HOST,), not_before=PAST),
            (expired_root,),
            reason="ca-expired",
        ),
        Case("wrong-ca", leaf, (other,), reason="unknown-issuer"),
        Case("recreated-ca-same-name", leaf, (same_name,), reason="wrong-ca"),
        Case("missing-intermediate", leaf_via_inter, (root,), reason="unknown-issuer"),
        Case(
            "hostname-mismatch",
            leaf,
            (root,),
            hostname="other.corp.example",
            reason="hostname-mismatch",
        ),
        Case(
            "path-length-exceeded",
            make(HOST, issuer=sub_inter, ca=False, dns=(HOST,)),
            (root,),
            (inter, sub_inter),
            reason="path-length-exceeded",
        ),
        Case(
            "name-constraint-violated",
            make(
                "app.elsewhere.example",
                issuer=constrained,
                ca=False,
                dns=("app.elsewhere.example",),
            ),
            (constrained,),
            hostname="app.elsewhere.example",
            reason="name-constraint-violated",
        ),
        Case(
            "name-constraint-respected",
            make(HOST, issuer=constrained, ca=False, dns=(HOST,)),
            (constrained,),
        ),
        Case(
            "leaf-as-issuer",
            make(
                HOST,
                issuer=make("not a CA", issuer=root, ca=False, dns=("x.corp.example",)),
                ca=False,
                dns=(HOST,),
            ),
            (root,),
            reason="unknown-issuer",
        ),
    ]


CASES = _cases()

#: What ``openssl verify`` (OpenSSL 3) prints for each reason, in its own words: the
#: X509_V_ERR number, the depth in the chain it failed at, and its error string. A
#: refusal for another reason (a typo in a case, a file openssl cannot read) is not
#: agreement, so the text judges, not only the exit code. Depth tells an expired leaf
#: (0) from an expired CA (1); the path length fails at the issuing CA (2).
OPENSSL_SAYS = {
    "expired": "error 10 at 0 depth lookup: certificate has expired",
    "not-yet-valid": "error 9 at 0 depth lookup: certificate is not yet valid",
    "ca-expired": "error 10 at 1 depth lookup: certificate has expired",
    # OpenSSL finds no issuer whose key matches: for it a re-created CA is not the issuer.
    "wrong-ca": "error 20 at 0 depth lookup: unable to get local issuer certificate",
    "unknown-issuer": "error 20 at 0 depth lookup: unable to get local issuer certificate",
    "hostname-mismatch": "error 62 at 0 depth lookup: hostname mismatch",
    "path-length-exceeded": "error 25 at 2 depth lookup: path length constraint exceeded",
    "name-constraint-violated": "error 47 at 0 depth lookup: permitted subtree violation",
}


def _openssl_verify(case: Case, d: Path) -> subprocess.CompletedProcess[str]:
    cmd = [
        require("openssl"),
        "verify",
        "-x509_strict",
        "-purpose",
        "sslserver",
        "-verify_hostname",
        case.hostname,
        "-CAfile",
        str(write(d / "ca.pem", *(a.pem for a in case.anchors))),
    ]
    if case.intermediates:
        cmd += ["-untrusted", str(write(d / "inter.pem", *(i.pem for i in case.intermediates)))]
    cmd.append(str(write(d / "leaf.pem", case.leaf.pem)))
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def test_every_failing_case_has_the_openssl_words_for_its_reason() -> None:
    """A reason without openssl's text would leave its cases judged by exit code alone."""
    reasons = {c.reason for c in CASES if c.reason is not None}
    assert reasons == set(OPENSSL_SAYS), reasons ^ set(OPENSSL_SAYS)


@pytest.mark.integration
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_agrees_with_openssl(case: Case, tmp_path: Path) -> None:
    openssl = _openssl_verify(case, tmp_path)
    said = openssl.stdout + openssl.stderr
    leaf = tmp_path / "leaf.pem"
    if case.reason is None:
        assert openssl.returncode == 0, f"openssl refused valid case {case.name}: {said}"
        assert said.strip() == f"{leaf}: OK", said
    else:
        assert openssl.returncode != 0, f"openssl accepted failing case {case.name}: {said}"
        assert OPENSSL_SAYS[case.reason] in openssl.stderr, (
            f"matrix case {case.name}: openssl refused, but not with "
            f"{OPENSSL_SAYS[case.reason]!r}: {said}"
        )
        assert f"error {leaf}: verification failed" in openssl.stderr, said
    args = ["verify", "--ca", tmp_path / "ca.pem", "--hostname", case.hostname, "-o", "json"]
    if case.intermediates:
        args += ["--untrusted", tmp_path / "inter.pem"]
    result = run_cli(*args, leaf)
    assert "Traceback" not in result.err
    assert (result.code == 0) == (openssl.returncode == 0), (case.name, result.err, said)
    if case.reason is None:
        assert '"verified": true' in result.out, result.out
    else:
        assert result.code == 1
        assert f"[verify-{case.reason}]" in result.err, result.err
        assert '"verified": false' in result.out
