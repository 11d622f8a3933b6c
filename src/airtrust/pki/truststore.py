"""Bundle outputs other than PEM: PKCS#12 and JKS truststores, OpenSSL hash dirs.

* OpenSSL ``-CApath`` directories name each CA ``<subject_hash>.N``. The hash
  is OpenSSL's ``X509_NAME_hash_ex``: SHA-1 over the *canonical* encoding of
  the subject (string values converted to UTF8String, ASCII letters lowered,
  white space trimmed and collapsed, no outer SEQUENCE), first four bytes read
  little-endian. Computed here in pure Python so an image layer can carry the
  links without running ``c_rehash`` inside the image.
* Java reads PKCS#12 truststores since Java 9, but only entries carrying
  Oracle's trusted-certificate attribute, which
  ``serialize_java_truststore`` writes. JKS stays for Java 8 and tools that
  insist on it; its integrity check is keyed SHA-1 with the password (the
  format has no encryption).
* An image's existing Java store (``lib/security/cacerts``) is extended, not
  rebuilt: ``add_to_keystore`` keeps JKS a JKS with every existing entry
  byte for byte (only the count and the keyed digest change) and a PKCS#12
  a PKCS#12 with the same aliases, password-less if it was (JDK 18+).
"""

from __future__ import annotations

import enum
import hashlib
import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from airtrust.errors import KeystoreError
from airtrust.pki.bundle import Bundle, certificate_to_pem, fingerprint

__all__ = [
    "DEFAULT_STORE_PASSWORD",
    "HASH_DIR_NAMES",
    "Keystore",
    "KeystoreError",
    "KeystoreFormat",
    "add_to_keystore",
    "alias_for",
    "canonical_name",
    "hash_dir_entries",
    "read_keystore",
    "subject_hash",
    "to_jks",
    "to_pkcs12",
]

DEFAULT_STORE_PASSWORD = "changeit"  # Java's well-known default; a truststore holds no secret


# --- OpenSSL subject hash -------------------------------------------------------

_CANON_STRING_TAGS = {
    0x0C: "utf-8",  # UTF8String
    0x13: "latin-1",  # PrintableString
    0x14: "latin-1",  # T61String (OpenSSL reads it as Latin-1)
    0x16: "latin-1",  # IA5String
    0x1A: "latin-1",  # VisibleString
    0x1E: "utf-16-be",  # BMPString
    0x1C: "utf-32-be",  # UniversalString
}
_SPACE = " \t\n\v\f\r"


def _read_tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER element at ``pos``."""
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    return tag, pos, pos + length


def _children(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(tag, element start, content start, content end) of each child."""
    pos = start
    while pos < end:
        tag, cstart, cend = _read_tlv(data, pos)
        yield tag, pos, cstart, cend
        pos = cend


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _der_len(len(content)) + content


def _canon_text(text: str) -> str:
    text = text.strip(_SPACE)
    out: list[str] = []
    in_space = False
    for ch in text:
        if ch in _SPACE:
            if not in_space:
                out.append(" ")
            in_space = True
            continue
        in_space = False
        out.append(ch.lower() if "A" <= ch <= "Z" else ch)
    return "".join(out)


def canonical_name(name: x509.Name) -> bytes:
    """OpenSSL's canonical encoding of a Name (``x509_name_canon``)."""
    der = name.public_bytes()
    _, start, end = _read_tlv(der, 0)
    out = []
    for _, _, set_start, set_end in _children(der, start, end):
        avas = []
        for _, _, seq_start, seq_end in _children(der, set_start, set_end):
            parts = list(_children(der, seq_start, seq_end))
            (_, oid_at, _, oid_end), (vtag, v_at, v_start, v_end) = parts[0], parts[1]
            oid = der[oid_at:oid_end]
            encoding = _CANON_STRING_TAGS.get(vtag)
            if encoding is None:
                value = der[v_at:v_end]
            else:
                text = der[v_start:v_end].decode(encoding, errors="surrogateescape")
                value = _tlv(0x0C, _canon_text(text).encode("utf-8", errors="surrogateescape"))
            avas.append(_tlv(0x30, oid + value))
        out.append(_tlv(0x31, b"".join(sorted(avas))))
    return b"".join(out)


def subject_hash(cert: x509.Certificate) -> str:
    """What ``openssl x509 -subject_hash -noout`` prints: 8 lower-case hex digits."""
    digest = hashlib.sha1(canonical_name(cert.subject), usedforsecurity=False).digest()
    return f"{int.from_bytes(digest[:4], 'little'):08x}"


#: The names of a hash directory's files (``<subject hash>.N``): what ``--force`` may replace.
HASH_DIR_NAMES = re.compile(r"[0-9a-f]{8}\.[0-9]+")


def hash_dir_entries(bundle: Bundle) -> list[tuple[str, bytes]]:
    """``(<hash>.N, PEM)`` for every CA; collisions numbered in bundle order."""
    used: dict[str, int] = {}
    entries = []
    for cert in bundle.certificates:
        h = subject_hash(cert)
        n = used.get(h, 0)
        used[h] = n + 1
        entries.append((f"{h}.{n}", certificate_to_pem(cert)))
    return entries


# --- Java -----------------------------------------------------------------------------


def alias_for(cert: x509.Certificate, fp: str) -> str:
    """Stable, lower-case (JKS folds case) alias: readable name plus fingerprint prefix."""
    cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    base = str(cns[0].value) if cns else "ca"
    slug = "".join(c if c.isalnum() else "-" for c in base.lower()).strip("-")[:40] or "ca"
    return f"{slug}-{fp[:12]}"


def to_pkcs12(bundle: Bundle, password: str = DEFAULT_STORE_PASSWORD) -> bytes:
    certs = [
        pkcs12.PKCS12Certificate(a.certificate, alias_for(a.certificate, a.fingerprint).encode())
        for a in bundle.anchors
    ]
    if not password:  # password-less, as Java writes it: no MAC (same bundle, same bytes)
        return _without_mac(pkcs12.serialize_java_truststore(certs, serialization.NoEncryption()))
    encryption = serialization.BestAvailableEncryption(password.encode())
    return pkcs12.serialize_java_truststore(certs, encryption)


def _java_utf(text: str) -> bytes:
    """DataOutput.writeUTF; aliases and "X.509" are ASCII, where it equals UTF-8."""
    raw = text.encode("utf-8")
    return struct.pack(">H", len(raw)) + raw


def to_jks(bundle: Bundle, password: str = DEFAULT_STORE_PASSWORD) -> bytes:
    """A JKS keystore of trusted-certificate entries (deterministic bytes).

    The entry date is the certificate's notBefore, not "now", so the same
    bundle always gives the same file.
    """
    body = bytearray(struct.pack(">III", 0xFEEDFEED, 2, len(bundle.anchors)))
    for anchor in bundle.anchors:
        cert = anchor.certificate
        der = cert.public_bytes(serialization.Encoding.DER)
        millis = int(cert.not_valid_before_utc.timestamp() * 1000)
        body += struct.pack(">I", 2)  # trusted certificate entry
        body += _java_utf(alias_for(cert, anchor.fingerprint))
        body += struct.pack(">q", millis)
        body += _java_utf("X.509")
        body += struct.pack(">I", len(der)) + der
    mac = hashlib.sha1(usedforsecurity=False)
    mac.update(password.encode("utf-16-be"))
    mac.update(b"Mighty Aphrodite")
    mac.update(bytes(body))
    return bytes(body) + mac.digest()


# --- existing Java stores ---------------------------------------------------------------

_JKS_MAGIC = 0xFEEDFEED
_WHITENER = b"Mighty Aphrodite"


class KeystoreFormat(enum.StrEnum):
    JKS = "jks"
    PKCS12 = "pkcs12"


@dataclass(frozen=True)
class Keystore:
    format: KeystoreFormat
    aliases: tuple[str, ...]
    fingerprints: frozenset[str]  # of the trusted certificates
    password_less: bool = False


@dataclass(frozen=True)
class _JksEntry:
    alias: str
    raw: bytes  # the whole entry as stored, tag included
    der: bytes | None  # the certificate of a trusted entry


def _jks_digest(password: str, body: bytes) -> bytes:
    mac = hashlib.sha1(usedforsecurity=False)
    mac.update(password.encode("utf-16-be") + _WHITENER + body)
    return mac.digest()


def _parse_jks(data: bytes, password: str) -> tuple[int, list[_JksEntry]]:
    """(version, entries) of a JKS file whose digest matches ``password``."""
    if len(data) < 32:
        raise KeystoreError("too short for a keystore")
    magic, version, count = struct.unpack(">III", data[:12])
    if magic != _JKS_MAGIC or version not in (1, 2):
        raise KeystoreError("not a JKS keystore")
    pos = 12

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(data) - 20:
            raise KeystoreError("truncated JKS keystore")
        out = data[pos : pos + n]
        pos += n
        return out

    def utf() -> str:
        (length,) = struct.unpack(">H", take(2))
        return take(length).decode("utf-8", "replace")

    def certificate() -> bytes:
        if version == 2:
            utf()  # certificate type, "X.509"
        (length,) = struct.unpack(">I", take(4))
        return take(length)

    entries = []
    for _ in range(count):
        start = pos
        (tag,) = struct.unpack(">I", take(4))
        alias = utf()
        take(8)  # creation date
        der: bytes | None = None
        if tag == 1:  # private key: protected key, then its chain
            (length,) = struct.unpack(">I", take(4))
            take(length)
            (chain,) = struct.unpack(">I", take(4))
            for _ in range(chain):
                certificate()
        elif tag == 2:
            der = certificate()
        else:
            raise KeystoreError(f"unknown JKS entry type {tag}")
        entries.append(_JksEntry(alias, data[start:pos], der))
    if pos != len(data) - 20:
        raise KeystoreError("trailing data in JKS keystore")
    if _jks_digest(password, data[:pos]) != data[pos:]:
        raise KeystoreError("keystore password incorrect (JKS integrity check failed)")
    return version, entries


def _der_fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def _load_pkcs12(data: bytes, password: str) -> tuple[pkcs12.PKCS12KeyAndCertificates, bool]:
    """The store and whether it is password-less (JDK 18+ cacerts has no MAC)."""
    for secret, password_less in ((None, True), (password.encode(), False)):
        try:
            return pkcs12.load_pkcs12(data, secret), password_less
        except ValueError:
            continue
    raise KeystoreError("not a PKCS#12 store, or not this password")


def read_keystore(data: bytes, password: str = DEFAULT_STORE_PASSWORD) -> Keystore:
    if data[:4] == struct.pack(">I", _JKS_MAGIC):
        _, entries = _parse_jks(data, password)
        return Keystore(
            KeystoreFormat.JKS,
            tuple(e.alias for e in entries),
            frozenset(_der_fingerprint(e.der) for e in entries if e.der is not None),
        )
    store, password_less = _load_pkcs12(data, password)
    certs = list(store.additional_certs)
    return Keystore(
        KeystoreFormat.PKCS12,
        tuple((c.friendly_name or b"").decode("utf-8", "replace") for c in certs),
        frozenset(fingerprint(c.certificate) for c in certs),
        password_less,
    )


def _free_alias(cert: x509.Certificate, taken: set[str]) -> str:
    alias = alias_for(cert, fingerprint(cert))
    n = 1
    candidate = alias
    while candidate.lower() in taken:
        n += 1
        candidate = f"{alias}-{n}"
    taken.add(candidate.lower())
    return candidate


def add_to_keystore(
    data: bytes, cas: Sequence[x509.Certificate], password: str = DEFAULT_STORE_PASSWORD
) -> bytes:
    """The store with each CA it lacks added as a trusted entry; the same bytes if none.

    Raises :class:`KeystoreError` when the store cannot be read with ``password``
    or (PKCS#12) holds a private key, which a rewrite would have to re-encrypt.
    """
    if data[:4] == struct.pack(">I", _JKS_MAGIC):
        version, entries = _parse_jks(data, password)
        have = {_der_fingerprint(e.der) for e in entries if e.der is not None}
        taken = {e.alias.lower() for e in entries}
        added = b""
        count = len(entries)
        for cert in cas:
            der = cert.public_bytes(serialization.Encoding.DER)
            if _der_fingerprint(der) in have:
                continue
            have.add(_der_fingerprint(der))
            millis = int(cert.not_valid_before_utc.timestamp() * 1000)
            added += struct.pack(">I", 2) + _java_utf(_free_alias(cert, taken))
            added += struct.pack(">q", millis)
            if version == 2:
                added += _java_utf("X.509")
            added += struct.pack(">I", len(der)) + der
            count += 1
        if not added:
            return data
        body = struct.pack(">III", _JKS_MAGIC, version, count) + data[12:-20] + added
        return body + _jks_digest(password, body)
    store, password_less = _load_pkcs12(data, password)
    if store.key is not None or store.cert is not None:
        raise KeystoreError("the PKCS#12 store holds a private key entry, not only CAs")
    existing = list(store.additional_certs)
    have = {fingerprint(c.certificate) for c in existing}
    taken = {(c.friendly_name or b"").decode("utf-8", "replace").lower() for c in existing}
    new = [
        pkcs12.PKCS12Certificate(cert, _free_alias(cert, taken).encode())
        for cert in cas
        if fingerprint(cert) not in have
    ]
    if not new:
        return data
    if password_less or not password:
        return _without_mac(
            pkcs12.serialize_java_truststore([*existing, *new], serialization.NoEncryption())
        )
    encryption = serialization.BestAvailableEncryption(password.encode())
    return pkcs12.serialize_java_truststore([*existing, *new], encryption)


def _without_mac(pfx: bytes) -> bytes:
    """A PFX without its macData: how Java writes a password-less store, and the only
    form it opens with any password (a MAC keyed with the empty password fails)."""
    _, start, end = _read_tlv(pfx, 0)
    version, auth_safe = list(_children(pfx, start, end))[:2]
    return _tlv(0x30, pfx[version[1] : version[3]] + pfx[auth_safe[1] : auth_safe[3]])
