"""Host names, IP addresses and name constraints (RFC 5280 4.2.1.10).

Shared by issuing (refuse a name the CA may not certify) and by verification
diagnostics (say which constraint a rejected chain broke).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509

from airtrust.errors import CertificateError

__all__ = [
    "Constraints",
    "IPAddress",
    "IPNetwork",
    "covers",
    "dns_matches_subtree",
    "hostname_matches",
    "normalise_dns_name",
    "parse_ip",
    "parse_network",
    "san_names",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def normalise_dns_name(name: str, *, allow_wildcard: bool = True) -> str:
    """Lower-case, strip one trailing dot, and refuse what no SAN can hold.

    Non-ASCII names must be given in their IDNA (xn--) form: certificates
    carry A-labels, and guessing the conversion would hide typos.
    """
    original = name
    name = name.strip().lower()
    name = name.removesuffix(".")  # one: the root label; a second is an empty label
    if not name or len(name) > 253:
        raise CertificateError(
            f"'{original}' is not a DNS name", hint="give a name like runai.example.com"
        )
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        raise CertificateError(
            f"'{original}' is an IP address, not a DNS name",
            hint="pass IP addresses with --ip; Run:ai needs a DNS name as its domain",
        )
    if not name.isascii():
        raise CertificateError(
            f"'{original}' contains non-ASCII characters",
            hint="give the IDNA form (xn--...) of the name",
        )
    labels = name.split(".")
    if labels[0] == "*" and allow_wildcard:
        labels = labels[1:]
        if len(labels) < 2:
            raise CertificateError(
                f"wildcard '{original}' covers a whole top-level domain",
                hint="use a wildcard below a registered domain, like *.apps.example.com",
            )
    for label in labels:
        if not _LABEL.match(label):
            raise CertificateError(
                f"'{original}' is not a valid DNS name (bad label '{label}')",
                hint="labels are 1-63 letters, digits or hyphens, not starting or ending with '-'",
            )
    return name


def parse_ip(text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError as exc:
        raise CertificateError(
            f"'{text}' is not an IP address", hint="give an address like 10.0.0.5 or fd00::5"
        ) from exc


def parse_network(text: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        raise CertificateError(
            f"'{text}' is not an IP network",
            hint="give a network in CIDR form with no host bits set, like 10.0.0.0/8",
        ) from exc


def dns_matches_subtree(name: str, subtree: str) -> bool:
    """RFC 5280: 'example.com' covers itself and every name below it.

    A leading dot ('.example.com') covers only names below it, as OpenSSL and
    Go read it. A wildcard name is inside a subtree when its base is.
    """
    name = name.lower().removeprefix("*.")
    subtree = subtree.lower().rstrip(".")
    if subtree.startswith("."):
        return name.endswith(subtree)
    if not subtree:
        return True
    return name == subtree or name.endswith("." + subtree)


@dataclass(frozen=True)
class Constraints:
    """The name constraints of one CA certificate, in plain Python types."""

    owner: str
    permitted_dns: tuple[str, ...] = ()
    excluded_dns: tuple[str, ...] = ()
    permitted_ip: tuple[IPNetwork, ...] = ()
    excluded_ip: tuple[IPNetwork, ...] = ()

    @classmethod
    def of(cls, cert: x509.Certificate) -> Constraints | None:
        try:
            ext = cert.extensions.get_extension_for_class(x509.NameConstraints).value
        except x509.ExtensionNotFound:
            return None

        def split(
            subtrees: Iterable[x509.GeneralName] | None,
        ) -> tuple[tuple[str, ...], tuple[IPNetwork, ...]]:
            dns = tuple(n.value for n in subtrees or () if isinstance(n, x509.DNSName))
            ips = tuple(n.value for n in subtrees or () if isinstance(n, x509.IPAddress))
            return dns, ips  # type: ignore[return-value]

        pdns, pip = split(ext.permitted_subtrees)
        edns, eip = split(ext.excluded_subtrees)
        return cls(cert.subject.rfc4514_string(), pdns, edns, pip, eip)

    def violation(self, name: str | IPAddress) -> str | None:
        """Why ``name`` is outside these constraints, or None when it is inside."""
        if isinstance(name, str):
            for sub in self.excluded_dns:
                if dns_matches_subtree(name, sub):
                    return f"'{name}' is in the excluded subtree '{sub}' of '{self.owner}'"
            if self.permitted_dns and not any(
                dns_matches_subtree(name, sub) for sub in self.permitted_dns
            ):
                allowed = ", ".join(self.permitted_dns)
                return f"'{name}' is outside the permitted DNS names of '{self.owner}' ({allowed})"
            return None
        for net in self.excluded_ip:
            if name.version == net.version and name in net:
                return f"{name} is in the excluded network {net} of '{self.owner}'"
        if self.permitted_ip and not any(
            name.version == net.version and name in net for net in self.permitted_ip
        ):
            allowed = ", ".join(str(n) for n in self.permitted_ip)
            return f"{name} is outside the permitted networks of '{self.owner}' ({allowed})"
        return None


def san_names(cert: x509.Certificate) -> tuple[list[str], list[IPAddress]]:
    """DNS names and IP addresses of a certificate's subjectAltName."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    ips = [
        ip
        for ip in san.get_values_for_type(x509.IPAddress)
        if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address)
    ]
    return san.get_values_for_type(x509.DNSName), ips


def hostname_matches(pattern: str, hostname: str) -> bool:
    """RFC 6125 matching as browsers do it: a wildcard only as the whole left label."""
    pattern = pattern.lower().rstrip(".")
    hostname = hostname.lower().rstrip(".")
    if pattern.startswith("*."):
        base = pattern[2:]
        head, _, rest = hostname.partition(".")
        return bool(head) and rest == base
    return pattern == hostname


def covers(cert: x509.Certificate, host: str) -> bool:
    """Whether the certificate's SAN covers ``host`` (a DNS name or an IP)."""
    dns, ips = san_names(cert)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return any(hostname_matches(p, host) for p in dns)
    return ip in ips
