"""Issue #27, as users reported it: each command run as written, judged by what they see.

Every test runs the real CLI (``run_cli``: a new process, real argv and exit
code) and asserts stdout, stderr and the exit code; PKCS#12 files are made by
``openssl pkcs12 -export``, TLS endpoints are real servers on 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Result, assert_one_line_error, run_cli
from tests.helpers.certs import make, write
from tests.integration.conftest import python_server, require

pytestmark = pytest.mark.integration

HOST = "tls.example.test"
PASSPHRASE = "correct-horse-27"
KEY_TYPES = ["rsa-2048", "rsa-3072", "rsa-4096", "ec-p256", "ec-p384"]


@dataclass(frozen=True)
class Pki:
    root: Path  # the CA folder (ca.crt, ca.key, chain.pem)
    leaf: Path  # the server folder (tls.crt, tls.key)

    @property
    def ca(self) -> Path:
        return self.root / "ca.crt"

    @property
    def cert(self) -> Path:
        return self.leaf / "tls.crt"

    @property
    def key(self) -> Path:
        return self.leaf / "tls.key"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    made = Pki(folder / "root", folder / "leaf")
    created = run_cli("ca", "create", "--out", made.root)
    assert created.code == 0, created.err
    issued = run_cli("cert", "issue", "--ca-dir", made.root, "--domain", HOST, "--out", made.leaf)
    assert issued.code == 0, issued.err
    return made


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _ok(result: Result) -> Result:
    assert result.code == 0, (result.code, result.out, result.err)
    assert "Traceback" not in result.err, result.err
    return result


# --- 1: --force never deletes a folder --------------------------------------------------


@pytest.mark.parametrize("fmt", ["pem", "pkcs12", "jks"])
@pytest.mark.parametrize("force", [False, True])
def test_bundle_build_into_a_folder_is_refused_and_the_folder_kept(
    pki: Pki, tmp_path: Path, fmt: str, force: bool
) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "keepme").write_text("mine\n")
    args = ["bundle", "build", pki.ca, "--out", d, "-f", fmt, *(["--force"] if force else [])]
    result = run_cli(*args, cwd=tmp_path)
    assert_one_line_error(
        result, 2, f"{d} is a folder; give a file path (or -f hashdir)", "[output-is-folder]"
    )
    assert result.out == ""
    assert d.is_dir() and _tree(d) == {"keepme": b"mine\n"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # no temporary file left


def test_hashdir_force_replaces_only_its_own_folder(pki: Pki, tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "keepme").write_text("mine\n")
    for force in ([], ["--force"]):
        refused = run_cli("bundle", "build", pki.ca, "-f", "hashdir", "--out", d, *force)
        assert_one_line_error(refused, 2, f"{d} holds keepme", "[output-folder-not-ours]")
    assert _tree(d) == {"keepme": b"mine\n"}

    empty = tmp_path / "empty"
    empty.mkdir()
    _ok(run_cli("bundle", "build", pki.ca, "-f", "hashdir", "--out", empty))  # nothing to lose
    first = _tree(empty)
    assert len(first) == 1 and next(iter(first)).endswith(".0")
    again = run_cli("bundle", "build", pki.ca, "-f", "hashdir", "--out", empty)
    assert_one_line_error(again, 2, "[output-exists]", "--force")
    _ok(run_cli("bundle", "build", pki.ca, "-f", "hashdir", "--out", empty, "--force"))
    assert _tree(empty) == first


def test_hashdir_over_a_file_is_refused(pki: Pki, tmp_path: Path) -> None:
    f = write(tmp_path / "f", b"data\n")
    result = run_cli("bundle", "build", pki.ca, "-f", "hashdir", "--out", f, "--force")
    assert_one_line_error(result, 2, f"{f} is a file, not a folder", "[output-not-a-folder]")
    assert f.read_bytes() == b"data\n"


def test_other_force_outputs_never_delete_a_folder(pki: Pki, tmp_path: Path) -> None:
    """Every writer goes through OutputSet: init's --out, cert issue's files in --out."""
    d = tmp_path / "d"
    d.mkdir()
    (d / "keepme").write_text("mine\n")
    init = run_cli("init", "--domain", "a.example", "--context", "c", "--out", d, "--force")
    assert_one_line_error(init, 2, f"{d} is a folder", "[output-is-folder]")
    out = tmp_path / "tls"
    (out / "tls.crt").mkdir(parents=True)
    (out / "tls.crt" / "keepme").write_text("mine\n")
    issue = ["cert", "issue", "--ca-dir", pki.root, "--domain", "b.example", "--out", out]
    assert_one_line_error(run_cli(*issue, "--force"), 2, f"{out / 'tls.crt'} is a folder")
    assert _tree(d) == {"keepme": b"mine\n"}
    assert _tree(out) == {"tls.crt/keepme": b"mine\n"}


# --- 18: --out names a file -------------------------------------------------------------


@pytest.mark.parametrize("force", [False, True])
def test_ca_create_out_names_a_file(tmp_path: Path, force: bool) -> None:
    f1 = write(tmp_path / "f1", b"")
    result = run_cli("ca", "create", "--out", "f1", *(["--force"] if force else []), cwd=tmp_path)
    assert_one_line_error(
        result,
        2,
        "f1 is a file, not a folder, so f1/ca.crt cannot be written",
        "move f1 away",
        "[output-not-a-folder]",
    )
    assert "File exists" not in result.err
    assert f1.read_bytes() == b"" and sorted(p.name for p in tmp_path.iterdir()) == ["f1"]


# --- 2, 3: what verify accepts as anchor and target -------------------------------------


def test_a_leaf_is_not_its_own_anchor(pki: Pki) -> None:
    result = run_cli("verify", "--ca", pki.cert, pki.cert)
    assert_one_line_error(
        result, 2, f"{pki.cert} holds no CA certificate", f"CN={HOST}", "[no-ca-in-bundle]"
    )
    assert "OK" not in result.out


def test_non_ca_certificates_beside_a_ca_are_left_out_with_a_warning(
    pki: Pki, tmp_path: Path
) -> None:
    mixed = write(tmp_path / "mixed.pem", pki.cert.read_bytes(), pki.ca.read_bytes())
    result = _ok(run_cli("verify", "--ca", mixed, pki.cert))
    assert result.out.startswith(f"OK {pki.cert} is trusted for {HOST}")
    assert "left out 1 certificate(s) that are not CAs" in result.err


def test_a_ca_as_target_says_pass_the_server_certificate(pki: Pki) -> None:
    result = run_cli("verify", "--ca", pki.ca, pki.ca)
    assert_one_line_error(
        result,
        1,
        "is a CA certificate, not a server certificate",
        "pass the server certificate",
        "[verify-leaf-is-ca]",
    )
    assert "subjectAltName" not in result.err and "SAN" not in result.err


# --- 4: PKCS#12 -------------------------------------------------------------------------


def _p12(pki: Pki, out: Path, *args: str) -> Path:
    require("openssl")
    subprocess.run(
        ["openssl", "pkcs12", "-export", "-out", str(out), *args],
        check=True,
        capture_output=True,
    )
    return out


def _key_b64(pki: Pki) -> str:
    lines = pki.key.read_text().splitlines()
    return "".join(line for line in lines if not line.startswith("-----"))


@pytest.fixture(scope="module")
def p12s(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("p12")
    with_key = ["-in", str(pki.cert), "-inkey", str(pki.key), "-certfile", str(pki.ca)]
    return {
        "open": _p12(pki, folder / "open.p12", *with_key, "-passout", "pass:"),
        "sealed": _p12(pki, folder / "sealed.p12", *with_key, "-passout", "pass:s3cret pw"),
        "ca-only": _p12(pki, folder / "ca.p12", "-nokeys", "-in", str(pki.ca), "-passout", "pass:"),
    }


def test_inspect_reads_a_password_less_pkcs12(pki: Pki, p12s: dict[str, Path]) -> None:
    result = _ok(run_cli("inspect", p12s["open"], "-o", "json"))
    subjects = [c["subject"] for c in json.loads(result.out)["certificates"]]
    assert subjects == [f"CN={HOST}", "CN=airtrust local root CA"]
    table = _ok(run_cli("inspect", p12s["open"]))
    assert f"CN={HOST}" in table.out and "not a DER certificate" not in table.err
    for shown in (result, table):
        assert _key_b64(pki)[:40] not in shown.out + shown.err
        assert "PRIVATE KEY" not in shown.out + shown.err


def test_a_sealed_pkcs12_names_the_password_options(
    pki: Pki, p12s: dict[str, Path], tmp_path: Path
) -> None:
    missing = run_cli("inspect", p12s["sealed"])
    assert_one_line_error(
        missing, 2, "PKCS#12", "--password-env", "--password-file", "[pkcs12-password-needed]"
    )
    wrong = run_cli("inspect", p12s["sealed"], "--password-env", "PW", env={"PW": "nope"})
    assert_one_line_error(
        wrong, 2, "PKCS#12", "--password-env", "--password-file", "[pkcs12-wrong-password]"
    )
    assert "nope" not in wrong.err
    right = _ok(run_cli("inspect", p12s["sealed"], "--password-env", "PW", env={"PW": "s3cret pw"}))
    assert f"CN={HOST}" in right.out and "s3cret" not in right.out + right.err
    pw_file = write(tmp_path / "pw", b"s3cret pw\n")
    by_file = _ok(run_cli("inspect", p12s["sealed"], "--password-file", pw_file, "-o", "json"))
    assert len(json.loads(by_file.out)["certificates"]) == 2


def test_verify_takes_pkcs12_as_ca_and_as_target(pki: Pki, p12s: dict[str, Path]) -> None:
    ok = _ok(run_cli("verify", "--ca", p12s["ca-only"], pki.cert))
    assert ok.out.startswith(f"OK {pki.cert} is trusted for {HOST}")
    target = _ok(run_cli("verify", "--ca", pki.ca, p12s["open"]))
    assert target.out.startswith(f"OK {p12s['open']} is trusted for {HOST}")
    sealed = _ok(
        run_cli(
            "verify",
            "--ca",
            p12s["sealed"],
            pki.cert,
            "--password-env",
            "PW",
            env={"PW": "s3cret pw"},
        )
    )
    assert sealed.out.startswith("OK ") and "left out 1 certificate(s)" in sealed.err


def test_bundle_build_from_pkcs12_keeps_the_key_out(
    pki: Pki, p12s: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "b.pem"
    result = _ok(run_cli("bundle", "build", p12s["ca-only"], "--out", out))
    assert result.out.startswith(f"wrote {out} (pem): 1 CA certificate(s) kept")
    assert out.read_bytes() == pki.ca.read_bytes()
    leafy = run_cli("bundle", "build", p12s["open"], "--out", tmp_path / "c.pem")
    assert_one_line_error(leafy, 2, "[leaf-in-bundle]", "PKCS#12")
    kept = _ok(
        run_cli("bundle", "build", p12s["open"], "--allow-leaf", "--out", tmp_path / "d.pem")
    )
    assert "private key in a PKCS#12 file was left out" in kept.out
    assert b"PRIVATE KEY" not in (tmp_path / "d.pem").read_bytes()
    assert _key_b64(pki)[:40] not in (tmp_path / "d.pem").read_text()


# --- 16: inspect speaks words, not Python values ----------------------------------------


def test_inspect_says_no_limit_and_expired_days_ago(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    old = make(
        "Old Root",
        not_before=now - dt.timedelta(days=3000),
        not_after=now - dt.timedelta(days=2164, hours=1),
    )
    path = write(tmp_path / "old.pem", old.pem)
    result = _ok(run_cli("inspect", path))
    assert "path length no limit" in result.out
    assert "(expired 2164 days ago)" in result.out
    assert "None" not in result.out and "-2164" not in result.out


# --- 17: -q hides chatter, never results ------------------------------------------------


def test_quiet_still_prints_results(pki: Pki, tmp_path: Path) -> None:
    shown = _ok(run_cli("-q", "inspect", pki.ca))
    assert "CN=airtrust local root CA" in shown.out
    issued = _ok(
        run_cli(
            "-q",
            "cert",
            "issue",
            "--ca-dir",
            pki.root,
            "--domain",
            "q.example.test",
            "--days",
            "5000",
            "--out",
            tmp_path / "q",
        )
    )
    assert issued.out.startswith("issued CN=q.example.test for q.example.test")
    assert issued.err == ""  # the 398-day warning is chatter
    created = _ok(run_cli("ca", "create", "--out", tmp_path / "ca", "--quiet"))
    assert created.out.startswith("created CA CN=airtrust local root CA")


# --- names are data, never markup -------------------------------------------------------


BRACKETED = "Team [prod] CA [/x]"


@pytest.mark.parametrize("width", [[], ["--width", "200"]], ids=["pipe", "rich"])
def test_a_name_with_brackets_prints_verbatim(tmp_path: Path, width: list[str]) -> None:
    """A CN like ``Team [prod] CA`` is data: piped (plain records) and drawn by rich
    (``--width``), it prints as written, and a ``[/x]`` in it closes no tag (rich would
    raise MarkupError) nor disappears."""
    ca = tmp_path / "ca"
    created = _ok(run_cli(*width, "ca", "create", "--name", BRACKETED, "--out", ca))
    assert f"created CA CN={BRACKETED}" in created.out, created.out
    issued = _ok(
        run_cli(*width, "cert", "issue", "--ca-dir", ca, "--domain", HOST, "--out", tmp_path / "t")
    )
    assert issued.out.startswith(f"issued CN={HOST} for {HOST}"), issued.out
    verified = _ok(run_cli(*width, "verify", tmp_path / "t" / "tls.crt", "--ca", ca / "ca.crt"))
    assert f"CN={BRACKETED}" in verified.out, verified.out
    shown = _ok(run_cli(*width, "inspect", ca / "ca.crt"))
    assert f"CN={BRACKETED}" in shown.out, shown.out


# --- 23: the 398-day cap ----------------------------------------------------------------


def test_days_over_the_browser_cap_warn_and_still_issue(pki: Pki, tmp_path: Path) -> None:
    args = ["cert", "issue", "--ca-dir", pki.root, "--domain", "long.example.test"]
    result = _ok(run_cli(*args, "--days", "5000", "--out", tmp_path / "long"))
    assert "airtrust: warning: valid for 5000 days, over the 398-day cap" in result.err
    assert "CA/Browser Forum" in result.err
    assert (tmp_path / "long" / "tls.crt").exists() and result.out.startswith("issued ")
    default = _ok(run_cli(*args, "--out", tmp_path / "default"))
    assert "398-day" not in default.err


# --- 19, 23: help and typed choices -----------------------------------------------------


def test_help_points_at_real_things_and_names_the_choices() -> None:
    verify = _ok(run_cli("verify", "--help"))
    assert "--help-profiles" not in verify.out
    assert "[strict|relaxed]" in verify.out and "relaxed profile accepts exactly" in verify.out
    create = _ok(run_cli("ca", "create", "--help"))
    assert f"[{'|'.join(KEY_TYPES)}]" in create.out
    words = " ".join(create.out.split())
    assert (
        "--parent-passphrase-env VAR Read the passphrase of the parent's ca.key from $VAR." in words
    )
    assert (
        "--parent-passphrase-file FILE Read the passphrase of the parent's ca.key from FILE."
        in words
    )
    build = _ok(run_cli("bundle", "build", "--help"))
    assert "[pem|pkcs12|jks|hashdir]" in build.out


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("airtrust bundle build -f ", ["pem", "pkcs12", "jks", "hashdir"]),
        ("airtrust verify --profile ", ["strict", "relaxed"]),
        ("airtrust ca create --key-type ", KEY_TYPES),
        ("airtrust cert issue --key-type ec", ["ec-p256", "ec-p384"]),
        ("airtrust quickstart --key-type rsa-4", ["rsa-4096"]),
        ("airtrust apply --dry-run ", ["none", "server"]),
        ("airtrust sync --openshift ", ["auto", "true", "false"]),
        ("airtrust sync --role ", ["control-plane", "cluster"]),
    ],
)
def test_choices_complete_in_the_shell(words: str, expected: list[str]) -> None:
    env = {
        "_AIRTRUST_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
    }
    result = _ok(run_cli(env=env))
    assert result.out.split() == expected


def test_a_bad_choice_is_one_usage_line(pki: Pki, tmp_path: Path) -> None:
    bad = run_cli("bundle", "build", pki.ca, "--out", tmp_path / "b", "-f", "der")
    assert_one_line_error(bad, 2, "'der' is not one of", "hashdir", "[usage]")
    prof = run_cli("verify", "--ca", pki.ca, pki.cert, "--profile", "lax")
    assert_one_line_error(prof, 2, "'lax' is not one of", "relaxed", "[usage]")
    assert list(tmp_path.iterdir()) == []
    upper = _ok(run_cli("verify", "--ca", pki.ca, pki.cert, "--profile", "STRICT"))
    assert "(strict profile)" in upper.out


# --- 21: --encrypt-key without a terminal -----------------------------------------------


def test_encrypt_key_without_a_terminal_names_the_options(tmp_path: Path) -> None:
    result = run_cli("ca", "create", "--out", tmp_path / "ca", "--encrypt-key", stdin=b"")
    assert_one_line_error(
        result, 2, "no terminal", "--passphrase-env", "--passphrase-file", "[no-terminal]"
    )
    assert "GetPassWarning" not in result.err and "aborted" not in result.err
    assert list(tmp_path.iterdir()) == []
    sealed = _ok(
        run_cli(
            "ca",
            "create",
            "--out",
            tmp_path / "ca",
            "--encrypt-key",
            "--passphrase-env",
            "P",
            env={"P": PASSPHRASE},
            stdin=b"",
        )
    )
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "ca" / "ca.key").read_bytes()
    assert PASSPHRASE not in sealed.out + sealed.err


# --- 20: --connect-to takes doctor's forms ----------------------------------------------


def test_connect_to_takes_doctor_and_short_forms(pki: Pki) -> None:
    with python_server(pki.cert, pki.key) as server:
        url = f"https://{HOST}"
        for rule in (
            f"{HOST}:443:127.0.0.1:{server.port}",
            f":443:127.0.0.1:{server.port}",
            f"127.0.0.1:{server.port}",
        ):
            ok = _ok(run_cli("verify", "--ca", pki.ca, url, "--connect-to", rule))
            assert ok.out.startswith(f"OK https://{HOST}:443 is trusted for {HOST}"), rule
            shown = _ok(run_cli("inspect", url, "--connect-to", rule, "-o", "json"))
            assert json.loads(shown.out)["source"] == f"https://{HOST}:443"
        at_port = f"https://{HOST}:{server.port}"
        _ok(run_cli("verify", "--ca", pki.ca, at_port, "--connect-to", "127.0.0.1"))


@pytest.mark.parametrize(
    ("rule", "needles"),
    [
        ("other.example:443:127.0.0.1:8443", ["is for other.example:443", "would not apply"]),
        (f"{HOST}:8443:127.0.0.1:8443", [f"is for {HOST}:8443, not {HOST}:443"]),
        ("a:b:c", ["is not ADDR, ADDR:PORT or HOST:PORT:ADDR:PORT"]),
        (f"{HOST}:443:127.0.0.1", ["is not ADDR, ADDR:PORT or HOST:PORT:ADDR:PORT"]),
        (f"{HOST}:443:127.0.0.1:99999", ["'99999' is not a port"]),
        ("127.0.0.1:http", ["'http' is not a port"]),
    ],
)
def test_connect_to_refuses_anything_else_in_one_line(
    pki: Pki, rule: str, needles: list[str]
) -> None:
    for command in (["verify", "--ca", str(pki.ca)], ["inspect"]):
        result = run_cli(*command, f"https://{HOST}", "--connect-to", rule)
        assert_one_line_error(result, 2, "--connect-to", *needles)


def test_connect_to_with_a_file_target_is_refused(pki: Pki) -> None:
    result = run_cli("inspect", pki.cert, "--connect-to", "127.0.0.1")
    assert_one_line_error(result, 2, "--connect-to applies to an https:// target")
