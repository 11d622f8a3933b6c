"""No input reaches ``verify`` or ``inspect`` and comes out as anything but our own error.

Hypothesis builds certificates with any validity dates, any names it can put in a
subjectAltName, basic constraints, key usages and name constraints, and also
damages the DER of valid ones; any host name string is tried. Each call either
succeeds or raises an :class:`AirtrustError` (one line and an exit code for the
user); a ``ValueError`` or anything else escaping is a bug (seen once with an
underscore in a SAN).
"""

from __future__ import annotations

import datetime as dt
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from airtrust.errors import AirtrustError
from airtrust.pki.bundle import read_certificates
from airtrust.pki.inspect import describe, describe_chain
from airtrust.pki.verify import Profile, verify_server

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
ROOT_KEY = ec.generate_private_key(ec.SECP256R1())
LEAF_KEY = ec.generate_private_key(ec.SECP256R1())
_ROOT_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Fuzz Root")])
ROOT = (
    x509.CertificateBuilder()
    .subject_name(_ROOT_NAME)
    .issuer_name(_ROOT_NAME)
    .public_key(ROOT_KEY.public_key())
    .serial_number(1)
    .not_valid_before(NOW - dt.timedelta(days=10))
    .not_valid_after(NOW + dt.timedelta(days=3650))
    .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    .add_extension(x509.SubjectKeyIdentifier.from_public_key(ROOT_KEY.public_key()), False)
    .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), True)
    .sign(ROOT_KEY, hashes.SHA256())
)

label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_*.", min_size=1, max_size=20)
dns_names = st.builds(lambda parts: ".".join(parts), st.lists(label, min_size=1, max_size=4))
any_text = st.text(max_size=40)
hostnames = st.one_of(dns_names, any_text, st.ip_addresses().map(str))
dates = st.datetimes(
    min_value=dt.datetime(1951, 1, 1), max_value=dt.datetime(2150, 1, 1), timezones=st.just(dt.UTC)
)


@st.composite
def certificates(draw: st.DrawFn) -> x509.Certificate:
    try:
        return _certificate(draw)
    except ValueError:  # a combination pyca will not encode is no certificate to test
        reject()


def _certificate(draw: st.DrawFn) -> x509.Certificate:
    start, end = sorted((draw(dates), draw(dates)))
    if end == start:
        end += dt.timedelta(seconds=1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, draw(label))]))
        .issuer_name(_ROOT_NAME)
        .public_key(LEAF_KEY.public_key())
        .serial_number(draw(st.integers(min_value=1, max_value=2**159 - 1)))
        .not_valid_before(start)
        .not_valid_after(end)
    )
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in draw(st.lists(dns_names, max_size=3))]
    sans += [
        x509.IPAddress(ipaddress.ip_address(a))
        for a in draw(st.lists(st.ip_addresses(), max_size=2))
    ]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), draw(st.booleans()))
    if draw(st.booleans()):
        ca = draw(st.booleans())
        path = draw(st.none() | st.integers(0, 3)) if ca else None
        builder = builder.add_extension(x509.BasicConstraints(ca, path), draw(st.booleans()))
    if draw(st.booleans()):
        flags = draw(st.lists(st.booleans(), min_size=7, max_size=7))
        agreement = flags[4]
        builder = builder.add_extension(
            x509.KeyUsage(*flags[:7], agreement and draw(st.booleans()), False), True
        )
    if draw(st.booleans()):
        usages = draw(
            st.lists(
                st.sampled_from([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                min_size=1,
                max_size=2,
                unique=True,
            )
        )
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), False)
    if draw(st.booleans()):
        permitted = [x509.DNSName(n) for n in draw(st.lists(dns_names, min_size=1, max_size=2))]
        builder = builder.add_extension(x509.NameConstraints(permitted, None), True)
    if draw(st.booleans()):
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ROOT_KEY.public_key()), False
        )
    return builder.sign(ROOT_KEY, hashes.SHA256())


def _judged(call: object) -> None:
    """Run ``call``; only success or our own error may come out."""
    assert callable(call)
    try:
        call()
    except AirtrustError as exc:
        assert exc.one_line()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(certificates(), st.none() | hostnames, st.sampled_from(list(Profile)))
def test_verify_answers_any_generated_certificate(
    leaf: x509.Certificate, hostname: str | None, profile: Profile
) -> None:
    _judged(
        lambda: verify_server(leaf, anchors=[ROOT], hostname=hostname, now=NOW, profile=profile)
    )


@settings(max_examples=300, deadline=None)
@given(certificates())
def test_inspect_describes_any_generated_certificate(leaf: x509.Certificate) -> None:
    _judged(lambda: describe(leaf, now=NOW))
    _judged(lambda: describe_chain([leaf, ROOT], now=NOW))


VALID_DER = (
    x509.CertificateBuilder()
    .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ok.example.test")]))
    .issuer_name(_ROOT_NAME)
    .public_key(LEAF_KEY.public_key())
    .serial_number(7)
    .not_valid_before(NOW - dt.timedelta(days=1))
    .not_valid_after(NOW + dt.timedelta(days=90))
    .add_extension(x509.SubjectAlternativeName([x509.DNSName("ok.example.test")]), False)
    .add_extension(x509.BasicConstraints(False, None), True)
    .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
    .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ROOT_KEY.public_key()), False)
    .sign(ROOT_KEY, hashes.SHA256())
    .public_bytes(serialization.Encoding.DER)
)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, len(VALID_DER) - 1), st.integers(0, 255)),
        min_size=1,
        max_size=4,
    ),
    st.none() | hostnames,
)
def test_damaged_certificate_bytes_are_refused_or_judged(
    damage: list[tuple[int, int]], hostname: str | None
) -> None:
    data = bytearray(VALID_DER)
    for index, value in damage:
        data[index] = value
    try:
        anchors = read_certificates(bytes(data), "fuzz.der")
    except AirtrustError:
        return
    for anchor in anchors:
        leaf = anchor.certificate
        _judged(lambda leaf=leaf: verify_server(leaf, anchors=[ROOT], hostname=hostname, now=NOW))
        _judged(lambda leaf=leaf: describe(leaf, now=NOW))


@settings(max_examples=200, deadline=None)
@given(hostnames)
def test_any_hostname_against_a_valid_certificate(hostname: str) -> None:
    leaf = read_certificates(VALID_DER, "ok.der")[0].certificate
    _judged(lambda: verify_server(leaf, anchors=[ROOT], hostname=hostname, now=NOW))
