"""``doctor``: every trust point checked from the outside in, as tables, JSON or HTML."""

from pathlib import Path
from typing import Annotated, Any

import typer

from airtrust.cli.output import Format, emit, print_lines, rows_table
from airtrust.cli.params import ConfigOpt, KubeconfigOpt, OutputOpt
from airtrust.clock import utc_now
from airtrust.errors import EXIT_CHECK_FAILED

__all__ = ["doctor_cmd", "register"]


def doctor_cmd(
    config: ConfigOpt = Path("airtrust.yaml"),
    kubeconfig: KubeconfigOpt = None,
    connect_to: Annotated[
        list[str] | None,
        typer.Option("--connect-to", help="HOST:PORT:ADDR:PORT, as curl (reach a host elsewhere)."),
    ] = None,
    probe: Annotated[
        bool, typer.Option("--probe", help="Also run a short-lived Job that connects from inside.")
    ] = False,
    probe_connect_to: Annotated[
        list[str] | None,
        typer.Option(
            "--probe-connect-to",
            help="HOST:PORT:ADDR:PORT for the --probe Job alone, where pods reach a host at "
            "another address than this machine does (split DNS); default: --connect-to.",
        ),
    ] = None,
    watch: Annotated[
        int, typer.Option("--watch", help="Re-run every N seconds (0: once).", min=0)
    ] = 0,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html",
            help="Also write a self-contained HTML report (trust map, expiry timeline) here; "
            "rewritten each round with --watch.",
        ),
    ] = None,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Check every trust point from the outside in; exit 1 when any check fails."""
    import time

    from airtrust.config import load_config
    from airtrust.probe import ConnectTo
    from airtrust.usecases.doctor import open_for_doctor, run_doctor

    rules = [ConnectTo.parse(c) for c in connect_to or ()]
    probe_rules = [ConnectTo.parse(c) for c in probe_connect_to] if probe_connect_to else None
    while True:
        session, unreachable = open_for_doctor(
            load_config(config), now=utc_now(), kubeconfig=kubeconfig
        )
        with session:
            report = run_doctor(
                session,
                connect_to=rules,
                probe=probe,
                probe_connect_to=probe_rules,
                unreachable=unreachable,
            )
        data = report.to_dict()
        if html is not None:
            from airtrust.files import OutputSet
            from airtrust.report import render_html

            page = OutputSet(force=True)
            page.add(html, render_html(data, session.now).encode())
            page.commit()

        def table(console: Any, report: Any = report) -> None:
            by_context: dict[str, list[Any]] = {}
            for c in report.checks:
                by_context.setdefault(c.context, []).append(c)
            for context, checks in by_context.items():
                title = "outside the clusters" if context == "-" else f"context {context}"
                console.print(
                    rows_table(
                        title,
                        ["status", "check", "target", "evidence"],
                        [(str(c.status).upper(), c.name, c.target, c.evidence) for c in checks],
                    )
                )
                # Fixes are commands to copy: each whole, on its own line, in every format.
                lines = []
                for c in checks:
                    if c.fix:
                        lines += [f"# fix {c.name} {c.target} ({str(c.status).upper()}):", c.fix]
                print_lines(console, lines)
            console.print(
                "All checks passed." if not report.failed else f"{report.failures} check(s) failed."
            )

        emit(data, output, table=table)
        if not watch:
            break
        time.sleep(watch)
    if report.failed:
        raise typer.Exit(EXIT_CHECK_FAILED)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor_cmd)
