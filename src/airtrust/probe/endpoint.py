"""Fetch a live endpoint's chain and judge it as a client holding only the bundle would."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509

from airtrust.errors import AirtrustError, Unreachable, VerificationFailed
from airtrust.pki.verify import verify_server
from airtrust.probe.route import ConnectTo
from airtrust.probe.tls import Endpoint, fetch_chain

__all__ = ["EndpointResult", "probe_endpoint"]


@dataclass(frozen=True)
class EndpointResult:
    """What a server presented and whether the anchors alone trust it for its name."""

    url: str
    host: str
    #: the certificates sent, leaf first; empty when no handshake happened
    chain: tuple[x509.Certificate, ...]
    #: why the connection or handshake failed (then ``chain`` is empty)
    unreachable: AirtrustError | None = None
    #: why path validation rejected the chain
    rejected: VerificationFailed | AirtrustError | None = None

    @property
    def trusted(self) -> bool:
        return self.unreachable is None and self.rejected is None

    @property
    def shown(self) -> str:
        return " <- ".join(c.subject.rfc4514_string() for c in self.chain)


def probe_endpoint(
    host: str,
    port: int,
    *,
    anchors: Sequence[x509.Certificate],
    now: dt.datetime,
    connect_to: Sequence[ConnectTo] = (),
) -> EndpointResult:
    address, address_port = ConnectTo.route(connect_to, host, port)
    url = f"https://{host}:{port}"
    try:
        chain = tuple(fetch_chain(Endpoint(host, address_port, connect_to=address)))
    except AirtrustError as exc:
        return EndpointResult(url, host, (), unreachable=exc)
    if not chain:
        return EndpointResult(
            url,
            host,
            (),
            unreachable=Unreachable(f"{url} sent no certificate", hint="check the port speaks TLS"),
        )
    try:
        verify_server(chain[0], anchors=anchors, intermediates=chain[1:], hostname=host, now=now)
    except AirtrustError as exc:
        return EndpointResult(url, host, chain, rejected=exc)
    return EndpointResult(url, host, chain)
