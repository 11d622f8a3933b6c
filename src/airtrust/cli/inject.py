"""``airtrust inject``: pods that trust the CA at admission, without rebuilding images."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from airtrust.pki.bundle import Bundle

__all__ = ["inject_app", "register", "serve_cmd", "unregister_cmd"]

inject_app = typer.Typer(
    help="Make pods trust the CA at admission (a mutating webhook).", no_args_is_help=True
)
#: plan.inject.DEFAULT_SCOPE, for the help text (importing plan would slow every start).
DEFAULT_SELECTOR = "airtrust.io/inject=enabled"
HOST_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
#: How both commands reach the cluster.
Kubeconfig = Annotated[Path | None, typer.Option("--kubeconfig", help="kubeconfig file.")]
Context = Annotated[str, typer.Option("--context", help="Kube context.")]
InCluster = Annotated[bool, typer.Option("--in-cluster", help="Use the pod's account.")]


def namespace_selector(selector: str | None, projects: bool) -> str:
    """The namespaces in scope (plan.inject.namespace_scope with the profile's projects)."""
    from airtrust.plan.inject import namespace_scope
    from airtrust.profiles import load_profile

    profile = load_profile() if projects else None
    project_selector = profile.project_namespace_selector if profile else None
    return namespace_scope(selector, project_selector, projects=projects)


@inject_app.command("serve")
def serve_cmd(
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT to serve HTTPS on.")],
    cert: Annotated[Path, typer.Option("--cert", help="Serving certificate (PEM, chain).")],
    key: Annotated[Path, typer.Option("--key", help="Its private key.")],
    ca: Annotated[
        list[str] | None, typer.Option("--ca", help="The local CA bundle (repeatable).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="airtrust.yaml (its ca.bundle).")
    ] = None,
    base_bundle: Annotated[
        Path, typer.Option("--base-bundle", help="Public roots kept in the injected bundle.")
    ] = HOST_BUNDLE,
    selector: Annotated[
        str | None,
        typer.Option(
            "--namespace-selector", help=f"Namespaces in scope (default {DEFAULT_SELECTOR})."
        ),
    ] = None,
    projects: Annotated[
        bool, typer.Option("--projects", help="Scope: the profile's project namespaces.")
    ] = False,
    configmap: Annotated[
        str, typer.Option("--configmap", help="The bundle ConfigMap written in each namespace.")
    ] = "airtrust-ca-bundle",
    distribute: Annotated[
        bool,
        typer.Option("--distribute/--no-distribute", help="Write the bundle ConfigMaps."),
    ] = True,
    interval: Annotated[
        float, typer.Option("--interval", help="Seconds between bundle passes.")
    ] = 30.0,
    drain: Annotated[
        float,
        typer.Option(
            "--drain",
            min=0,
            help="On SIGTERM, answer unready for this long before stopping (a replica "
            "leaving its Service).",
        ),
    ] = 0.0,
    kubeconfig: Kubeconfig = None,
    context: Context = "",
    in_cluster: InCluster = False,
) -> None:
    """Serve the mutating admission webhook (HTTPS, uvicorn) and keep the merged bundle
    in every namespace in scope. The certificate files are reloaded when they change."""
    from airtrust.cli.output import log_to_stderr
    from airtrust.cli.params import local_ca_files, read_bundle
    from airtrust.plan.inject import InjectSettings
    from airtrust.usecases.inject.serve import serve
    from airtrust.usecases.inject.start import bundle_distributor

    files = local_ca_files(ca or [], config, what="inject serve")
    log_to_stderr()

    def local() -> "Bundle":
        # Read on every pass: in the cluster this is the mounted CA secret.
        return read_bundle(files)

    local()  # a bad bundle is an error now, not a warning in the log later
    settings = InjectSettings(configmap=configmap)
    distributor = (
        bundle_distributor(
            selector=namespace_selector(selector, projects),
            settings=settings,
            base_bundle=base_bundle,
            local=local,
            in_cluster=in_cluster,
            context=context,
            kubeconfig=kubeconfig,
        )
        if distribute
        else None
    )
    serve(
        listen=listen,
        cert=cert,
        key=key,
        settings=settings,
        distributor=distributor,
        interval=interval,
        drain=drain,
    )


@inject_app.command("unregister")
def unregister_cmd(
    name: Annotated[
        str, typer.Option("--name", help="The MutatingWebhookConfiguration to delete.")
    ] = "airtrust-inject",
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait until it is gone.")
    ] = 60.0,
    kubeconfig: Kubeconfig = None,
    context: Context = "",
    in_cluster: InCluster = False,
) -> None:
    """Delete the webhook's configuration and wait until it is gone (absent already is
    fine): the chart's pre-delete hook, so that `helm uninstall` never leaves a
    failurePolicy Fail configuration pointing at pods it deleted."""
    from airtrust.cli.output import log_to_stderr
    from airtrust.usecases.inject.start import connect
    from airtrust.usecases.inject.unregister import unregister

    log_to_stderr()
    api = connect(in_cluster=in_cluster, context=context, kubeconfig=kubeconfig)
    existed = unregister(api, name, timeout=timeout)
    state = "deleted" if existed else "was not there"
    typer.echo(f"mutatingwebhookconfiguration {name} {state}")


def register(app: typer.Typer) -> None:
    app.add_typer(inject_app, name="inject")
