"""``control-plane-endpoint``, ``cluster-endpoint`` and ``oidc``: the live servers, seen
as a client that holds only the local bundle sees them."""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509

from airtrust.pki.bundle import fingerprint
from airtrust.probe import ConnectTo, fetch_discovery, probe_endpoint
from airtrust.probe.oidc import issuer_url
from airtrust.usecases.doctor.model import Check, Status, seen
from airtrust.usecases.session import Session

__all__ = ["check_endpoint", "check_oidc"]


def check_endpoint(
    session: Session,
    host: str,
    port: int,
    connect_to: Sequence[ConnectTo],
    expected_chain: Sequence[x509.Certificate] | None,
    label: str,
    warn_days: int,
) -> list[Check]:
    result = probe_endpoint(
        host, port, anchors=session.bundle.certificates, now=session.now, connect_to=connect_to
    )

    served = seen(result.chain, f"served by {result.url}")

    def check(status: Status, evidence: str, fix: str = "") -> Check:
        return Check(label, "-", result.url, status, evidence, fix, served)

    if result.unreachable is not None:
        return [
            check(
                Status.FAIL,
                result.unreachable.message,
                f"check the ingress/route for {host}; curl -v https://{host}",
            )
        ]
    chain, shown = result.chain, result.shown
    same_leaf = expected_chain is None or fingerprint(expected_chain[0]) == fingerprint(chain[0])
    if result.rejected is not None:
        if expected_chain is not None and same_leaf and len(expected_chain) > len(chain):
            return [
                check(
                    Status.FAIL,
                    f"missing intermediate: the server sends {len(chain)} certificate(s), "
                    f"the TLS secret holds {len(expected_chain)}; served: {shown}",
                    "serve the full chain: tls.crt must be leaf + intermediates, and the "
                    "ingress must use that secret",
                )
            ]
        fix = (
            f"serve a certificate from the local CA for {host} (airtrust apply)"
            if same_leaf
            else "the server sends another certificate than the TLS secret holds: point the "
            "ingress at the secret, or restart it to reload"
        )
        reason = getattr(result.rejected, "reason", "")
        return [check(Status.FAIL, f"{result.rejected.message} ({reason}); served: {shown}", fix)]
    days = (chain[0].not_valid_after_utc - session.now).days
    status = Status.WARN if days < warn_days else Status.OK
    checks = [
        check(
            status,
            f"verified with the local bundle only; {days} days left; served: {shown}",
            "" if status is Status.OK else "renew the certificate (airtrust apply)",
        )
    ]
    if not same_leaf:
        checks.append(
            check(
                Status.WARN,
                "served certificate differs from the TLS secret",
                "restart the ingress controller or point it at the secret",
            )
        )
    return checks


def check_oidc(
    session: Session, host: str, port: int, connect_to: Sequence[ConnectTo], path: str
) -> Check:
    """The identity provider's discovery document, over TLS verified with only the bundle,
    naming itself by the URL clusters will use as ``--oidc-issuer-url``."""
    found = fetch_discovery(
        host, port, path, bundle_pem=session.bundle.to_pem(), connect_to=connect_to
    )
    want = issuer_url(host, port, path)

    def check(status: Status, evidence: str, fix: str = "") -> Check:
        return Check("oidc", "-", found.url, status, evidence, fix)

    routed = f"check that https://{host}/auth is routed to the identity provider (Keycloak)"
    if found.tls_error:
        return check(Status.FAIL, found.tls_error, "fix the endpoint's certificate first")
    if found.transport_error:
        return check(
            Status.WARN, f"TLS verified, but no HTTP answer ({found.transport_error})", routed
        )
    if found.status == 404:
        return check(Status.SKIP, "not served here (no identity provider at this address)")
    if found.status != 200:
        return check(Status.WARN, f"HTTP {found.status}", "check the identity provider's realm")
    if found.document is None:
        return check(
            Status.FAIL, "HTTP 200, but not an OpenID discovery document (not JSON)", routed
        )
    issuer = found.document.get("issuer")
    if issuer != want:
        return check(
            Status.FAIL,
            f"issuer is {issuer!r}, not {want!r}: OIDC clients refuse a document whose issuer "
            "differs from its URL",
            f"set the identity provider's public URL (Keycloak hostname) to https://{host}",
        )
    return check(Status.OK, f"issuer {issuer} over TLS verified with the bundle")
