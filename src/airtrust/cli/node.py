"""``node install``: a node's container runtime trusts the local registry (flags only)."""

import enum
from pathlib import Path
from typing import Annotated, Any

import typer

from airtrust.cli.output import Format, emit, print_lines, rows_table
from airtrust.cli.params import OutputOpt

__all__ = ["RuntimeChoice", "node_app", "node_install_cmd", "register"]

node_app = typer.Typer(
    help="Make nodes' container runtimes trust the local registry.", no_args_is_help=True
)


class RuntimeChoice(enum.StrEnum):
    """plan.node_trust.Runtime's values and auto; here so a start imports no core."""

    AUTO = "auto"
    CONTAINERD = "containerd"
    CRIO = "crio"
    DOCKER = "docker"
    K3S = "k3s"
    RKE2 = "rke2"


@node_app.command("install")
def node_install_cmd(
    registry: Annotated[
        list[str] | None,
        typer.Option("--registry", help="HOST[:PORT] the node pulls from (repeat)."),
    ] = None,
    ca: Annotated[
        list[str] | None,
        typer.Option("--ca", help="CA bundle file the registry's certificate chains to."),
    ] = None,
    root: Annotated[
        Path, typer.Option("--root", help="The node's root filesystem (/ on the node).")
    ] = Path("/"),
    runtime: Annotated[
        RuntimeChoice, typer.Option("--runtime", help="Which runtime (auto: from the root).")
    ] = RuntimeChoice.AUTO,
    certs_dir: Annotated[
        str | None,
        typer.Option(
            "--certs-dir",
            help="The runtime's per-registry folder as the node sees it (default: the "
            "runtime's own; containerd: its config_path).",
        ),
    ] = None,
    containerd_config: Annotated[
        str | None,
        typer.Option(
            "--containerd-config", help="containerd's config (default /etc/containerd/config.toml)."
        ),
    ] = None,
    remove: Annotated[
        bool, typer.Option("--remove", help="Take back what airtrust wrote, and only that.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be written; write nothing.")
    ] = False,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Write the runtime's own trust files for each registry (idempotent)."""
    from airtrust.cli.params import read_bundle
    from airtrust.errors import InputError
    from airtrust.plan.node_trust import Runtime, parse_registry
    from airtrust.usecases.node_trust import install
    from airtrust.usecases.node_trust import remove as take_back

    chosen = None if runtime is RuntimeChoice.AUTO else Runtime(runtime.value)
    if not root.is_dir():
        raise InputError(f"--root {root} is not a folder", hint="give the node's root, e.g. /")
    if remove:
        report = take_back(root, dry_run=dry_run, runtime=chosen)
    else:
        if not registry:
            raise InputError(
                "node install needs --registry", hint="--registry HOST[:PORT] (repeat for more)"
            )
        registries = [parse_registry(r) for r in registry]
        if not ca:
            raise InputError("node install needs --ca", hint="--ca the local CA bundle (PEM)")
        bundle = read_bundle(ca)
        report = install(
            root,
            registries,
            bundle.to_pem(),
            runtime=chosen,
            certs_dir=certs_dir,
            containerd_config=containerd_config,
            dry_run=dry_run,
        )
    data = report.to_dict()

    def table(console: Any) -> None:
        verb = "would " if dry_run else ""
        rows = [(f"{verb}{c.action}", c.path, c.why) for c in report.changes]
        console.print(rows_table(f"node trust ({report.runtime})", ["action", "path", "why"], rows))
        lines = [f"{report.writes} write(s){' (dry run)' if dry_run else ''}"]
        if report.restart:
            lines.append(f"then {report.restart}")
        print_lines(console, lines)

    emit(data, output, table=table)


def register(app: typer.Typer) -> None:
    app.add_typer(node_app, name="node")
