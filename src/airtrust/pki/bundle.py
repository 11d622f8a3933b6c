"""CA bundles: read anything people call a CA file, write one canonical form.

A bundle is the set of trust anchors that goes into ``runai-ca.pem``, into
image trust stores and into clients. Reading is strict where it matters,
because a bundle is copied everywhere: a private key pasted into it would be
distributed to every namespace, so any key block is refused by name (never
echoed), and so are binary data, unterminated or mismatched blocks, bad
base64 and headers inside a block. Only header-free CERTIFICATE blocks are
accepted, as trust-manager does. Explanatory text outside blocks is allowed
(RFC 7468, section 2): it is how CAs are handed over, as the output of
``openssl x509 -text`` or ``openssl pkcs12 -nokeys`` (``Bag Attributes``,
``subject=`` lines), and openssl, Go and Python all read such files.
OpenSSL's ``TRUSTED CERTIFICATE`` blocks (RHEL's ``ca-bundle.trust.crt``) are
read as the certificate they hold; their trust settings are dropped, and
said so. A PKCS#12 file (``.p12``/``.pfx``, how Windows and Java hand CAs
over) gives its certificates; a private key in it is never returned, only
said to be left out. Without a password it is opened as password-less, then
with Java's ``changeit``.

Writing is canonical: deduplicated by SHA-256 fingerprint, sorted by subject
then fingerprint, each block ending in a newline. The same set of
certificates always gives the same bytes, whatever the input order, so hashes
of bundles can be compared across clusters.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization

from airtrust.errors import BundleError

__all__ = [
    "MAX_BUNDLE_BYTES",
    "PKCS12_KEY_LEFT_OUT",
    "TRUST_DROPPED",
    "Anchor",
    "Bundle",
    "build_bundle",
    "certificate_to_pem",
    "fingerprint",
    "is_ca",
    "parse_bundle",
    "pem_fingerprints",
    "read_certificates",
]

#: Kubernetes rejects a Secret whose data exceeds 1 MiB; a bundle that cannot
#: be stored in ``runai-ca-cert`` is of no use to the platform.
MAX_BUNDLE_BYTES = 1024 * 1024

_BOM = b"\xef\xbb\xbf"
_BEGIN = re.compile(r"^-----BEGIN ([A-Z0-9 #]+)-----\s*$")
_END = re.compile(r"^-----END ([A-Z0-9 #]+)-----\s*$")
_CERT_TYPES = {"CERTIFICATE", "X509 CERTIFICATE"}


@dataclass(frozen=True)
class Anchor:
    """One certificate of a bundle, with where it came from (for messages)."""

    certificate: x509.Certificate
    origin: str
    #: what was left behind when reading it (e.g. OpenSSL trust settings)
    notes: tuple[str, ...] = ()

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.certificate)

    @property
    def subject(self) -> str:
        return self.certificate.subject.rfc4514_string()


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER encoding, lower-case hex (what ``openssl x509 -fingerprint`` shows)."""
    return cert.fingerprint(hashes.SHA256()).hex()


#: Fingerprint sets by the SHA-256 of the bytes they were read from (see pem_fingerprints).
_FINGERPRINTS: dict[bytes, frozenset[str] | None] = {}
_FINGERPRINTS_KEPT = 64


def pem_fingerprints(data: bytes) -> frozenset[str] | None:
    """The fingerprints of the certificates in a bundle; None if it cannot be read.

    Remembered by content: the images of a fleet carry the same OS and runtime bundles
    (ca-certificates, certifi, a JDK's), which every patch and every report reads
    again; parsing each of their hundred-odd certificates once per content is enough
    (measured: most of a warm fleet's CPU went to parsing the same bundles).
    """
    key = hashlib.sha256(data).digest()
    if key in _FINGERPRINTS:
        return _FINGERPRINTS[key]
    try:
        found: frozenset[str] | None = frozenset(
            a.fingerprint for a in read_certificates(data, "bundle")
        )
    except Exception:  # unreadable: the caller decides what that means
        found = None
    if len(_FINGERPRINTS) >= _FINGERPRINTS_KEPT:  # bounded; clear() is thread-safe
        _FINGERPRINTS.clear()
    _FINGERPRINTS[key] = found
    return found


def certificate_to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def read_certificates(data: bytes, origin: str, *, password: bytes | None = None) -> list[Anchor]:
    """Parse PEM (any mix of blocks), DER, PKCS#7 or PKCS#12 bytes into certificates.

    ``password`` opens a PKCS#12 file. Raises :class:`BundleError` for
    everything else; never returns a key.
    """
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    if not data.strip():
        raise BundleError(
            f"{origin} is empty", hint="give a file with at least one PEM CERTIFICATE block"
        )
    if b"-----BEGIN" in data:
        return _read_pem(data, origin)
    if data[:1] == b"\x30":
        if _looks_like_pkcs12(data):
            return _read_pkcs12(data, origin, password)
        return _read_der(data, origin)
    raise BundleError(
        f"{origin} is not PEM, DER or PKCS#7",
        hint="give the CA certificate as PEM (-----BEGIN CERTIFICATE-----), DER or .p7b",
        reference="not-a-certificate",
    )


def _key_error(origin: str, where: str, kind: str) -> BundleError:
    return BundleError(
        f"{' '.join(filter(None, (origin, where)))} is a private key ({kind}); a CA bundle "
        "must hold public certificates only",
        hint="remove the key block from the file (keep the key apart, mode 0600)",
        reference="private-key-in-bundle",
    )


def _read_der(data: bytes, origin: str) -> list[Anchor]:
    try:
        return [Anchor(x509.load_der_x509_certificate(data), origin)]
    except (ValueError, x509.InvalidVersion):
        pass
    try:
        certs = _load_pkcs7(data)
    except ValueError:
        certs = None
    if certs:
        return [Anchor(c, f"{origin} (PKCS#7 #{i + 1})") for i, c in enumerate(certs)]
    if _looks_like_der_key(data):
        raise _key_error(origin, "", "DER")
    raise BundleError(
        f"{origin} is not a DER certificate or PKCS#7 bundle (truncated or corrupt?)",
        hint="check the file, or export the CA again as PEM",
        reference="not-a-certificate",
    )


#: ``PFX ::= SEQUENCE { version INTEGER (3), authSafe ContentInfo (pkcs7-data or
#: pkcs7-signedData), macData OPTIONAL }`` (RFC 7292, section 4): the version, then
#: the ContentInfo's OID 1.2.840.113549.1.7.{1,2}.
_PKCS12_VERSION = b"\x02\x01\x03"
_PKCS7_OID_PREFIX = b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07"

#: Said in summaries when a PKCS#12 file held a private key (never read out).
PKCS12_KEY_LEFT_OUT = "the private key in a PKCS#12 file was left out (only certificates are read)"

#: What a password-less ``.p12`` is tried with: none, then Java's well-known default.
_PKCS12_DEFAULT_PASSWORDS = (None, b"changeit")


def _looks_like_pkcs12(data: bytes) -> bool:
    """RFC 7292's outer shape, read from the first bytes only (no parsing of the rest)."""
    if len(data) < 2 or data[0] != 0x30:
        return False
    first = data[1]
    start = 2 if first < 0x80 else 2 + (first & 0x7F)
    if data[start : start + 3] != _PKCS12_VERSION:
        return False
    info = data[start + 3 :]  # ContentInfo ::= SEQUENCE { contentType OID, ... }
    if len(info) < 2 or info[0] != 0x30:
        return False
    head = 2 if info[1] < 0x80 else 2 + (info[1] & 0x7F)
    oid = info[head : head + len(_PKCS7_OID_PREFIX) + 1]
    return oid[:-1] == _PKCS7_OID_PREFIX and oid[-1:] in (b"\x01", b"\x02")


def _read_pkcs12(data: bytes, origin: str, password: bytes | None) -> list[Anchor]:
    """The certificates of a PKCS#12 file, its own certificate first; the key is dropped
    here and never leaves this function."""
    from cryptography.hazmat.primitives.serialization import pkcs12  # rare; costs start-up

    loaded = None
    for attempt in (password,) if password is not None else _PKCS12_DEFAULT_PASSWORDS:
        try:
            loaded = pkcs12.load_key_and_certificates(data, attempt)
            break
        except ValueError:  # "Invalid password or PKCS12 data": the library cannot tell
            continue
        except UnsupportedAlgorithm as exc:
            raise BundleError(
                f"{origin} is a PKCS#12 file sealed with an algorithm this system cannot "
                f"open ({exc})",
                hint=f"extract its certificates with 'openssl pkcs12 -in {origin} -nokeys "
                "-legacy -out ca.pem' and give ca.pem",
                reference="pkcs12-unsupported",
            ) from None
    if loaded is None:
        if password is None:
            raise BundleError(
                f"{origin} is a password-protected PKCS#12 file",
                hint="give its password with --password-env VAR or --password-file FILE",
                reference="pkcs12-password-needed",
            )
        raise BundleError(
            f"{origin} is a PKCS#12 file that does not open with the password given "
            "(wrong password, or the file is corrupt)",
            hint="check the password from --password-env / --password-file",
            reference="pkcs12-wrong-password",
        )
    key, cert, extra = loaded
    held_key = key is not None
    del key, loaded  # a bundle never carries key material
    certs = [c for c in (cert, *extra) if c is not None]
    if not certs:
        raise BundleError(
            f"{origin} is a PKCS#12 file with no certificate in it",
            hint="export the CA certificate into it, or give the CA as PEM",
            reference="not-a-certificate",
        )
    notes = (PKCS12_KEY_LEFT_OUT,) if held_key else ()
    return [Anchor(c, f"{origin} (PKCS#12 #{i + 1})", notes) for i, c in enumerate(certs)]


#: Said in summaries for every TRUSTED CERTIFICATE block read.
TRUST_DROPPED = "OpenSSL trust settings dropped (TRUSTED CERTIFICATE block)"


def _load_pkcs7(der: bytes) -> list[x509.Certificate]:
    """PKCS#7 certificates; the library's warnings (e.g. on the BER and unsorted SET that
    ``openssl crl2pkcs7`` writes) never reach the user: the certificates are what count."""
    from cryptography.hazmat.primitives.serialization import pkcs7  # rare; costs start-up

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return list(pkcs7.load_der_pkcs7_certificates(der))


def _first_element(der: bytes) -> bytes:
    """The first DER element (tag, length, value) of ``der``; raises ValueError."""
    if len(der) < 2 or der[0] != 0x30:
        raise ValueError("not a DER SEQUENCE")
    first = der[1]
    if first < 0x80:
        length, start = first, 2
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or len(der) < 2 + count:
            raise ValueError("bad DER length")
        length, start = int.from_bytes(der[2 : 2 + count], "big"), 2 + count
    if start + length > len(der):
        raise ValueError("truncated DER")
    return der[: start + length]


def _looks_like_der_key(data: bytes) -> bool:
    try:
        serialization.load_der_private_key(data, password=None)
    except TypeError:
        return True  # encrypted PKCS#8: still a key
    except Exception:  # any other parse failure means "not a key"
        return False
    return True


def _read_pem(data: bytes, origin: str) -> list[Anchor]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = data[: exc.start].count(b"\n") + 1
        raise BundleError(
            f"{origin} line {where}: binary data in a PEM bundle",
            hint="a PEM bundle is plain text; check the file was not corrupted",
            reference="garbage-in-bundle",
        ) from exc
    anchors: list[Anchor] = []
    block_type: str | None = None
    body: list[str] = []
    start = 0
    block_no = 0
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if block_type is None:
            if not line or line.startswith("#"):
                continue
            m = _BEGIN.match(line)
            if m is None:
                _explanatory_text(line, origin, lineno)
                continue
            block_type, body, start = m.group(1), [], lineno
            block_no += 1
            if "PRIVATE KEY" in block_type:
                raise _key_error(origin, f"block {block_no} (line {lineno})", block_type)
            continue
        m = _END.match(line)
        if m is None:
            if _BEGIN.match(line):
                raise BundleError(
                    f"{origin} line {start}: {block_type} block has no END line",
                    hint="the file is truncated or two blocks are fused; export it again",
                    reference="truncated-pem",
                )
            if ":" in line:
                raise BundleError(
                    f"{origin} line {lineno}: PEM headers are not allowed in a CA bundle",
                    hint="give plain CERTIFICATE blocks (openssl x509 -in F -out F2 strips them)",
                    reference="garbage-in-bundle",
                )
            body.append(line)
            continue
        if m.group(1) != block_type:
            raise BundleError(
                f"{origin} line {lineno}: END {m.group(1)} closes BEGIN {block_type}",
                hint="the file is corrupt; export it again",
                reference="truncated-pem",
            )
        anchors.extend(_decode_block(block_type, "".join(body), origin, block_no, start))
        block_type = None
    if block_type is not None:
        raise BundleError(
            f"{origin} line {start}: {block_type} block has no END line",
            hint="the file is truncated; export it again",
            reference="truncated-pem",
        )
    if not anchors:
        raise BundleError(f"{origin} holds no certificate", hint="give a PEM CERTIFICATE block")
    return anchors


def _explanatory_text(line: str, origin: str, lineno: int) -> None:
    """Text outside blocks is allowed (RFC 7468); binary data and broken boundaries are not."""
    if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in line):
        raise BundleError(
            f"{origin} line {lineno}: binary data outside a PEM block",
            hint="a PEM bundle is plain text; check the file was not corrupted",
            reference="garbage-in-bundle",
        )
    if line.startswith("-----"):
        raise BundleError(
            f"{origin} line {lineno}: a malformed or unmatched PEM boundary",
            hint="the file is corrupt or truncated; export it again",
            reference="truncated-pem",
        )


def _decode_block(block_type: str, b64: str, origin: str, block_no: int, line: int) -> list[Anchor]:
    where = f"{origin} block {block_no} (line {line})"
    try:
        der = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BundleError(
            f"{where}: {block_type} body is not valid base64",
            hint="the block is corrupt or truncated; export it again",
            reference="truncated-pem",
        ) from exc
    notes: tuple[str, ...] = ()
    if block_type == "TRUSTED CERTIFICATE":
        # DER certificate followed by OpenSSL's X509_CERT_AUX (trust and reject settings).
        der = _first_element(der)
        notes = (TRUST_DROPPED,)
    if block_type in _CERT_TYPES or notes:
        try:
            return [Anchor(x509.load_der_x509_certificate(der), where, notes)]
        except (ValueError, x509.InvalidVersion) as exc:
            raise BundleError(
                f"{where}: not a valid X.509 certificate ({exc})",
                hint="the block is corrupt or truncated; export it again",
                reference="not-a-certificate",
            ) from exc
    if block_type == "PKCS7":
        try:
            certs = _load_pkcs7(der)
        except ValueError as exc:
            raise BundleError(
                f"{where}: not a valid PKCS#7 certificate bundle",
                hint="export it again, or convert with openssl pkcs7 -print_certs",
                reference="not-a-certificate",
            ) from exc
        return [Anchor(c, f"{where} #{i + 1}") for i, c in enumerate(certs)]
    raise BundleError(
        f"{where}: a {block_type} block does not belong in a CA bundle",
        hint="keep only CERTIFICATE blocks",
        reference="unsupported-block",
    )


def is_ca(cert: x509.Certificate) -> bool:
    """basicConstraints CA:TRUE, or a self-issued v1 root (which predates extensions)."""
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return cert.version is x509.Version.v1 and cert.subject == cert.issuer
    return bc.ca


@dataclass(frozen=True)
class Bundle:
    """A validated, deduplicated, canonically ordered set of CA certificates."""

    anchors: tuple[Anchor, ...]
    #: certificates read more than once and kept once
    duplicates: int = field(default=0, compare=False)

    @property
    def notes(self) -> tuple[str, ...]:
        """What reading left behind, once each (e.g. OpenSSL trust settings dropped)."""
        return tuple(dict.fromkeys(n for a in self.anchors for n in a.notes))

    @property
    def certificates(self) -> tuple[x509.Certificate, ...]:
        return tuple(a.certificate for a in self.anchors)

    @property
    def fingerprints(self) -> tuple[str, ...]:
        return tuple(a.fingerprint for a in self.anchors)

    @property
    def digest(self) -> str:
        """SHA-256 over the ordered fingerprints: equal bundles, equal digest."""
        return hashlib.sha256("\n".join(self.fingerprints).encode()).hexdigest()

    def to_pem(self, *, comments: bool = False) -> bytes:
        out = []
        for a in self.anchors:
            if comments:
                subject = a.subject.replace("\n", " ")
                out.append(f"# {subject}\n".encode())
            out.append(certificate_to_pem(a.certificate))
        return b"".join(out)

    def earliest_expiry(self) -> dt.datetime:
        return min(c.not_valid_after_utc for c in self.certificates)


def _sort_key(anchor: Anchor) -> tuple[str, str]:
    return (anchor.subject, anchor.fingerprint)


def build_bundle(
    anchors: Iterable[Anchor],
    *,
    now: dt.datetime,
    allow_leaf: bool = False,
    allow_expired: bool = False,
    max_bytes: int = MAX_BUNDLE_BYTES,
) -> Bundle:
    """Validate, deduplicate and sort; raise on the first certificate that must not be trusted."""
    unique: dict[str, Anchor] = {}
    seen = 0
    for anchor in anchors:
        seen += 1
        try:
            fp = anchor.fingerprint
            ca = is_ca(anchor.certificate)
            subject = anchor.subject
            expires = anchor.certificate.not_valid_after_utc
        except ValueError as exc:
            raise BundleError(
                f"{anchor.origin}: certificate has a malformed field ({exc})",
                hint="remove or re-export this certificate",
                reference="not-a-certificate",
            ) from exc
        if fp in unique:
            continue
        if not ca and not allow_leaf:
            raise BundleError(
                f"{anchor.origin}: '{subject}' is not a CA certificate",
                hint="give the CA that issued it, or pass --allow-leaf to trust it directly",
                reference="leaf-in-bundle",
            )
        if expires < now and not allow_expired:
            raise BundleError(
                f"{anchor.origin}: CA '{subject}' expired on {expires:%Y-%m-%d}",
                hint="remove it, or pass --allow-expired to keep it",
                reference="expired-ca",
            )
        unique[fp] = anchor
    if not unique:
        raise BundleError("no certificates given", hint="name at least one CA file")
    bundle = Bundle(tuple(sorted(unique.values(), key=_sort_key)), duplicates=seen - len(unique))
    size = len(bundle.to_pem())
    if size > max_bytes:
        raise BundleError(
            f"the bundle is {size} bytes ({len(unique)} certificates), over the "
            f"{max_bytes}-byte limit of a Kubernetes Secret",
            hint="keep only the CAs the platform must trust",
            reference="bundle-too-large",
        )
    return bundle


def parse_bundle(
    sources: Sequence[tuple[str, bytes]],
    *,
    now: dt.datetime,
    allow_leaf: bool = False,
    allow_expired: bool = False,
    max_bytes: int = MAX_BUNDLE_BYTES,
    password: bytes | None = None,
) -> Bundle:
    """``sources`` are (name, bytes) pairs; names appear in error messages; ``password``
    opens PKCS#12 sources."""
    anchors: list[Anchor] = []
    for origin, data in sources:
        anchors.extend(read_certificates(data, origin, password=password))
    return build_bundle(
        anchors, now=now, allow_leaf=allow_leaf, allow_expired=allow_expired, max_bytes=max_bytes
    )
