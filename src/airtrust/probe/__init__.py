"""Every outbound TLS connection airtrust makes to a server it checks.

Endpoints are fetched without verifying (so a broken chain can be shown),
then judged by :mod:`airtrust.pki.verify`; ``--connect-to`` routing and the
OIDC discovery request live here too, so doctor and rotation reach servers
the same way.
"""

from airtrust.probe.endpoint import EndpointResult, probe_endpoint
from airtrust.probe.oidc import Discovery, fetch_discovery
from airtrust.probe.route import ConnectTo
from airtrust.probe.tls import Endpoint, fetch_chain, parse_endpoint

__all__ = [
    "ConnectTo",
    "Discovery",
    "Endpoint",
    "EndpointResult",
    "fetch_chain",
    "fetch_discovery",
    "parse_endpoint",
    "probe_endpoint",
]
