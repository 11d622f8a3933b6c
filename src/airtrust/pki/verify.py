"""Path validation: the only module that talks to ``cryptography.x509.verification``.

The verdict is always pyca/cryptography's RFC 5280 / CA/Browser Forum
verifier, plus a few rules it leaves out that the x509-limbo suite and the
web PKI expect (listed in :data:`STRICT_EXTRAS`). When it says no, we do not
pass on its terse message alone: :func:`_diagnose` walks the chain itself and
names the first thing a person can fix (expired leaf, unknown issuer, a CA
re-created under the same name, path length, name constraints, ...).

Private CAs often break the web-PKI profile. The ``relaxed`` profile accepts
exactly the deviations in :data:`RELAXATIONS`, each spelled out, and nothing
else: signatures, validity, hostnames, CA flags, path lengths and name
constraints are checked the same in both profiles.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.x509 import verification as v
from cryptography.x509.oid import ExtendedKeyUsageOID, SignatureAlgorithmOID

from airtrust.errors import BundleError, VerificationFailed
from airtrust.pki import names
from airtrust.pki.bundle import Anchor, fingerprint, is_ca
from airtrust.pki.choices import Profile

__all__ = ["RELAXATIONS", "STRICT_EXTRAS", "Profile", "Verified", "ca_anchors", "verify_server"]


#: What ``--profile relaxed`` accepts that ``strict`` refuses.
RELAXATIONS = (
    "basicConstraints on a CA may be non-critical",
    "CA certificates may lack subjectKeyIdentifier and authorityKeyIdentifier",
    "server certificates may lack authorityKeyIdentifier",
    "server certificates may lack extendedKeyUsage, or carry anyExtendedKeyUsage",
    "CA certificates may carry extendedKeyUsage",
)

#: Rules airtrust's strict profile adds to pyca's verifier (RFC 5280 / CABF).
STRICT_EXTRAS = (
    "certificates other than self-signed roots carry authorityKeyIdentifier",
    "CA certificates carry subjectKeyIdentifier",
    "a root's authorityKeyIdentifier, if any, holds only its own key identifier",
    "serial numbers below the trust anchor are positive",
    "server certificates carry extendedKeyUsage with serverAuth and without anyExtendedKeyUsage",
    "roots carry no extendedKeyUsage",
    "the server key is RSA >= 2048 bits or EC P-256/P-384/P-521",
    "the server certificate is signed with SHA-256 or stronger",
    "no wildcard directly under a top-level domain",
)

_GOOD_SIGNATURES = {
    SignatureAlgorithmOID.RSA_WITH_SHA256,
    SignatureAlgorithmOID.RSA_WITH_SHA384,
    SignatureAlgorithmOID.RSA_WITH_SHA512,
    SignatureAlgorithmOID.RSASSA_PSS,
    SignatureAlgorithmOID.ECDSA_WITH_SHA256,
    SignatureAlgorithmOID.ECDSA_WITH_SHA384,
    SignatureAlgorithmOID.ECDSA_WITH_SHA512,
}


@dataclass(frozen=True)
class Verified:
    """A chain that validated: leaf first, trust anchor last."""

    chain: tuple[x509.Certificate, ...]
    hostname: str
    profile: Profile


def ca_anchors(origin: str, anchors: Sequence[Anchor]) -> tuple[list[x509.Certificate], list[str]]:
    """The CA certificates of one ``--ca`` file, and the subjects of the others, left out.

    A server certificate given as its own trust anchor makes pyca accept it
    (issue #27: ``verify --ca tls.crt tls.crt`` said OK), which proves nothing:
    only CA certificates anchor a path, and a file holding none is refused.
    """
    cas: list[x509.Certificate] = []
    others: list[str] = []
    for anchor in anchors:
        try:
            ca = is_ca(anchor.certificate)
        except (ValueError, x509.DuplicateExtension):
            ca = True  # malformed: the verifier names the problem
        if ca:
            cas.append(anchor.certificate)
        else:
            others.append(_subject(anchor.certificate))
    if not cas:
        shown = f"'{others[0]}' is not a CA" if len(others) == 1 else f"{len(others)} non-CA"
        raise BundleError(
            f"{origin} holds no CA certificate ({shown}"
            f"{' certificates' if len(others) > 1 else ''}); a server certificate cannot "
            "vouch for itself",
            hint="give --ca the CA bundle or CA certificate that issued it (e.g. ca-bundle.pem "
            "or ca.crt)",
            reference="no-ca-in-bundle",
        )
    return cas, others


def _ext(
    cert: x509.Certificate, cls: type[x509.ExtensionType]
) -> x509.Extension[x509.ExtensionType] | None:
    try:
        return cert.extensions.get_extension_for_class(cls)
    except x509.ExtensionNotFound:
        return None
    except (ValueError, x509.DuplicateExtension) as exc:
        raise _malformed(cert, exc) from None


def _malformed(cert: x509.Certificate, exc: Exception) -> VerificationFailed:
    return _fail(
        "malformed",
        f"'{_subject(cert)}' has a malformed extension ({exc})",
        "reissue the certificate; no client should accept it",
    )


def _subject(cert: x509.Certificate) -> str:
    try:
        return cert.subject.rfc4514_string() or "(empty subject)"
    except ValueError:
        return f"(unreadable subject, sha256 {fingerprint(cert)[:16]})"


def _fail(reason: str, message: str, hint: str) -> VerificationFailed:
    return VerificationFailed(message, reason=reason, hint=hint)


def _relaxed_policies() -> tuple[v.ExtensionPolicy, v.ExtensionPolicy]:
    crit = v.Criticality.AGNOSTIC

    def ca_flag(_policy: v.Policy, _cert: x509.Certificate, ext: x509.BasicConstraints) -> None:
        if not ext.ca:
            raise ValueError("basicConstraints.cA is false")

    def server_eku(
        _policy: v.Policy, _cert: x509.Certificate, ext: x509.ExtendedKeyUsage | None
    ) -> None:
        if ext is None:
            return
        usages = list(ext)
        if ExtendedKeyUsageOID.SERVER_AUTH not in usages and (
            ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in usages
        ):
            raise ValueError("extendedKeyUsage lacks serverAuth")

    ca = (
        v.ExtensionPolicy.webpki_defaults_ca()
        .require_present(x509.BasicConstraints, crit, ca_flag)
        .may_be_present(x509.AuthorityKeyIdentifier, crit, None)
        .may_be_present(x509.SubjectKeyIdentifier, crit, None)
        .may_be_present(x509.ExtendedKeyUsage, crit, None)
    )
    ee = (
        v.ExtensionPolicy.webpki_defaults_ee()
        .may_be_present(x509.AuthorityKeyIdentifier, crit, None)
        .may_be_present(x509.ExtendedKeyUsage, crit, server_eku)
    )
    return ca, ee


def _subject_for(
    leaf: x509.Certificate, hostname: str | None
) -> tuple[str, x509.DNSName | x509.IPAddress]:
    if hostname is None:
        dns, ips = names.san_names(leaf)
        if dns:
            hostname = dns[0].removeprefix("*.")
        elif ips:
            hostname = str(ips[0])
        else:
            raise _fail(
                "missing-san",
                f"'{_subject(leaf)}' has no subjectAltName",
                "reissue it with the host name in the SAN (airtrust cert issue --domain NAME); "
                "Go, Chrome and Python ignore the common name",
            )
    try:
        return hostname, x509.IPAddress(ipaddress.ip_address(hostname))
    except ValueError:
        pass
    try:
        # An internationalised name is checked as its A-label, as TLS clients do.
        a_label = hostname if hostname.isascii() else hostname.encode("idna").decode("ascii")
        return hostname, x509.DNSName(a_label)
    except (UnicodeError, ValueError) as exc:
        raise _fail(
            "bad-hostname",
            f"{hostname!r} is not a host name a TLS client can check a certificate against ({exc})",
            "use a DNS name of letters, digits, hyphens and dots, or an IP address",
        ) from None


def verify_server(
    leaf: x509.Certificate,
    *,
    anchors: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate] = (),
    hostname: str | None = None,
    now: dt.datetime,
    profile: Profile = Profile.STRICT,
    max_depth: int | None = None,
) -> Verified:
    """Validate a TLS server certificate against ``anchors``; raise on any failure.

    ``hostname`` defaults to the leaf's first SAN, which checks the chain but
    not the name. ``now`` is explicit so results do not depend on the clock.
    Whatever pyca cannot decode (a key type, an extension) is one
    :class:`VerificationFailed`, never a library exception.
    """
    try:
        return _verify_server(leaf, anchors, intermediates, hostname, now, profile, max_depth)
    except (ValueError, TypeError, UnsupportedAlgorithm, x509.DuplicateExtension) as exc:
        raise _malformed(leaf, exc) from None


def _verify_server(
    leaf: x509.Certificate,
    anchors: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate],
    hostname: str | None,
    now: dt.datetime,
    profile: Profile,
    max_depth: int | None,
) -> Verified:
    if not anchors:
        raise _fail("no-anchors", "the CA bundle is empty", "give --ca with at least one CA")
    bc = _ext(leaf, x509.BasicConstraints)
    if bc is not None and bc.value.ca:  # type: ignore[attr-defined]
        # Before the SAN check: a CA has no SAN, and "add a SAN" is the wrong advice.
        raise _fail(
            "leaf-is-ca",
            f"'{_subject(leaf)}' is a CA certificate, not a server certificate",
            "pass the server certificate (e.g. tls.crt, leaf first) and the CA with --ca; a "
            "server presents a certificate issued by the CA (airtrust cert issue), never the CA",
        )
    name, subject = _subject_for(leaf, hostname)
    builder = v.PolicyBuilder().store(v.Store(list(anchors))).time(now)
    if max_depth is not None:
        builder = builder.max_chain_depth(max_depth)
    if profile is Profile.RELAXED:
        ca_policy, ee_policy = _relaxed_policies()
        builder = builder.extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
    try:
        verifier = builder.build_server_verifier(subject)
    except ValueError as exc:
        raise _fail(
            "bad-hostname",
            f"'{name}' is not a host name a TLS client can check a certificate against ({exc})",
            "use a DNS name of letters, digits, hyphens and dots (no '_'), or an IP address",
        ) from None
    try:
        chain = verifier.verify(leaf, list(intermediates))
    except ValueError as exc:
        raise _malformed(leaf, exc) from None
    except v.VerificationError as exc:
        try:
            raise _diagnose(leaf, anchors, intermediates, name, now, profile, str(exc)) from None
        except (ValueError, TypeError, x509.DuplicateExtension) as parse_error:
            # The diagnosis re-reads extensions pyca's Rust parser refused.
            raise _malformed(leaf, parse_error) from None
    if profile is Profile.STRICT:
        try:
            _strict_extras(chain)
        except (ValueError, TypeError, x509.DuplicateExtension) as parse_error:
            raise _malformed(chain[0], parse_error) from None
    return Verified(tuple(chain), name, profile)


def _strict_extras(chain: Sequence[x509.Certificate]) -> None:
    """Rules of :data:`STRICT_EXTRAS`, on the chain pyca already accepted."""
    relaxed_hint = "reissue the certificate, or pass --profile relaxed to accept it"
    for index, cert in enumerate(chain):
        who = f"'{_subject(cert)}'"
        is_root = index == len(chain) - 1
        if not is_root and cert.serial_number <= 0:
            raise _fail("profile", f"{who} has a serial number that is not positive", relaxed_hint)
        aki = _ext(cert, x509.AuthorityKeyIdentifier)
        ski = _ext(cert, x509.SubjectKeyIdentifier)
        self_signed = _self_signed(cert)
        if aki is None and not (is_root and self_signed):
            raise _fail("profile", f"{who} lacks authorityKeyIdentifier", relaxed_hint)
        if index > 0 and ski is None:
            raise _fail("profile", f"CA {who} lacks subjectKeyIdentifier", relaxed_hint)
        if is_root and self_signed and aki is not None:
            value = aki.value
            assert isinstance(value, x509.AuthorityKeyIdentifier)
            own = ski.value.digest if ski is not None else None  # type: ignore[attr-defined]
            if value.authority_cert_issuer is not None or (
                value.authority_cert_serial_number is not None
            ):
                raise _fail(
                    "profile",
                    f"root {who} has an authorityKeyIdentifier naming an issuer or serial",
                    relaxed_hint,
                )
            if value.key_identifier is not None and own is not None and value.key_identifier != own:
                raise _fail(
                    "profile",
                    f"root {who} has an authorityKeyIdentifier that differs from its own key id",
                    relaxed_hint,
                )
        eku = _ext(cert, x509.ExtendedKeyUsage)
        if is_root and self_signed and index > 0 and eku is not None:
            raise _fail("profile", f"root {who} carries extendedKeyUsage", relaxed_hint)
    leaf = chain[0]
    who = f"'{_subject(leaf)}'"
    eku = _ext(leaf, x509.ExtendedKeyUsage)
    if eku is None:
        raise _fail("extended-key-usage", f"{who} has no extendedKeyUsage", relaxed_hint)
    usages = list(eku.value)  # type: ignore[call-overload]
    if ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in usages:
        raise _fail("extended-key-usage", f"{who} allows anyExtendedKeyUsage", relaxed_hint)
    key = leaf.public_key()
    weak = (
        isinstance(key, dsa.DSAPublicKey)
        or (isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048)
        or (
            isinstance(key, ec.EllipticCurvePublicKey)
            and key.curve.name not in {"secp256r1", "secp384r1", "secp521r1"}
        )
    )
    if weak:
        raise _fail(
            "weak-key",
            f"{who} has a key the web PKI forbids",
            "reissue with --key-type ec-p256 or rsa-2048 or larger",
        )
    if leaf.signature_algorithm_oid not in _GOOD_SIGNATURES:
        raise _fail(
            "weak-signature",
            f"{who} is signed with {leaf.signature_algorithm_oid._name}",
            "reissue it with SHA-256 or stronger",
        )
    dns, _ = names.san_names(leaf)
    for pattern in dns:
        if pattern.startswith("*.") and pattern.count(".") < 2:
            raise _fail(
                "profile",
                f"{who} has the wildcard '{pattern}' over a whole top-level domain",
                "reissue it for a name below a registered domain",
            )


def _issuers(cert: x509.Certificate, pool: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    return [c for c in pool if c.subject == cert.issuer and fingerprint(c) != fingerprint(cert)]


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except Exception:  # bad signature, mismatched or unsupported algorithm: not its issuer
        return False
    return True


def _self_signed(cert: x509.Certificate) -> bool:
    """Same name and its own signature; a same-named CA with another key is not.

    Old roots signed with SHA-1 cannot be checked here (pyca refuses the
    algorithm); their self-signature is irrelevant to trust, so they count.
    """
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except InvalidSignature:
        return False
    except Exception:  # unsupported signature algorithm on an old root
        return True
    return True


def _diagnose(
    leaf: x509.Certificate,
    anchors: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate],
    hostname: str,
    now: dt.datetime,
    profile: Profile,
    library_message: str,
) -> VerificationFailed:
    """Explain a rejection in terms of what to fix, checking causes in the order users hit them."""
    who = f"'{_subject(leaf)}'"
    if now > leaf.not_valid_after_utc:
        return _fail(
            "expired",
            f"{who} expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC",
            "issue a new certificate (airtrust cert issue) and update the TLS secret",
        )
    if now < leaf.not_valid_before_utc:
        return _fail(
            "not-yet-valid",
            f"{who} is not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
            "check the clock of the issuing machine, or wait",
        )
    dns, ips = names.san_names(leaf)
    if not dns and not ips:
        return _fail(
            "missing-san",
            f"{who} has no subjectAltName",
            "reissue it with the host name in the SAN; clients ignore the common name",
        )
    if not names.covers(leaf, hostname):
        listed = ", ".join([*dns, *map(str, ips)])
        return _fail(
            "hostname-mismatch",
            f"{who} is for {listed}, not '{hostname}'",
            f"reissue it with --domain {hostname} (or --san), or connect to a listed name",
        )
    anchor_fps = {fingerprint(a) for a in anchors}
    pool = [*intermediates, *anchors]
    current = leaf
    below = 0  # intermediate CAs between ``current`` and the leaf (for pathLen)
    for _ in range(16):
        if fingerprint(current) in anchor_fps:
            break
        candidates = _issuers(current, pool)
        if current.issuer == current.subject and not candidates:
            return _fail(
                "unknown-issuer",
                f"'{_subject(current)}' is self-signed and not in the CA bundle",
                "add this CA to the bundle (airtrust bundle build), or serve a certificate "
                "it issued",
            )
        if not candidates:
            issuer = current.issuer.rfc4514_string()
            return _fail(
                "unknown-issuer",
                f"'{_subject(current)}' was issued by '{issuer}', which is neither in the CA "
                "bundle nor sent as an intermediate",
                f"if '{issuer}' is an intermediate CA the chain is missing it: serve leaf + "
                "intermediates (tls.crt); otherwise add the CA that issued it to the bundle",
            )
        signer = next((c for c in candidates if _signed_by(current, c)), None)
        if signer is None:
            return _fail(
                "wrong-ca",
                f"'{_subject(current)}' names '{current.issuer.rfc4514_string()}' as issuer, but "
                "the certificate of that name in the bundle has a different key (was the CA "
                "re-created?)",
                "put the CA that really issued it in the bundle, or reissue the certificate "
                "from the current CA",
            )
        signer_who = f"'{_subject(signer)}'"
        if not is_ca(signer):
            return _fail(
                "issuer-not-ca",
                f"{signer_who} signed '{_subject(current)}' but is not a CA (basicConstraints)",
                "issue certificates only from a CA certificate (airtrust ca create)",
            )
        if now > signer.not_valid_after_utc:
            return _fail(
                "ca-expired",
                f"CA {signer_who} expired on {signer.not_valid_after_utc:%Y-%m-%d}",
                "rotate to a new CA (airtrust rotate start --new-ca DIR)",
            )
        if now < signer.not_valid_before_utc:
            return _fail(
                "ca-not-yet-valid",
                f"CA {signer_who} is not valid before {signer.not_valid_before_utc:%Y-%m-%d}",
                "check the clock of the machine that created the CA",
            )
        if current is not leaf and not (current.issuer == current.subject):
            below += 1  # self-issued certificates do not count (RFC 5280 6.1.4 (l))
        bc = _ext(signer, x509.BasicConstraints)
        if bc is not None:
            path_length = bc.value.path_length  # type: ignore[attr-defined]
            if path_length is not None and below > path_length:
                return _fail(
                    "path-length-exceeded",
                    f"CA {signer_who} allows {path_length} intermediate(s) below it, the chain "
                    f"has {below}",
                    "issue from a CA higher up, or recreate the CA with a larger --path-length",
                )
        constraints = names.Constraints.of(signer)
        if constraints is not None:
            for name in (*dns, *ips):
                if (why := constraints.violation(name)) is not None:
                    return _fail(
                        "name-constraint-violated",
                        why,
                        "issue the certificate for a name inside the CA's constraints",
                    )
        self_signed = _self_signed(signer)
        if self_signed and fingerprint(signer) not in anchor_fps:
            return _fail(
                "unknown-issuer",
                f"the chain ends at {signer_who}, which is not in the CA bundle",
                "add that root to the bundle, or check you gave the right --ca",
            )
        current = signer
    lowered = library_message.lower()
    if "must not be asserted in an ee" in lowered:
        return _fail(
            "leaf-is-ca",
            f"{who} is a CA certificate used as a server certificate",
            "issue a server certificate from the CA (airtrust cert issue) instead of serving "
            "the CA",
        )
    if "public key algorithm" in lowered or "signature algorithm" in lowered:
        return _fail(
            "unsupported-algorithm",
            f"the chain uses a key or signature algorithm the web PKI profile forbids "
            f"({library_message})",
            "reissue with ec-p256 or RSA >= 2048; Ed25519 is not accepted by browsers or this "
            "profile, and no profile relaxes it",
        )
    if "criticality" in lowered or "extension" in lowered or "key usage" in lowered:
        hint = (
            "reissue the CA within the web PKI profile (airtrust ca create does), or pass "
            "--profile relaxed to accept: " + "; ".join(RELAXATIONS)
            if profile is Profile.STRICT
            else "reissue the certificate with the extension fixed"
        )
        return _fail("profile", f"rejected by the {profile} profile: {library_message}", hint)
    return _fail("rejected", f"rejected: {library_message}", "run 'airtrust inspect' on the chain")
