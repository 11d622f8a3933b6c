"""``rotate start|finish|status``: a CA rotation in two phases, without downtime."""

from pathlib import Path
from typing import Annotated, Any

import typer

from airtrust.cli.output import Format, emit, rows_table
from airtrust.cli.params import ConfigOpt, KubeconfigOpt, OutputOpt, open_config
from airtrust.errors import InputError

__all__ = ["register", "rotate_app", "rotate_finish_cmd", "rotate_start_cmd", "rotate_status_cmd"]

rotate_app = typer.Typer(
    help="Rotate to a new CA without downtime (two phases).", no_args_is_help=True
)


@rotate_app.command("start")
def rotate_start_cmd(
    new_ca: Annotated[Path, typer.Option("--new-ca", help="Folder of the new CA (ca create).")],
    config: ConfigOpt = Path("airtrust.yaml"),
    kubeconfig: KubeconfigOpt = None,
    keep_tls: Annotated[
        bool, typer.Option("--keep-tls", help="Do not re-issue TLS certificates now.")
    ] = False,
    node_timeout: Annotated[
        float,
        typer.Option(
            "--node-timeout",
            min=0,
            help="Seconds to wait for every node (node_trust) to hold old + new CA before "
            "anything is re-issued.",
        ),
    ] = 300.0,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Phase 1: distribute old + new CA everywhere (nodes included), then re-issue TLS
    under the new CA."""
    from airtrust.usecases.rotation import start

    with open_config(config, kubeconfig) as session:
        state = start(session, new_ca, keep_tls=keep_tls, node_timeout=node_timeout)
    _show_state(
        state.summary(),
        output,
        "next: serve the new certificates (reload the ingress), check with airtrust "
        "doctor, then airtrust rotate finish",
    )


@rotate_app.command("finish")
def rotate_finish_cmd(
    config: ConfigOpt = Path("airtrust.yaml"),
    kubeconfig: KubeconfigOpt = None,
    connect_to: Annotated[
        list[str] | None, typer.Option("--connect-to", help="HOST:PORT:ADDR:PORT, as curl.")
    ] = None,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Phase 2: once every endpoint serves the new CA, remove the old CA everywhere."""
    from airtrust.probe import ConnectTo
    from airtrust.usecases.rotation import finish
    from airtrust.usecases.session import read_rotation

    with open_config(config, kubeconfig) as session:
        state = read_rotation(session)
        if state is None:
            raise InputError("no rotation in progress", hint="airtrust rotate start --new-ca DIR")
        state = finish(session, state, connect_to=[ConnectTo.parse(c) for c in connect_to or ()])
    _show_state(
        state.summary(),
        output,
        "done: point ca.bundle, tls and issue_from in airtrust.yaml at the new CA's files",
    )


@rotate_app.command("status")
def rotate_status_cmd(
    config: ConfigOpt = Path("airtrust.yaml"),
    kubeconfig: KubeconfigOpt = None,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Where a rotation stands (read from the cluster)."""
    from airtrust.usecases.session import read_rotation

    with open_config(config, kubeconfig) as session:
        state = read_rotation(session)
    _show_state(state.summary() if state else {"phase": "none"}, output, "")


def _show_state(data: dict[str, Any], output: Format, next_step: str) -> None:
    def table(console: Any) -> None:
        rows = [(k, ", ".join(v) if isinstance(v, list) else str(v)) for k, v in data.items()]
        console.print(rows_table("CA rotation", ["field", "value"], rows))
        if next_step:
            console.print(next_step, markup=False, soft_wrap=True)

    emit(data, output, table=table)


def register(app: typer.Typer) -> None:
    app.add_typer(rotate_app, name="rotate")
