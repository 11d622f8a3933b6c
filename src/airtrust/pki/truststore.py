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
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from airtrust.pki.bundle import Bundle, certificate_to_pem

__all__ = [
    "DEFAULT_STORE_PASSWORD",
    "alias_for",
    "canonical_name",
    "hash_dir_entries",
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
    encryption: serialization.KeySerializationEncryption
    if password:
        encryption = serialization.BestAvailableEncryption(password.encode())
    else:
        encryption = serialization.NoEncryption()
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
