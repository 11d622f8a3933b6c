"""``airtrust inspect``: the work behind the command, without typer.

Both the typer command and the entry point's fast lane call :func:`inspect`,
so the two give the same output by construction.
"""

from __future__ import annotations

from typing import Any

from airtrust.cli.output import Format, emit, rows_table
from airtrust.clock import utc_now
from airtrust.errors import AirtrustError

__all__ = ["inspect", "load_target"]


def load_target(target: str, connect_to: str | None) -> tuple[list[Any], str]:
    """Certificates of a file, '-' or https:// endpoint, and a label for messages."""
    if target.startswith("https://"):
        import dataclasses

        from airtrust.probe.tls import fetch_chain, parse_endpoint

        endpoint = dataclasses.replace(parse_endpoint(target), connect_to=connect_to)
        chain = fetch_chain(endpoint)
        if not chain:
            raise AirtrustError(
                f"{endpoint} sent no certificate", hint="check the server's TLS setup"
            )
        return chain, str(endpoint)
    from airtrust.files import read_input
    from airtrust.pki.bundle import read_certificates

    return [a.certificate for a in read_certificates(read_input(target), target)], target


def inspect(target: str, connect_to: str | None, output: Format) -> None:
    """Print every certificate of ``target`` in ``output`` format."""
    from airtrust.pki.inspect import describe_chain

    certs, label = load_target(target, connect_to)
    presented = True if label.startswith("https://") else None
    reports = describe_chain(certs, now=utc_now(), presented=presented)
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
                ("validity", f"{r.not_before} .. {r.not_after} ({r.days_left} days left)"),
                ("ca", f"yes, path length {r.path_length}" if r.is_ca else "no"),
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
