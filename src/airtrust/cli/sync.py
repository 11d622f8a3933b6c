"""``sync``: the controller that keeps every CA secret converged (flags only)."""

from pathlib import Path
from typing import Annotated

import typer

from airtrust.cli.output import info, log_to_stderr
from airtrust.cli.params import KubeconfigOpt
from airtrust.usecases.choices import OpenShiftChoice, RoleChoice

__all__ = ["register", "sync_cmd"]


def sync_cmd(
    source: Annotated[
        str, typer.Option("--source", help="KIND/NAMESPACE/NAME[:KEY] of the CA bundle.")
    ],
    kubeconfig: KubeconfigOpt = None,
    context: Annotated[
        str, typer.Option("--context", help="Kube context (default: current).")
    ] = "",
    in_cluster: Annotated[
        bool, typer.Option("--in-cluster", help="Use the pod's account.")
    ] = False,
    namespace: Annotated[
        list[str] | None, typer.Option("--namespace", help="Target namespace (repeat).")
    ] = None,
    selector: Annotated[str | None, typer.Option("--selector", help="Namespace selector.")] = None,
    metrics_addr: Annotated[
        str, typer.Option("--metrics-addr", help="HOST:PORT for /metrics, /healthz, /readyz.")
    ] = "127.0.0.1:9090",
    lease_namespace: Annotated[
        str | None, typer.Option("--lease-namespace", help="Elect a leader with a Lease here.")
    ] = None,
    lease_duration: Annotated[int, typer.Option("--lease-duration", min=2)] = 15,
    identity: Annotated[str | None, typer.Option("--identity", help="Replica name.")] = None,
    resync: Annotated[float, typer.Option("--resync", help="Full pass every N seconds.")] = 30.0,
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit.")] = False,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="Take roles, version and workloads from this airtrust.yaml."
        ),
    ] = None,
    role: Annotated[
        list[RoleChoice] | None,
        typer.Option("--role", help="control-plane and/or cluster (default: cluster)."),
    ] = None,
    platform_version: Annotated[
        str | None, typer.Option("--platform-version", help="Platform version (labels).")
    ] = None,
    openshift: Annotated[
        OpenShiftChoice, typer.Option("--openshift", help="Is the cluster OpenShift?")
    ] = OpenShiftChoice.AUTO,
) -> None:
    """Run the controller that keeps every CA secret converged (Ctrl-C or SIGTERM stops)."""
    from airtrust.usecases.sync.start import SyncOptions, run_sync

    log_to_stderr()
    written = run_sync(
        SyncOptions(
            source=source,
            kubeconfig=kubeconfig,
            context=context,
            in_cluster=in_cluster,
            namespaces=tuple(namespace or ()),
            selector=selector,
            metrics_addr=metrics_addr,
            lease_namespace=lease_namespace,
            lease_duration=lease_duration,
            identity=identity,
            resync=resync,
            once=once,
            config=config,
            roles=tuple(role or ()),
            platform_version=platform_version,
            openshift=openshift,
        )
    )
    if once:
        info(f"{written} object(s) written")


def register(app: typer.Typer) -> None:
    app.command("sync")(sync_cmd)
