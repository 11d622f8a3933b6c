"""pki/names.py: DNS name normalising, hostname and subtree matching, name constraints."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from airtrust.errors import CertificateError, InputError
from airtrust.pki import authority, keys, names

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)

# Labels a SAN can hold: 1-63 of [a-z0-9-], not starting or ending with '-'.
label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", fullmatch=True)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# Four numeric labels can spell an IPv4 address (0.0.0.0), which is not a DNS name.
dns_name = (
    st.lists(label, min_size=2, max_size=5)
    .map(".".join)
    .filter(lambda n: len(n) <= 253 and not _is_ip(n))
)


def _mixed_case(draw: st.DrawFn, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.upper() if f else c for c, f in zip(text, flips, strict=True))


@st.composite
def spellings(draw: st.DrawFn) -> tuple[str, str]:
    """(a way a user may type a name, the name as a SAN holds it)."""
    base = draw(dns_name)
    if draw(st.booleans()):
        base = "*." + base
    typed = _mixed_case(draw, base) + draw(st.sampled_from(["", "."]))
    typed = draw(st.sampled_from(["", " ", "\t"])) + typed + draw(st.sampled_from(["", " "]))
    return typed, base


@given(spellings())
def test_normalising_lowercases_strips_and_is_idempotent(case: tuple[str, str]) -> None:
    typed, expected = case
    once = names.normalise_dns_name(typed)
    assert once == expected
    assert names.normalise_dns_name(once) == once


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("RunAI.Example.COM.", "runai.example.com"),
        ("  runai.example.com  ", "runai.example.com"),
        ("*.Apps.Example.com", "*.apps.example.com"),
        # IDN: the A-label form is what a certificate carries, and it is accepted.
        ("XN--Bcher-kva.example", "xn--bcher-kva.example"),
        ("a-b.c-d.e", "a-b.c-d.e"),
        ("1.2.3", "1.2.3"),  # not an IP address (ipaddress refuses it), so a DNS name
        ("x" * 63 + ".example.com", "x" * 63 + ".example.com"),
    ],
)
def test_names_that_are_accepted(typed: str, expected: str) -> None:
    assert names.normalise_dns_name(typed) == expected


@pytest.mark.parametrize(
    ("bad", "message", "hint"),
    [
        ("", "'' is not a DNS name", "give a name like runai.example.com"),
        ("   .", "'   .' is not a DNS name", "give a name like runai.example.com"),
        ("a" * 254, f"'{'a' * 254}' is not a DNS name", "give a name like runai.example.com"),
        (
            "10.0.0.1",
            "'10.0.0.1' is an IP address, not a DNS name",
            "pass IP addresses with --ip; Run:ai needs a DNS name as its domain",
        ),
        (
            "fd00::5",
            "'fd00::5' is an IP address, not a DNS name",
            "pass IP addresses with --ip; Run:ai needs a DNS name as its domain",
        ),
        (
            "bücher.example",
            "'bücher.example' contains non-ASCII characters",
            "give the IDNA form (xn--...) of the name",
        ),
        (
            "*.com",
            "wildcard '*.com' covers a whole top-level domain",
            "use a wildcard below a registered domain, like *.apps.example.com",
        ),
        (
            "*",
            "wildcard '*' covers a whole top-level domain",
            "use a wildcard below a registered domain, like *.apps.example.com",
        ),
        (
            "-bad.example.com",
            "'-bad.example.com' is not a valid DNS name (bad label '-bad')",
            "labels are 1-63 letters, digits or hyphens, not starting or ending with '-'",
        ),
        (
            "a..example.com",
            "'a..example.com' is not a valid DNS name (bad label '')",
            "labels are 1-63 letters, digits or hyphens, not starting or ending with '-'",
        ),
        (
            "under_score.example.com",
            "'under_score.example.com' is not a valid DNS name (bad label 'under_score')",
            "labels are 1-63 letters, digits or hyphens, not starting or ending with '-'",
        ),
        (
            "x" * 64 + ".example.com",
            f"'{'x' * 64}.example.com' is not a valid DNS name (bad label '{'x' * 64}')",
            "labels are 1-63 letters, digits or hyphens, not starting or ending with '-'",
        ),
        (
            "a.*.example.com",
            "'a.*.example.com' is not a valid DNS name (bad label '*')",
            "labels are 1-63 letters, digits or hyphens, not starting or ending with '-'",
        ),
        (
            "f*o.example.com",
            "'f*o.example.com' is not a valid DNS name (bad label 'f*o')",
            "labels are 1-63 letters, digits or hyphens, not starting or ending with '-'",
        ),
    ],
)
def test_names_that_are_refused_say_why(bad: str, message: str, hint: str) -> None:
    with pytest.raises(CertificateError) as info:
        names.normalise_dns_name(bad)
    assert info.value.message == message
    assert info.value.hint == hint
    assert info.value.reference == "bad-certificate-request"
    assert isinstance(info.value, InputError)


def test_a_wildcard_is_a_bad_label_where_wildcards_are_not_allowed() -> None:
    assert names.normalise_dns_name("*.example.com", allow_wildcard=True) == "*.example.com"
    with pytest.raises(CertificateError, match=r"bad label '\*'"):
        names.normalise_dns_name("*.example.com", allow_wildcard=False)


def test_ip_and_network_parsing() -> None:
    assert names.parse_ip(" 10.0.0.5 ") == ipaddress.IPv4Address("10.0.0.5")
    assert names.parse_ip("fd00::5") == ipaddress.IPv6Address("fd00::5")
    with pytest.raises(CertificateError) as ip_error:
        names.parse_ip("10.0.0.256")
    assert ip_error.value.message == "'10.0.0.256' is not an IP address"
    assert ip_error.value.hint == "give an address like 10.0.0.5 or fd00::5"
    assert isinstance(ip_error.value.__cause__, ValueError)

    assert names.parse_network("10.0.0.0/8") == ipaddress.IPv4Network("10.0.0.0/8")
    assert names.parse_network(" fd00::/8 ") == ipaddress.IPv6Network("fd00::/8")
    with pytest.raises(CertificateError) as host_bits:
        names.parse_network("10.0.0.1/8")  # strict: host bits set
    assert host_bits.value.message == "'10.0.0.1/8' is not an IP network"
    assert "no host bits set" in host_bits.value.hint


@pytest.mark.parametrize(
    ("pattern", "hostname", "matches"),
    [
        ("runai.example.com", "runai.example.com", True),
        ("RunAI.Example.com.", "runai.example.COM", True),
        ("runai.example.com", "x.runai.example.com", False),
        ("*.example.com", "a.example.com", True),
        ("*.example.com", "A.Example.Com.", True),
        ("*.example.com", "example.com", False),  # the wildcard needs a label
        ("*.example.com", "a.b.example.com", False),  # and only one
        ("*.example.com", ".example.com", False),
        ("*.example.com", "a.example.org", False),
        ("a*.example.com", "ab.example.com", False),  # partial-label wildcards: never
    ],
)
def test_hostname_matching_as_browsers_do(pattern: str, hostname: str, matches: bool) -> None:
    assert names.hostname_matches(pattern, hostname) is matches


@pytest.mark.parametrize(
    ("name", "subtree", "inside"),
    [
        ("example.com", "example.com", True),
        ("a.b.example.com", "example.com", True),
        ("badexample.com", "example.com", False),
        ("A.Example.com", "EXAMPLE.com.", True),
        ("*.example.com", "example.com", True),  # its base is inside
        ("*.example.com", "a.example.com", False),  # it also covers b.example.com
        ("a.example.com", ".example.com", True),
        ("example.com", ".example.com", False),  # a leading dot: only names below it
        ("anything.org", "", True),  # an empty subtree is everything
    ],
)
def test_subtree_matching(name: str, subtree: str, inside: bool) -> None:
    assert names.dns_matches_subtree(name, subtree) is inside


@given(dns_name, label)
def test_a_name_and_every_name_below_it_are_in_its_subtree(name: str, head: str) -> None:
    assert names.dns_matches_subtree(name, name)
    assert names.dns_matches_subtree(f"{head}.{name}", name)
    assert names.dns_matches_subtree(f"*.{name}", name)
    assert names.hostname_matches(f"*.{name}", f"{head}.{name}")
    assert not names.hostname_matches(f"*.{name}", name)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca_with_constraints(
    permitted: list[x509.GeneralName], excluded: list[x509.GeneralName]
) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateBuilder()
        .subject_name(_name("Constrained CA"))
        .issuer_name(_name("Constrained CA"))
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.NameConstraints(permitted or None, excluded or None), critical=True)
        .sign(key, hashes.SHA256())
    )


def test_constraints_of_a_ca_made_by_airtrust() -> None:
    key = keys.generate_key(keys.KeyType.EC_P256)
    root = authority.create_root(
        authority.CASpec(
            "Corp Root",
            permitted_dns=("corp.example",),
            permitted_ip=(ipaddress.ip_network("10.0.0.0/8"),),
        ),
        key,
        now=NOW,
    )
    c = names.Constraints.of(root)
    assert c is not None
    assert c.owner == "CN=Corp Root"
    assert c.permitted_dns == ("corp.example",) and c.excluded_dns == ()
    assert c.permitted_ip == (ipaddress.ip_network("10.0.0.0/8"),) and c.excluded_ip == ()
    assert c.violation("runai.corp.example") is None
    assert c.violation("*.corp.example") is None
    assert (
        c.violation("runai.example.com")
        == "'runai.example.com' is outside the permitted DNS names of 'CN=Corp Root' "
        "(corp.example)"
    )
    assert c.violation(ipaddress.ip_address("10.1.2.3")) is None
    assert (
        c.violation(ipaddress.ip_address("192.168.0.1"))
        == "192.168.0.1 is outside the permitted networks of 'CN=Corp Root' (10.0.0.0/8)"
    )
    # An IPv6 address is never inside an IPv4 network.
    assert c.violation(ipaddress.ip_address("::ffff:10.0.0.1")) is not None

    plain = authority.create_root(authority.CASpec("Plain Root"), key, now=NOW)
    assert names.Constraints.of(plain) is None


def test_excluded_subtrees_win_over_permitted_ones() -> None:
    ca = _ca_with_constraints(
        [x509.DNSName("example.com"), x509.IPAddress(ipaddress.ip_network("10.0.0.0/8"))],
        [x509.DNSName("secret.example.com"), x509.IPAddress(ipaddress.ip_network("10.9.0.0/16"))],
    )
    c = names.Constraints.of(ca)
    assert c is not None
    assert c.excluded_dns == ("secret.example.com",)
    assert c.excluded_ip == (ipaddress.ip_network("10.9.0.0/16"),)
    assert c.violation("www.example.com") is None
    assert (
        c.violation("db.secret.example.com")
        == "'db.secret.example.com' is in the excluded subtree 'secret.example.com' of "
        "'CN=Constrained CA'"
    )
    assert (
        c.violation(ipaddress.ip_address("10.9.1.1"))
        == "10.9.1.1 is in the excluded network 10.9.0.0/16 of 'CN=Constrained CA'"
    )
    assert c.violation(ipaddress.ip_address("10.8.1.1")) is None


def test_only_excluded_subtrees_permit_the_rest() -> None:
    c = names.Constraints("CN=X", excluded_dns=("internal",))
    assert c.violation("runai.example.com") is None
    assert c.violation("a.internal") is not None
    # No IP constraints at all: every address is fine.
    assert c.violation(ipaddress.ip_address("192.0.2.1")) is None


def test_san_names_and_covers() -> None:
    key = keys.generate_key(keys.KeyType.EC_P256)
    root = authority.create_root(authority.CASpec("SAN Root"), key, now=NOW)
    leaf = authority.issue_server(
        authority.ServerSpec(
            "RunAI.Example.com",
            ("*.runai.example.com", "runai.example.com"),
            ips=(ipaddress.ip_address("10.0.0.5"), ipaddress.ip_address("fd00::5")),
        ),
        keys.generate_key(keys.KeyType.EC_P256).public_key(),
        issuer_chain=[root],
        issuer_key=key,
        now=NOW,
    ).certificate
    dns, ips = names.san_names(leaf)
    # The domain is normalised and the duplicate dropped, order kept.
    assert dns == ["runai.example.com", "*.runai.example.com"]
    assert ips == [ipaddress.ip_address("10.0.0.5"), ipaddress.ip_address("fd00::5")]
    assert names.covers(leaf, "runai.example.com")
    assert names.covers(leaf, "ws1.runai.example.com")
    assert not names.covers(leaf, "a.b.runai.example.com")
    assert names.covers(leaf, "10.0.0.5")
    assert names.covers(leaf, "fd00::5")
    assert not names.covers(leaf, "10.0.0.6")
    assert names.san_names(root) == ([], [])
    assert not names.covers(root, "SAN Root")  # the common name is never a SAN


def test_only_one_trailing_dot_is_stripped() -> None:
    assert names.normalise_dns_name("runai.example.com.") == "runai.example.com"
    with pytest.raises(CertificateError):
        names.normalise_dns_name("runai.example.com..")
