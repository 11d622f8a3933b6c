"""The identity provider's OIDC discovery document, fetched as a client with only the bundle.

Clusters trust the control plane's Keycloak through its issuer URL; a
discovery document whose ``issuer`` is not the URL it was fetched under is
refused by every OIDC client (OpenID Connect Discovery 1.0, section 4.3), so
the document is parsed and compared, not merely fetched.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from airtrust.probe.route import ConnectTo

__all__ = ["WELL_KNOWN", "Discovery", "fetch_discovery", "issuer_url"]

WELL_KNOWN = "/.well-known/openid-configuration"


@dataclass(frozen=True)
class Discovery:
    url: str
    #: the TLS handshake failed verification with the bundle
    tls_error: str = ""
    #: no HTTP answer (connection dropped, not HTTP)
    transport_error: str = ""
    status: int = 0
    document: dict[str, Any] | None = None


def issuer_url(host: str, port: int, path: str) -> str:
    """The issuer a discovery document at ``path`` must name."""
    realm = path[: -len(WELL_KNOWN)] if path.endswith(WELL_KNOWN) else path
    authority = host if port == 443 else f"{host}:{port}"
    return f"https://{authority}{realm}"


def fetch_discovery(
    host: str,
    port: int,
    path: str,
    *,
    bundle_pem: bytes,
    connect_to: Sequence[ConnectTo] = (),
    timeout: float = 10.0,
) -> Discovery:
    address, address_port = ConnectTo.route(connect_to, host, port)
    url = f"https://{host}:{port}{path}"
    context = ssl.create_default_context(cadata=bundle_pem.decode())
    authority = host if port == 443 else f"{host}:{port}"
    try:
        with httpx.Client(verify=context, timeout=timeout, trust_env=False) as client:
            response = client.get(
                f"https://{address}:{address_port}{path}",
                headers={"Host": authority},
                # The name checked in the certificate, whatever address we dial.
                extensions={"sni_hostname": host},
            )
    except httpx.ConnectError as exc:
        text = str(exc)
        if "CERTIFICATE_VERIFY_FAILED" in text or "SSL" in text:
            return Discovery(url, tls_error=text)
        return Discovery(url, transport_error=text)
    except httpx.TransportError as exc:
        return Discovery(url, transport_error=str(exc) or type(exc).__name__)
    document = None
    if response.status_code == 200:
        try:
            parsed = response.json()
        except ValueError:
            parsed = None
        document = parsed if isinstance(parsed, dict) else None
    return Discovery(url, status=response.status_code, document=document)
