"""Read the certificate chain a live TLS endpoint presents.

Adapter over pyOpenSSL: Python's ``ssl`` returns the presented chain only
from 3.13 on, and a verifying handshake would hide exactly the chains we need
to see (a missing intermediate, the wrong CA). The handshake here therefore
verifies nothing; :mod:`airtrust.pki.verify` judges the result.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography import x509

from airtrust.errors import InputError, Unreachable

__all__ = ["Endpoint", "fetch_chain", "parse_endpoint"]


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    #: Where to connect when it differs from ``host`` (like curl --resolve).
    connect_to: str | None = None

    def __str__(self) -> str:
        return f"https://{self.host}:{self.port}"


def parse_endpoint(text: str) -> Endpoint:
    """``https://HOST[:PORT][/path]`` -> Endpoint; the path is ignored."""
    parts = urlsplit(text)
    if parts.scheme != "https" or not parts.hostname:
        raise InputError(
            f"'{text}' is not an https:// URL", hint="give https://HOST or https://HOST:PORT"
        )
    try:
        port = parts.port or 443
    except ValueError as exc:
        raise InputError(f"'{text}' has an invalid port", hint="give a port 1-65535") from exc
    return Endpoint(parts.hostname, port)


def fetch_chain(endpoint: Endpoint, *, timeout: float = 10.0) -> list[x509.Certificate]:
    """The certificates the server sends, leaf first, in the order sent."""
    from OpenSSL import SSL

    address = (endpoint.connect_to or endpoint.host, endpoint.port)
    try:
        sock = socket.create_connection(address, timeout=timeout)
    except OSError as exc:
        raise Unreachable(
            f"cannot connect to {endpoint} ({exc.strerror or exc})",
            hint="check the host name, port and that the service is running",
            reference="endpoint-unreachable",
        ) from exc
    try:
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        context.set_verify(SSL.VERIFY_NONE)
        conn = SSL.Connection(context, sock)
        conn.set_tlsext_host_name(endpoint.host.encode("idna"))
        conn.set_connect_state()
        conn.setblocking(True)
        try:
            conn.do_handshake()
        except (SSL.Error, OSError) as exc:
            raise Unreachable(
                f"TLS handshake with {endpoint} failed ({exc})",
                hint="check that the port speaks TLS",
                reference="tls-handshake-failed",
            ) from exc
        chain = conn.get_peer_cert_chain(as_cryptography=True) or []
        try:
            conn.shutdown()
        except (SSL.Error, OSError):
            pass
        return list(chain)
    finally:
        sock.close()
