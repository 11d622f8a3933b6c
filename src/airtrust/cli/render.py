"""``render``: what apply sends, and airtrust's own in-cluster parts, as files."""

from pathlib import Path
from typing import Annotated, Any

import typer

from airtrust.cli.node import RuntimeChoice
from airtrust.cli.output import Format, emit, warn
from airtrust.cli.params import KubeconfigOpt, OutputOpt, open_config
from airtrust.errors import InputError
from airtrust.plan.model import FailurePolicy

__all__ = ["register", "render_cmd"]

CONTROLLER_SOURCE = "secret/airtrust-system/local-ca"


def render_cmd(
    out: Annotated[Path, typer.Option("--out", help="Folder for manifests and values.")],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="The airtrust.yaml to use (default airtrust.yaml; with --controller or "
            "--inject only when given).",
        ),
    ] = None,
    kubeconfig: KubeconfigOpt = None,
    controller: Annotated[
        bool, typer.Option("--controller", help="Render the in-cluster sync controller instead.")
    ] = False,
    image: Annotated[
        str | None,
        typer.Option(
            "--image",
            help="The airtrust image: required with --controller and with --inject --service.",
        ),
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(
            "--source",
            help="KIND/NS/NAME[:KEY] of the CA: with --controller (default "
            f"{CONTROLLER_SOURCE}) and with --inject --service (default the CA secret "
            "airtrust apply keeps in NS with inject_namespace: NS, through rotations).",
        ),
    ] = None,
    selector: Annotated[
        str | None, typer.Option("--selector", help="With --controller: namespace selector.")
    ] = None,
    namespace: Annotated[
        list[str] | None, typer.Option("--namespace", help="With --controller: target namespace.")
    ] = None,
    controller_namespace: Annotated[
        str, typer.Option("--controller-namespace", help="Where the controller runs.")
    ] = "airtrust-system",
    controller_context: Annotated[
        str | None,
        typer.Option(
            "--context",
            help="With --controller: the config's context the controller runs in "
            "(its roles decide the targets); with --node-trust: whose registries and "
            "node_trust to use (default every cluster's registries).",
        ),
    ] = None,
    offline: Annotated[
        bool, typer.Option("--offline", help="Do not read the clusters (openshift=auto means no).")
    ] = False,
    with_namespaces: Annotated[
        bool,
        typer.Option(
            "--with-namespaces",
            help="Also write the platform's namespaces (marked never to be pruned by GitOps).",
        ),
    ] = False,
    inject: Annotated[
        bool,
        typer.Option("--inject", help="Render the admission webhook (inject serve) instead."),
    ] = False,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="With --inject: https://HOST:PORT of inject serve as the apiserver reaches "
            "it (the path is /mutate; no other is accepted).",
        ),
    ] = None,
    service: Annotated[
        str | None,
        typer.Option(
            "--service",
            help="With --inject: NS/airtrust-inject, the Service render writes (needs --image).",
        ),
    ] = None,
    failure_policy: Annotated[
        FailurePolicy, typer.Option("--failure-policy", help="With --inject.")
    ] = FailurePolicy.IGNORE,
    timeout_seconds: Annotated[
        int, typer.Option("--timeout-seconds", min=1, max=30, help="With --inject.")
    ] = 5,
    ca: Annotated[
        list[str] | None,
        typer.Option(
            "--ca",
            help="The local CA: with --inject the webhook's caBundle; with --controller or "
            "--inject --service --source also rendered as the --source object.",
        ),
    ] = None,
    node_trust: Annotated[
        bool,
        typer.Option(
            "--node-trust",
            help="Render the node agent (node sync as a DaemonSet) instead: needs --image, "
            "--source and --registry (or registries: in airtrust.yaml).",
        ),
    ] = False,
    registry: Annotated[
        list[str] | None,
        typer.Option("--registry", help="With --node-trust: HOST[:PORT] the nodes pull from."),
    ] = None,
    runtime: Annotated[
        RuntimeChoice | None,
        typer.Option(
            "--runtime",
            help="With --node-trust: the nodes' runtime (default node_trust.runtime in "
            "airtrust.yaml, else containerd).",
        ),
    ] = None,
    certs_dir: Annotated[
        str | None,
        typer.Option(
            "--certs-dir",
            help="With --node-trust: the runtime's per-registry folder on the nodes (the "
            "one hostPath; default the runtime's own, e.g. /etc/containerd/certs.d).",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing folder.")] = False,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Write everything apply would send, as manifests with a kustomization.yaml."""
    from airtrust.usecases.render import render

    if node_trust:
        _render_node_trust(
            out,
            image=image,
            source=source,
            registries=list(registry or []),
            runtime=runtime,
            certs_dir=certs_dir,
            ca=list(ca or []),
            config=config,
            context=controller_context,
            force=force,
            output=output,
        )
        return
    if inject:
        _render_inject(
            out,
            image=image,
            url=url,
            service=service,
            source=source,
            selector=selector,
            failure_policy=failure_policy,
            timeout_seconds=timeout_seconds,
            ca=list(ca or []),
            config=config,
            force=force,
            output=output,
        )
        return
    if controller:
        _render_controller(
            out,
            image,
            source or CONTROLLER_SOURCE,
            selector,
            tuple(namespace or ()),
            controller_namespace,
            force,
            output,
            config,
            controller_context,
            list(ca or []),
        )
        return

    with open_config(config or Path("airtrust.yaml"), kubeconfig, connect=not offline) as session:
        rendered = render(
            session, out, force=force, offline=offline, with_namespaces=with_namespaces
        )
    for finding in rendered.findings:
        warn(finding)
    files = rendered.files
    emit(
        {
            "out": str(out),
            "files": [str(f) for f in files],
            "findings": rendered.findings,
        },
        output,
        table=lambda c: c.print(f"wrote {len(files)} files under {out}", markup=False),
    )


def _render_inject(
    out: Path,
    *,
    image: str | None,
    url: str | None,
    service: str | None,
    source: str | None,
    selector: str | None,
    failure_policy: FailurePolicy,
    timeout_seconds: int,
    ca: list[str],
    config: Path | None,
    force: bool,
    output: Format,
) -> None:
    from airtrust.cli.inject import namespace_selector
    from airtrust.cli.params import local_ca_files, read_bundle
    from airtrust.profiles import load_profile
    from airtrust.usecases.render import inject_objects, inject_service

    if (url is None) == (service is None):
        raise InputError(
            "--inject needs exactly one of --url URL or --service NS/NAME --image IMAGE",
            hint="e.g. --service airtrust-system/airtrust-inject --image reg.local/airtrust:0.1",
        )
    server = None
    if service is not None:
        server = inject_service(service, image=image, source=source, profile=load_profile())
    bundle = read_bundle(local_ca_files(ca, config, what="--inject (the webhook's caBundle)"))
    rendered = inject_objects(
        ca_pem=bundle.to_pem(),
        namespace_selector=namespace_selector(selector, False),
        failure_policy=failure_policy,
        timeout_seconds=timeout_seconds,
        url=url,
        service=None if server is None else (server.namespace, server.name),
        image=image,
        source=None if server is None else server.source,
        source_kept_by_apply=server is not None and server.kept_by_apply,
    )
    _write_in_cluster(out, rendered, force=force, output=output)


def _write_in_cluster(out: Path, rendered: Any, *, force: bool, output: Format) -> None:
    """The folder, then the summary and what the folder needs that it does not hold."""
    from airtrust.usecases.render import write_in_cluster

    files = write_in_cluster(out, rendered, force=force)
    for need in rendered.requires:
        warn(f"needs {need}")

    def table(console: Any) -> None:
        console.print(f"wrote {len(files)} files under {out}", markup=False)

    emit(
        {"out": str(out), "files": [str(f) for f in files], "requires": rendered.requires},
        output,
        table=table,
    )


def _render_node_trust(
    out: Path,
    *,
    image: str | None,
    source: str | None,
    registries: list[str],
    runtime: RuntimeChoice | None,
    certs_dir: str | None,
    ca: list[str],
    config: Path | None,
    context: str | None,
    force: bool,
    output: Format,
) -> None:
    """Flags first, then airtrust.yaml (``registries:``, ``node_trust:``) when given;
    everything is checked before a file is written."""
    from airtrust.cli.params import read_bundle
    from airtrust.plan.node_trust import Runtime, parse_registry
    from airtrust.plan.source import Source
    from airtrust.profiles import load_profile
    from airtrust.usecases.render import node_agent_render

    if not image:
        raise InputError(
            "--node-trust needs --image (the DaemonSet runs airtrust node sync)",
            hint="e.g. --image reg.local/airtrust:0.1",
        )
    if runtime is RuntimeChoice.AUTO:
        raise InputError(
            "--node-trust needs the nodes' runtime, not auto (the agent's pod mounts only "
            "that runtime's folder, so it cannot look)",
            hint="--runtime containerd|crio|docker|k3s|rke2",
        )
    chosen = Runtime(runtime.value) if runtime is not None else None
    files = list(ca)
    if config is not None:
        from airtrust.config import load_config

        loaded = load_config(config)
        settings = loaded.node_trust_for(context)
        registries = registries or [str(r) for r in settings.registries]
        chosen = chosen or settings.runtime
        certs_dir = certs_dir or settings.certs_dir
        source = source or settings.source
        files = files or [str(p) for p in loaded.ca.bundle]
    if not source:
        raise InputError(
            "--node-trust needs --source (the CA secret the agent follows)",
            hint="e.g. --source secret/airtrust-system/local-ca (or node_trust.source)",
        )
    if not registries:
        raise InputError(
            "--node-trust needs --registry HOST[:PORT] (or registries: in airtrust.yaml)",
            hint="name each registry the nodes pull from, e.g. --registry reg.local:5000",
        )
    parsed = Source.parse(source, load_profile().ca_secret.key)
    rendered = node_agent_render(
        image=image,
        source=parsed,
        registries=[parse_registry(r) for r in registries],
        runtime=chosen or Runtime.CONTAINERD,
        certs_dir=certs_dir,
        ca_pem=read_bundle(files).to_pem() if files else None,
    )
    _write_in_cluster(out, rendered, force=force, output=output)


def _render_controller(
    out: Path,
    image: str | None,
    source: str,
    selector: str | None,
    namespaces: tuple[str, ...],
    controller_namespace: str,
    force: bool,
    output: Format,
    config: Path | None,
    context: str | None,
    ca: list[str],
) -> None:
    from airtrust.cli.params import read_bundle
    from airtrust.config import load_config
    from airtrust.plan.source import Source
    from airtrust.plan.topology import SyncScope
    from airtrust.profiles import load_profile
    from airtrust.usecases.render import controller_objects

    if not image:
        raise InputError("--controller needs --image", hint="e.g. --image reg.local/airtrust:0.1")
    profile = load_profile()
    parsed = Source.parse(source, profile.ca_secret.key)
    if config is None:
        scope = SyncScope(version=profile.default_version)
        files = list(ca)
    else:
        # An explicit -c that does not exist is an error, as in plan: never a narrowed scope.
        loaded = load_config(config)
        scope = SyncScope.from_config(loaded, profile, context)
        files = list(ca) or [str(p) for p in loaded.ca.bundle]
    scope = scope.with_options(namespaces=namespaces, selector=selector)
    rendered = controller_objects(
        image=image,
        namespace=controller_namespace,
        source=parsed,
        scope=scope,
        ca_pem=read_bundle(files).to_pem() if files else None,
    )
    _write_in_cluster(out, rendered, force=force, output=output)


def register(app: typer.Typer) -> None:
    app.command("render")(render_cmd)
