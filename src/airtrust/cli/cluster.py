"""Cluster commands: init, plan, apply, render, helm (registered on the main app)."""

import datetime as dt
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from airtrust.cli.output import Format, emit, info, print_lines, rows_table, settings, warn
from airtrust.cli.params import OutputOpt
from airtrust.clock import utc_now
from airtrust.errors import EXIT_CHANGES_PENDING, EXIT_CHECK_FAILED, CheckFailed, InputError

__all__ = [
    "ConfigOpt",
    "KubeconfigOpt",
    "apply_cmd",
    "doctor_cmd",
    "helm_cmd",
    "init_cmd",
    "plan_cmd",
    "plan_data",
    "quickstart_cluster",
    "register",
    "render_cmd",
    "render_config_text",
    "report_data",
    "rotate_app",
    "rotate_finish_cmd",
    "rotate_start_cmd",
    "rotate_status_cmd",
    "run_apply",
    "show_report",
    "sync_cmd",
]

if TYPE_CHECKING:
    from airtrust.controller.apply import ApplyReport
    from airtrust.controller.session import Session
    from airtrust.plan.model import JsonObj, Plan
    from airtrust.plan.topology import SyncScope
    from airtrust.profiles import Profile

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="The airtrust.yaml to use.")]
KubeconfigOpt = Annotated[
    Path | None,
    typer.Option("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)."),
]


def _now() -> dt.datetime:
    return utc_now()


def _session(config_path: Path, kubeconfig: Path | None, *, connect: bool = True) -> "Session":
    from airtrust.config import load_config
    from airtrust.controller.session import open_session

    # A rotation recorded in the cluster decides the bundle and the TLS certificate.
    return open_session(
        load_config(config_path), now=_now(), kubeconfig=kubeconfig, connect=connect
    )


def plan_data(plan: "Plan") -> dict[str, Any]:
    return {
        "changes": [
            {
                "context": c.context,
                "kind": c.desired.kind,
                "namespace": c.desired.namespace,
                "name": c.desired.name,
                "purpose": c.desired.purpose,
                "action": str(c.action),
                "reasons": list(c.reasons),
                "foreign_managers": list(c.foreign_managers),
            }
            for c in plan.changes
        ],
        "pending": len(plan.pending),
        "warnings": list(plan.warnings),
    }


def _plan_table(plan: "Plan") -> Any:
    def draw(console: Any) -> None:
        contexts = sorted({c.context for c in plan.changes})
        for context in contexts:
            rows = []
            for c in plan.for_context(context):
                note = "; ".join(c.reasons)
                if c.foreign_managers:
                    note += f" [owned by {', '.join(c.foreign_managers)}: needs --force-conflicts]"
                rows.append((str(c.action), c.desired.ref, c.desired.purpose, note))
            console.print(
                rows_table(f"context {context}", ["action", "object", "for", "why"], rows)
            )
        for w in plan.warnings:
            console.print(f"warning: {w}", markup=False, soft_wrap=True)
        console.print(
            f"{len(plan.pending)} change(s) pending"
            if plan.has_changes
            else "No changes: the clusters match the configuration."
        )

    return draw


def init_cmd(
    domain: Annotated[str, typer.Option("--domain", help="Control-plane FQDN.")],
    context: Annotated[str, typer.Option("--context", help="Control-plane kube context.")],
    out: Annotated[Path, typer.Option("--out", help="File to write.")] = Path("airtrust.yaml"),
    cluster_context: Annotated[
        list[str] | None, typer.Option("--cluster-context", help="GPU cluster context (repeat).")
    ] = None,
    bundle: Annotated[str, typer.Option("--bundle", help="CA bundle file.")] = "ca-bundle.pem",
    cert: Annotated[str, typer.Option("--cert", help="Control-plane tls.crt.")] = "tls.crt",
    key: Annotated[str, typer.Option("--key", help="Control-plane tls.key.")] = "tls.key",
    version: Annotated[str | None, typer.Option("--version", help="Run:ai version.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite.")] = False,
) -> None:
    """Write a commented airtrust.yaml."""
    from airtrust.files import OutputSet

    text = render_config_text(
        domain=domain,
        context=context,
        clusters=cluster_context or [context],
        bundle=bundle,
        cert=cert,
        key=key,
        version=version,
    )
    outputs = OutputSet(force=force)
    outputs.add(out, text.encode())
    outputs.commit()
    info(f"wrote {out}; next: airtrust plan -c {out}")


def render_config_text(
    *,
    domain: str,
    context: str,
    clusters: list[str],
    bundle: str,
    cert: str,
    key: str,
    version: str | None,
    kubeconfig: str | None = None,
) -> str:
    """The commented config, validated by parsing it back before anyone sees it."""
    from airtrust.config import TEMPLATE, parse_config
    from airtrust.pki.names import normalise_dns_name
    from airtrust.profiles import load_profile

    profile = load_profile()

    def quote(value: str) -> str:
        return shlex.quote(value) if value != shlex.quote(value) else value

    text = TEMPLATE.format(
        version=version or profile.default_version,
        domain=normalise_dns_name(domain),
        bundle=quote(bundle),
        cert=quote(cert),
        key=quote(key),
        context=quote(context),
        clusters="\n".join(f"  - context: {quote(c)}" for c in clusters),
        kubeconfig_line=f"kubeconfig: {quote(kubeconfig)}"
        if kubeconfig
        else "# kubeconfig: ~/.kube/config",
        ca_secret=profile.ca_secret.name,
        ca_key=profile.ca_secret.key,
        tls_secret=profile.tls_secret.name,
    )
    parse_config(text, source="generated config", base=Path.cwd())
    return text


def plan_cmd(
    config: ConfigOpt = Path("airtrust.yaml"),
    kubeconfig: KubeconfigOpt = None,
    exit_code: Annotated[
        bool, typer.Option("--exit-code", help="Exit 4 when changes are pending.")
    ] = False,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Show what apply would change on every context (never shows key material)."""
    from airtrust.controller.apply import make_plan

    session = _session(config, kubeconfig)
    try:
        plan = make_plan(session)
    finally:
        session.close()
    emit(plan_data(plan), output, table=_plan_table(plan))
    if exit_code and plan.has_changes:
        raise typer.Exit(EXIT_CHANGES_PENDING)


def _progress_bar() -> Any:
    """A rich progress bar on stderr, or None when quiet or not a terminal."""
    if settings.quiet or not sys.stderr.isatty():
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=Console(stderr=True),
        transient=True,
    )


def run_apply(session: "Session", *, force: bool, dry_run: bool) -> tuple["Plan", "ApplyReport"]:
    from airtrust.controller import apply

    bar = _progress_bar()
    if bar is None:
        return apply.run(session, force=force, dry_run=dry_run)
    with bar:
        task = bar.add_task("applying", total=None)
        return apply.run(
            session,
            force=force,
            dry_run=dry_run,
            on_plan=lambda plan: bar.update(task, total=len(plan.changes)),
            progress=lambda _msg: bar.advance(task),
        )


def report_data(report: "ApplyReport") -> dict[str, Any]:
    return {
        "dry_run": report.dry_run,
        "writes": report.writes,
        "results": [
            {
                "context": o.change.context,
                "object": o.change.desired.ref,
                "action": str(o.change.action),
                "status": o.status,
                "message": o.message,
                "backup": o.backup,
            }
            for o in report.outcomes
        ],
    }


def apply_cmd(
    config: ConfigOpt = Path("airtrust.yaml"),
    kubeconfig: KubeconfigOpt = None,
    force_conflicts: Annotated[
        bool, typer.Option("--force-conflicts", help="Take over fields other managers own.")
    ] = False,
    dry_run: Annotated[
        str, typer.Option("--dry-run", help="'server': let the apiserver check without storing.")
    ] = "none",
    output: OutputOpt = Format.TABLE,
) -> None:
    """Make the clusters match the config: namespaces, secrets, cluster configuration."""
    if dry_run not in ("none", "server"):
        raise InputError(f"--dry-run={dry_run} is not supported", hint="use --dry-run=server")
    session = _session(config, kubeconfig)
    try:
        plan, report = run_apply(session, force=force_conflicts, dry_run=dry_run == "server")
    finally:
        session.close()
    show_report(report, output, plan.warnings)


def show_report(report: "ApplyReport", output: Format, findings: tuple[str, ...] = ()) -> None:
    """The outcome of apply; the plan's findings (things only the user can fix) too."""
    for finding in findings:
        warn(finding)
    data = {**report_data(report), "warnings": list(findings)}

    def table(console: Any) -> None:
        rows = [
            (r["status"], r["context"], r["object"], r["message"] or r["backup"] or "")
            for r in data["results"]
            if r["status"] != "unchanged"
        ]
        if rows:
            console.print(
                rows_table(
                    "apply" + (" (server dry run)" if report.dry_run else ""),
                    ["status", "context", "object", "note"],
                    rows,
                )
            )
        console.print(f"{report.writes} write(s); {len(report.failed)} failure(s)")

    emit(data, output, table=table)
    for o in report.outcomes:
        if o.backup:
            warn(f"backed up the old data of {o.change.desired.ref} to {o.backup}")
    if report.failed:
        first = report.failed[0]
        raise CheckFailed(
            f"{len(report.failed)} object(s) not applied; first: {first.message}",
            hint="fix the cause and rerun apply (it converges)",
            reference="apply-incomplete",
        )


def render_cmd(
    out: Annotated[Path, typer.Option("--out", help="Folder for manifests and values.")],
    config: ConfigOpt = Path("airtrust.yaml"),
    kubeconfig: KubeconfigOpt = None,
    controller: Annotated[
        bool, typer.Option("--controller", help="Render the in-cluster sync controller instead.")
    ] = False,
    image: Annotated[
        str | None, typer.Option("--image", help="With --controller: the airtrust image.")
    ] = None,
    source: Annotated[
        str, typer.Option("--source", help="With --controller: KIND/NS/NAME[:KEY] of the CA.")
    ] = "secret/airtrust-system/local-ca",
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
            "(its roles decide the targets).",
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
        str | None, typer.Option("--url", help="With --inject: the webhook's URL (apiserver-side).")
    ] = None,
    service: Annotated[
        str | None, typer.Option("--service", help="With --inject: NS/NAME of its Service.")
    ] = None,
    failure_policy: Annotated[
        str, typer.Option("--failure-policy", help="With --inject: Ignore or Fail.")
    ] = "Ignore",
    timeout_seconds: Annotated[
        int, typer.Option("--timeout-seconds", min=1, max=30, help="With --inject.")
    ] = 5,
    ca: Annotated[
        list[str] | None,
        typer.Option("--ca", help="With --inject: the local CA (the webhook's caBundle)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing folder.")] = False,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Write everything apply would send, as manifests with a kustomization.yaml."""
    from airtrust.controller.render import render

    if inject:
        _render_inject(
            out,
            image=image,
            url=url,
            service=service,
            source=source,
            selector=selector,
            namespace=controller_namespace,
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
            source,
            selector,
            tuple(namespace or ()),
            controller_namespace,
            force,
            output,
            config,
            controller_context,
        )
        return

    session = _session(config, kubeconfig, connect=not offline)
    try:
        rendered = render(
            session, out, force=force, offline=offline, with_namespaces=with_namespaces
        )
    finally:
        session.close()
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
        table=lambda c: c.print(f"wrote {len(files)} files under {out}"),
    )


def _render_inject(
    out: Path,
    *,
    image: str | None,
    url: str | None,
    service: str | None,
    source: str,
    selector: str | None,
    namespace: str,
    failure_policy: str,
    timeout_seconds: int,
    ca: list[str],
    config: Path | None,
    force: bool,
    output: Format,
) -> None:
    from airtrust.cli.inject import namespace_selector
    from airtrust.cli.params import local_ca_files, read_bundle
    from airtrust.plan.manifests import inject_manifests, webhook_configuration
    from airtrust.plan.source import Source
    from airtrust.profiles import load_profile

    if failure_policy not in ("Ignore", "Fail"):
        raise InputError(
            f"--failure-policy {failure_policy} is not Ignore or Fail",
            hint="Ignore admits pods uninjected when the webhook is down; Fail refuses them",
        )
    if (url is None) == (service is None):
        raise InputError(
            "--inject needs exactly one of --url URL or --service NS/NAME",
            hint="e.g. --service airtrust-system/airtrust-inject",
        )
    if url is not None and not url.startswith("https://"):
        raise InputError(
            f"--url {url} is not https://", hint="the apiserver calls webhooks over TLS"
        )
    bundle = read_bundle(local_ca_files(ca, config, what="--inject (the webhook's caBundle)"))
    scope = namespace_selector(selector, False)
    docs = []
    if service is not None:
        ns, _, name = service.partition("/")
        if not ns or not name:
            raise InputError(
                f"--service {service} is not NS/NAME", hint="e.g. airtrust-system/airtrust-inject"
            )
        if not image:
            raise InputError(
                "--service needs --image (the Deployment it renders)",
                hint="e.g. --image reg.local/airtrust:0.1",
            )
        parsed = Source.parse(source, load_profile().ca_secret.key)
        docs += inject_manifests(
            image=image, namespace=ns, source=parsed, namespace_selector=scope,
            configmap="airtrust-ca-bundle",
        )  # fmt: skip
        target: tuple[str, str] | None = (ns, name)
    else:
        target = None
    docs.append(
        webhook_configuration(
            ca_bundle=bundle.to_pem(),
            namespace_selector=scope,
            failure_policy=failure_policy,
            timeout_seconds=timeout_seconds,
            url=url,
            service=target,
        )
    )
    _write_docs(out, docs, force=force, output=output)


def _write_docs(out: Path, docs: "list[JsonObj]", *, force: bool, output: Format) -> None:
    """Numbered manifests and their kustomization.yaml into ``out``, then the summary."""
    from airtrust.controller.render import write_manifests
    from airtrust.files import OutputSet

    outputs = OutputSet(force=force)
    write_manifests(
        outputs, out, [(f"{i:02d}-{doc['kind'].lower()}.yaml", doc) for i, doc in enumerate(docs)]
    )
    files = outputs.commit()
    emit(
        {"out": str(out), "files": [str(f) for f in files]},
        output,
        table=lambda c: c.print(f"wrote {len(files)} files under {out}"),
    )


def _sync_scope(config: Path | None, context: str | None, profile: "Profile") -> "SyncScope":
    """The sync scope from airtrust.yaml when there is one, else the profile's cluster role."""
    from airtrust.config import load_config
    from airtrust.plan.topology import SyncScope

    if config is None or not config.exists():
        return SyncScope(version=profile.default_version)
    return SyncScope.from_config(load_config(config), profile, context)


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
) -> None:
    from airtrust.plan.manifests import controller_manifests
    from airtrust.plan.source import Source
    from airtrust.profiles import load_profile

    if not image:
        raise InputError("--controller needs --image", hint="e.g. --image reg.local/airtrust:0.1")
    profile = load_profile()
    parsed = Source.parse(source, profile.ca_secret.key)
    scope = _sync_scope(config, context, profile).with_options(
        namespaces=namespaces, selector=selector
    )
    docs = controller_manifests(
        image=image, namespace=controller_namespace, source=parsed, scope=scope
    )
    _write_docs(out, docs, force=force, output=output)


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
        list[str] | None,
        typer.Option("--role", help="control-plane and/or cluster (default: cluster)."),
    ] = None,
    platform_version: Annotated[
        str | None, typer.Option("--platform-version", help="Platform version (labels).")
    ] = None,
    openshift: Annotated[str, typer.Option("--openshift", help="auto, true or false.")] = "auto",
) -> None:
    """Run the controller that keeps every CA secret converged (Ctrl-C or SIGTERM stops)."""
    import logging
    import os
    import signal
    import socket

    from airtrust.config import load_config
    from airtrust.controller.sync import LeaderElector, SyncController, serve_metrics
    from airtrust.kube.api import KubeAPI
    from airtrust.plan.source import Source
    from airtrust.profiles import load_profile

    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from airtrust.plan.topology import Role, SyncScope

    profile = load_profile()
    parsed = Source.parse(source, profile.ca_secret.key)
    if openshift not in ("auto", "true", "false"):
        raise InputError(f"--openshift {openshift} is not auto, true or false", hint="pick one")
    unknown = [r for r in role or () if r not in set(Role)]
    if unknown:
        raise InputError(
            f"--role {unknown[0]} is not a role",
            hint=f"use {' or '.join(str(r) for r in Role)}",
        )
    if config is not None:
        loaded = load_config(config)
        context = context or next(iter(loaded.contexts()), "")
        kubeconfig = kubeconfig or loaded.kubeconfig
        scope = SyncScope.from_config(loaded, profile, context)
    else:
        chosen = tuple(Role(r) for r in role or ()) or (Role.CLUSTER,)
        scope = SyncScope(chosen, platform_version or profile.default_version, openshift)
    scope = scope.with_options(namespaces=tuple(namespace or ()), selector=selector)
    api = KubeAPI.in_cluster() if in_cluster else KubeAPI.connect(context, kubeconfig=kubeconfig)
    is_openshift = scope.openshift == "true" or (
        scope.openshift == "auto"
        and profile.openshift is not None
        and profile.openshift.detect_group in api.api_groups()
    )
    controller = SyncController(
        api, profile, parsed, scope.targets(profile, openshift=is_openshift), scope.selector
    )
    if once:
        written = controller.reconcile()
        info(f"{written} object(s) written")
        return
    server = serve_metrics(controller.metrics, metrics_addr)
    elector = None
    if lease_namespace:
        name = identity or f"{socket.gethostname()}-{os.getpid()}"
        elector = LeaderElector(api, lease_namespace, name, lease_duration)

    def stop(*_: object) -> None:
        controller.stop.set()
        controller.dirty.set()  # wake the loop now, not at the next resync

    signal.signal(signal.SIGTERM, stop)
    try:
        controller.run(elector, resync=resync)
    except KeyboardInterrupt:
        stop()
    finally:
        server.shutdown()
        api.close()


def helm_cmd(
    config: ConfigOpt = Path("airtrust.yaml"),
    kubeconfig: KubeconfigOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write values fragments here.")] = None,
    run: Annotated[bool, typer.Option("--run", help="Run the helm commands.")] = False,
    chart: Annotated[
        list[str] | None,
        typer.Option("--chart", help="CHART=ARCHIVE for --run, e.g. control-plane=./cp-2.20.tgz."),
    ] = None,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Helm commands that enable the custom CA, and whether releases have it."""
    from airtrust.controller.apply import observe_helm
    from airtrust.controller.helm import changes, run_step, write_fragments

    session = _session(config, kubeconfig)
    path = str(kubeconfig) if kubeconfig else None
    try:
        steps = observe_helm(session, kubeconfig=path)
        files = write_fragments(steps, out) if out is not None else []
        charts = dict(_split_chart(c) for c in chart or ())
        results = []
        if run:
            before = {(s.context, s.release): s for s in steps}
            for step in steps:
                results.append(run_step(step, charts))
            steps = observe_helm(session, kubeconfig=path)
            for result in results:
                if result["ok"]:
                    key = (result["context"], result["release"])
                    after = next(s for s in steps if (s.context, s.release) == key)
                    result.update(changes(before[key], after))
    finally:
        session.close()
    data = {
        "releases": [s.to_dict() for s in steps],
        "files": [str(f) for f in files],
        "ran": results,
    }

    def table(console: Any) -> None:
        console.print(
            rows_table(
                "helm releases",
                ["context", "release", "installed", "customCA"],
                [
                    (
                        s.context,
                        f"{s.namespace}/{s.release}",
                        s.installed or "no",
                        "yes" if s.enabled else "no",
                    )
                    for s in steps
                ],
            )
        )
        for s in steps:
            console.print(s.command(), markup=False, soft_wrap=True)
            if s.note:
                console.print(f"  # {s.note}", markup=False, soft_wrap=True)
        for r in results:
            if r["ok"]:
                lost = ", ".join(r["values_lost"]) or "none"
                console.print(
                    f"ran {r['release']} on {r['context']}: chart {r['chart_version']} via "
                    f"{r['path']}; values kept {r['values_kept']}, lost {lost}",
                    markup=False,
                    soft_wrap=True,
                )
            else:
                console.print(
                    f"skipped {r['release']}: {r['skipped']}", markup=False, soft_wrap=True
                )

    emit(data, output, table=table)


def _split_chart(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not path:
        raise InputError(
            f"--chart {text} is not CHART=ARCHIVE",
            hint="e.g. --chart runai-cluster=./runai-cluster-2.20.tgz",
        )
    return name, Path(path)


def quickstart_cluster(
    folder: Path,
    *,
    domain: str,
    context: str,
    clusters: list[str],
    kubeconfig: Path | None,
    output: Format,
) -> "ApplyReport":
    """The cluster half of quickstart: write DIR/airtrust.yaml, then plan + apply."""
    from airtrust.files import OutputSet

    path = folder / "airtrust.yaml"
    text = render_config_text(
        domain=domain,
        context=context,
        clusters=clusters or [context],
        bundle="ca-bundle.pem",
        cert="tls.crt",
        key="tls.key",
        version=None,
        kubeconfig=str(kubeconfig.resolve()) if kubeconfig else None,
    )
    if not path.exists() or path.read_text() != text:
        outputs = OutputSet(force=True)
        outputs.add(path, text.encode())
        outputs.commit()
    session = _session(path, kubeconfig)
    try:
        _, report = run_apply(session, force=False, dry_run=False)
    finally:
        session.close()
    return report


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

    from airtrust.controller.doctor import run_doctor
    from airtrust.probe import ConnectTo

    rules = [ConnectTo.parse(c) for c in connect_to or ()]
    while True:
        session = _session(config, kubeconfig)
        try:
            report = run_doctor(session, connect_to=rules, probe=probe)
        finally:
            session.close()
        data = report.to_dict()
        if html is not None:
            from airtrust.files import OutputSet
            from airtrust.report import render_html

            page = OutputSet(force=True)
            page.add(html, render_html(data).encode())
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
    output: OutputOpt = Format.TABLE,
) -> None:
    """Phase 1: distribute old + new CA everywhere, then re-issue TLS under the new CA."""
    from airtrust.controller.rotation import start

    session = _session(config, kubeconfig)
    try:
        state = start(session, new_ca, keep_tls=keep_tls)
    finally:
        session.close()
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
    from airtrust.controller.rotation import finish
    from airtrust.controller.session import read_rotation
    from airtrust.probe import ConnectTo

    session = _session(config, kubeconfig)
    try:
        state = read_rotation(session)
        if state is None:
            raise InputError("no rotation in progress", hint="airtrust rotate start --new-ca DIR")
        state = finish(session, state, connect_to=[ConnectTo.parse(c) for c in connect_to or ()])
    finally:
        session.close()
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
    from airtrust.controller.session import read_rotation

    session = _session(config, kubeconfig)
    try:
        state = read_rotation(session)
    finally:
        session.close()
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
    app.command("sync")(sync_cmd)
    app.command("doctor")(doctor_cmd)
    app.command("init")(init_cmd)
    app.command("plan")(plan_cmd)
    app.command("apply")(apply_cmd)
    app.command("render")(render_cmd)
    app.command("helm")(helm_cmd)
