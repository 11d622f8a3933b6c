"""``node install``: a node's container runtime trusts the local registry (flags only)."""

import enum
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from airtrust.cli.output import Format, emit, print_lines, rows_table
from airtrust.cli.params import KubeconfigOpt, OutputOpt

__all__ = [
    "RuntimeChoice",
    "node_app",
    "node_install_cmd",
    "node_sync_cmd",
    "register",
]

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
    state: Annotated[
        str | None,
        typer.Option("--state", help="airtrust's record of what it wrote (a node path)."),
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
    from airtrust.errors import InputError, NodeTrustError
    from airtrust.plan.node_trust import Runtime, parse_registry
    from airtrust.usecases.node_trust import install
    from airtrust.usecases.node_trust import remove as take_back

    chosen = None if runtime is RuntimeChoice.AUTO else Runtime(runtime.value)
    if not root.is_dir():
        raise InputError(f"--root {root} is not a folder", hint="give the node's root, e.g. /")
    if remove:
        report = take_back(root, dry_run=dry_run, runtime=chosen, state_file=state)
    else:
        if not registry:
            raise InputError(
                "node install needs --registry", hint="--registry HOST[:PORT] (repeat for more)"
            )
        registries = [parse_registry(r) for r in registry]
        if not ca:
            raise InputError("node install needs --ca", hint="--ca the local CA bundle (PEM)")
        bundle = read_bundle(ca)
        try:
            report = install(
                root,
                registries,
                bundle.to_pem(),
                runtime=chosen,
                certs_dir=certs_dir,
                containerd_config=containerd_config,
                dry_run=dry_run,
                state_file=state,
            )
        except NodeTrustError as exc:
            # Lines to paste (containerd's config_path) go to stdout as they are; the
            # error itself stays one line on stderr.
            for note in getattr(exc, "__notes__", ()):
                sys.stdout.write(f"{note}\n")
            raise
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


@node_app.command("sync")
def node_sync_cmd(
    source: Annotated[
        str, typer.Option("--source", help="secret/NS/NAME[:KEY] (or configmap/...) of the CA.")
    ],
    registry: Annotated[
        list[str], typer.Option("--registry", help="HOST[:PORT] the node pulls from (repeat).")
    ],
    node: Annotated[
        str, typer.Option("--node", envvar="NODE_NAME", help="This node's name (env NODE_NAME).")
    ],
    root: Annotated[Path, typer.Option("--root", help="The node's root as mounted.")] = Path(
        "/host"
    ),
    runtime: Annotated[RuntimeChoice, typer.Option("--runtime")] = RuntimeChoice.AUTO,
    certs_dir: Annotated[
        str | None, typer.Option("--certs-dir", help="The runtime's folder as the node sees it.")
    ] = None,
    containerd_config: Annotated[str | None, typer.Option("--containerd-config")] = None,
    state: Annotated[
        str | None,
        typer.Option(
            "--state",
            help="Where airtrust keeps its record (a node path; default: in --certs-dir, "
            "the one folder the agent's pod mounts; k3s/rke2: "
            "/var/lib/airtrust/registry-ca/node-trust.json).",
        ),
    ] = None,
    interval: Annotated[
        float, typer.Option("--interval", help="Seconds between passes.", min=1)
    ] = 30.0,
    health_port: Annotated[
        int,
        typer.Option(
            "--health-port",
            min=0,
            max=65535,
            help="Answer GET /readyz here: 200 while the last good pass is at most three "
            "intervals old (0: no endpoint).",
        ),
    ] = 0,
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit.")] = False,
    in_cluster: Annotated[
        bool, typer.Option("--in-cluster", help="Use the pod's account.")
    ] = False,
    kubeconfig: KubeconfigOpt = None,
    context: Annotated[str, typer.Option("--context", help="Kube context.")] = "",
) -> None:
    """The node agent: the runtime follows the CA source; the node is annotated with the
    sha256 of the bundle it trusts (airtrust.io/registry-ca-sha256), or on k3s/rke2 with
    the restart it waits for (airtrust.io/registry-ca-pending-restart)."""
    import signal

    from airtrust.cli.output import info, log_to_stderr
    from airtrust.usecases.node_trust import open_agent

    log_to_stderr()
    agent = open_agent(
        source,
        node,
        root,
        registry,
        runtime=None if runtime is RuntimeChoice.AUTO else runtime.value,
        certs_dir=certs_dir,
        containerd_config=containerd_config,
        state_file=state,
        in_cluster=in_cluster,
        kubeconfig=kubeconfig,
        context=context,
    )
    with agent:
        if once:
            report = agent.sync_once()
            info(f"node {node}: {report.writes} write(s) ({report.runtime})")
            if report.pending_restart:
                info(f"node {node}: not trusted until {report.pending_restart}")
            return
        signal.signal(signal.SIGTERM, lambda *_: agent.stop.set())
        info(f"node agent on {node}: following {agent.source}, registries {', '.join(registry)}")
        health = agent.serve_health(health_port, 3 * interval + 30) if health_port else None
        try:
            agent.run(interval)
        finally:
            if health is not None:
                health.shutdown()


def register(app: typer.Typer) -> None:
    app.add_typer(node_app, name="node")
