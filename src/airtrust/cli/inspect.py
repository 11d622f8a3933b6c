"""``airtrust inspect``: the work behind the command, without typer.

Both the typer command and the entry point's fast lane call :func:`inspect`,
so the two give the same output by construction.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from airtrust.cli.output import Format, emit, rows_table
from airtrust.clock import utc_now
from airtrust.errors import AirtrustError, InputError, Unreachable

if TYPE_CHECKING:
    from airtrust.pki.inspect import CertificateReport
    from airtrust.probe.tls import Endpoint

__all__ = ["inspect", "load_target", "route"]

_CONNECT_TO_FORMS = "ADDR, ADDR:PORT or HOST:PORT:ADDR:PORT"


def _port(text: str, option: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise InputError(
            f"--connect-to '{option}': '{text}' is not a port", hint="give a port 1-65535"
        )
    return int(text)


def route(endpoint: Endpoint, connect_to: str) -> Endpoint:
    """Where ``--connect-to`` sends the connection for ``endpoint``.

    ``HOST:PORT:ADDR:PORT2`` is doctor's form (curl's ``--connect-to``); it must
    name the URL's host and port (or leave HOST empty, as curl allows), since a
    rule that matches nothing would be silently ignored. ``ADDR`` and
    ``ADDR:PORT`` are short for the URL's own host and port. An empty ADDR
    keeps the URL's host.
    """
    import dataclasses

    from airtrust.probe.route import ConnectTo

    parts = connect_to.split(":")
    if len(parts) == 4:
        rule = ConnectTo.parse(connect_to)
        _port(parts[1], connect_to)
        port = _port(parts[3], connect_to)
        if rule.host and (rule.host.lower(), rule.port) != (endpoint.host.lower(), endpoint.port):
            raise InputError(
                f"--connect-to '{connect_to}' is for {rule.host}:{rule.port}, not "
                f"{endpoint.host}:{endpoint.port}, so it would not apply",
                hint=f"start it with {endpoint.host}:{endpoint.port}:",
            )
        address = rule.address
    elif len(parts) == 2 and parts[0]:
        address, port = parts[0], _port(parts[1], connect_to)
    elif len(parts) == 1 and parts[0]:
        address, port = parts[0], endpoint.port
    else:
        raise InputError(
            f"--connect-to '{connect_to}' is not {_CONNECT_TO_FORMS}",
            hint=f"e.g. --connect-to {endpoint.host}:{endpoint.port}:127.0.0.1:8443",
        )
    return dataclasses.replace(endpoint, port=port, connect_to=address or endpoint.host)


def load_target(
    target: str, connect_to: str | None, *, password: bytes | None = None
) -> tuple[list[Any], str]:
    """Certificates of a file, '-' or https:// endpoint, and a label for messages;
    ``password`` opens a PKCS#12 file."""
    if target.startswith("https://"):
        from airtrust.probe.tls import fetch_chain, parse_endpoint

        endpoint = parse_endpoint(target)
        if connect_to is None:
            chain = fetch_chain(endpoint)
        else:
            routed = route(endpoint, connect_to)
            try:
                chain = fetch_chain(routed)
            except Unreachable as exc:  # name where it really went
                raise Unreachable(
                    exc.message.replace(
                        str(routed), f"{endpoint} (via {routed.connect_to}:{routed.port})"
                    ),
                    hint=exc.hint,
                    reference=exc.reference,
                ) from exc
        if not chain:
            raise AirtrustError(
                f"{endpoint} sent no certificate", hint="check the server's TLS setup"
            )
        return chain, str(endpoint)
    if connect_to is not None:
        raise InputError(
            f"--connect-to applies to an https:// target, not to {target}",
            hint="drop --connect-to, or give https://HOST:PORT",
        )
    from airtrust.files import read_input
    from airtrust.pki.bundle import read_certificates

    anchors = read_certificates(read_input(target), target, password=password)
    return [a.certificate for a in anchors], target


def _days(n: int) -> str:
    return f"{n} day{'' if n == 1 else 's'}"


def _validity(report: CertificateReport, now: dt.datetime) -> str:
    """'3649 days left', or for an expired certificate the whole days since it expired."""
    ended = dt.datetime.fromisoformat(report.not_after)
    if now <= ended:
        return f"{_days(report.days_left)} left"
    ago = (now - ended).days
    return "expired today" if ago == 0 else f"expired {_days(ago)} ago"


def _path_length(value: int | None) -> str:
    return "no limit" if value is None else str(value)


def inspect(
    target: str, connect_to: str | None, output: Format, password: bytes | None = None
) -> None:
    """Print every certificate of ``target`` in ``output`` format."""
    from airtrust.pki.inspect import describe_chain

    certs, label = load_target(target, connect_to, password=password)
    presented = True if label.startswith("https://") else None
    now = utc_now()
    reports = describe_chain(certs, now=now, presented=presented)
    data = {"source": label, "certificates": [r.to_dict() for r in reports]}

    def table(console: Any) -> None:
        if len(reports) > 5:  # a bundle: one row per certificate reads better than N tables
            console.print(
                rows_table(
                    f"{label} ({len(reports)} certificates)",
                    ["#", "subject", "not after", "days", "CA", "key", "sha256", "warnings"],
                    [
                        (
                            r.index,
                            r.subject,
                            r.not_after[:10],
                            r.days_left,
                            "yes" if r.is_ca else "no",
                            f"{r.key_type} {r.key_bits}",
                            r.sha256[:16],
                            "; ".join(r.warnings),
                        )
                        for r in reports
                    ],
                )
            )
            return
        for r in reports:
            rows = [
                ("subject", r.subject),
                ("issuer", r.issuer),
                ("serial", r.serial),
                ("sha256", r.sha256),
                ("validity", f"{r.not_before} .. {r.not_after} ({_validity(r, now)})"),
                ("ca", f"yes, path length {_path_length(r.path_length)}" if r.is_ca else "no"),
                ("key", f"{r.key_type} {r.key_bits} bits, signed with {r.signature_hash}"),
            ]
            if r.subject_alt_names:
                rows.append(("SAN", ", ".join(r.subject_alt_names)))
            if r.key_usage:
                rows.append(("key usage", ", ".join(r.key_usage)))
            if r.extended_key_usage:
                rows.append(("ext key usage", ", ".join(r.extended_key_usage)))
            for kind, subtrees in r.name_constraints.items():
                rows.append((f"{kind} names", ", ".join(subtrees)))
            for w in r.warnings:
                rows.append(("warning", w))
            console.print(rows_table(f"[{r.index}] {label}", ["field", "value"], rows))

    emit(data, output, table=table)
