"""Cluster commands: init, plan, apply, render, helm (registered on the main app)."""

import datetime as dt
import enum
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from airtrust.cli.output import (
    Format,
    emit,
    info,
    log_to_stderr,
    print_lines,
    rows_table,
    settings,
    warn,
)
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
    "plan_table",
    "register",
    "render_cmd",
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
    from airtrust.plan.model import Plan, SavedPlan

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


def plan_table(plan: "Plan") -> Any:
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
    from airtrust.config import config_text
    from airtrust.files import OutputSet

    text = config_text(
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


class DryRun(enum.StrEnum):
    NONE = "none"
    SERVER = "server"


def plan_cmd(
    config: ConfigOpt = Path("airtrust.yaml"),
    kubeconfig: KubeconfigOpt = None,
    exit_code: Annotated[
        bool, typer.Option("--exit-code", help="Exit 4 when changes are pending.")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Save the plan here; 'airtrust apply FILE' carries it out only while "
            "the clusters still match it.",
        ),
    ] = None,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Show what apply would change on every context (never shows key material)."""
    from airtrust.controller.apply import make_plan
    from airtrust.files import OutputSet
    from airtrust.plan.model import SavedPlan

    with _session(config, kubeconfig) as session:
        plan = make_plan(session)
    if out is not None:
        saved = OutputSet(force=True)
        saved.add(out, SavedPlan.of(plan, str(config.resolve())).to_json().encode())
        saved.commit()
        info(f"saved the plan to {out}; carry it out with: airtrust apply {out}")
    emit(plan.to_dict(), output, table=plan_table(plan))
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


def run_apply(
    session: "Session", *, force: bool, dry_run: bool, saved: "SavedPlan | None" = None
) -> tuple["Plan", "ApplyReport"]:
    from airtrust.controller import apply

    def run(**progress: Any) -> tuple["Plan", "ApplyReport"]:
        if saved is not None:
            return apply.run_saved(
                session, saved, force=force, dry_run=dry_run, progress=progress.get("progress")
            )
        return apply.run(session, force=force, dry_run=dry_run, **progress)

    bar = _progress_bar()
    if bar is None:
        return run()
    with bar:
        task = bar.add_task("applying", total=None)
        return run(
            on_plan=lambda plan: bar.update(task, total=len(plan.changes)),
            progress=lambda _msg: bar.advance(task),
        )


def apply_cmd(
    plan_file: Annotated[
        Path | None,
        typer.Argument(
            metavar="[PLAN]",
            help="A plan saved by 'airtrust plan --out'; refused if the clusters changed since.",
        ),
    ] = None,
    config: ConfigOpt = Path("airtrust.yaml"),
    kubeconfig: KubeconfigOpt = None,
    force_conflicts: Annotated[
        bool, typer.Option("--force-conflicts", help="Take over fields other managers own.")
    ] = False,
    dry_run: Annotated[
        DryRun,
        typer.Option("--dry-run", help="server: let the apiserver check without storing."),
    ] = DryRun.NONE,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Make the clusters match the config: namespaces, secrets, cluster configuration."""
    saved = None
    if plan_file is not None:
        from airtrust.files import read_input
        from airtrust.plan.model import SavedPlan

        saved = SavedPlan.from_json(
            read_input(str(plan_file)).decode(errors="replace"), source=str(plan_file)
        )
        config = Path(saved.config)
    with _session(config, kubeconfig) as session:
        plan, report = run_apply(
            session, force=force_conflicts, dry_run=dry_run is DryRun.SERVER, saved=saved
        )
    show_report(report, output, plan.warnings)


def show_report(report: "ApplyReport", output: Format, findings: tuple[str, ...] = ()) -> None:
    """The outcome of apply; the plan's findings (things only the user can fix) too."""
    for finding in findings:
        warn(finding)
    data = {**report.to_dict(), "warnings": list(findings)}

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
        console.print(report.summary())

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
        str | None,
        typer.Option(
            "--service",
            help="With --inject: NS/airtrust-inject, the Service render writes (needs --image).",
        ),
    ] = None,
    failure_policy: Annotated[
        str, typer.Option("--failure-policy", help="With --inject: Ignore or Fail.")
    ] = "Ignore",
    timeout_seconds: Annotated[
        int, typer.Option("--timeout-seconds", min=1, max=30, help="With --inject.")
    ] = 5,
    ca: Annotated[
        list[str] | None,
        typer.Option(
            "--ca",
            help="The local CA: with --inject the webhook's caBundle; with --controller or "
            "--inject --service also rendered as the --source object.",
        ),
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
            list(ca or []),
        )
        return

    with _session(config or Path("airtrust.yaml"), kubeconfig, connect=not offline) as session:
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
    failure_policy: str,
    timeout_seconds: int,
    ca: list[str],
    config: Path | None,
    force: bool,
    output: Format,
) -> None:
    from airtrust.cli.inject import namespace_selector
    from airtrust.cli.params import local_ca_files, read_bundle
    from airtrust.controller.render import inject_objects
    from airtrust.plan.inject import INJECT_NAME
    from airtrust.plan.source import Source
    from airtrust.profiles import load_profile

    if failure_policy not in ("Ignore", "Fail"):
        raise InputError(
            f"--failure-policy {failure_policy} is not Ignore or Fail",
            hint="Ignore admits pods uninjected when the webhook is down; Fail refuses them",
        )
    if (url is None) == (service is None):
        raise InputError(
            "--inject needs exactly one of --url URL or --service NS/NAME --image IMAGE",
            hint="e.g. --service airtrust-system/airtrust-inject --image reg.local/airtrust:0.1",
        )
    if url is not None and not url.startswith("https://"):
        raise InputError(
            f"--url {url} is not https://", hint="the apiserver calls webhooks over TLS"
        )
    target: tuple[str, str] | None = None
    parsed = None
    if service is not None:
        ns, _, name = service.partition("/")
        if not ns or not name:
            raise InputError(
                f"--service {service} is not NS/NAME", hint="e.g. airtrust-system/airtrust-inject"
            )
        if name != INJECT_NAME:
            raise InputError(
                f"--service {service}: the Service render writes is named {INJECT_NAME}",
                hint=f"use --service {ns}/{INJECT_NAME}",
            )
        if not image:
            raise InputError(
                "--inject --service needs --image (the webhook's Deployment runs it)",
                hint="e.g. --image reg.local/airtrust:0.1",
            )
        parsed = Source.parse(source, load_profile().ca_secret.key)
        if parsed.namespace != ns:
            raise InputError(
                f"--source {source} is not in {ns}, where the webhook's pods mount it",
                hint=f"e.g. --source secret/{ns}/local-ca",
            )
        target = (ns, name)
    bundle = read_bundle(local_ca_files(ca, config, what="--inject (the webhook's caBundle)"))
    rendered = inject_objects(
        ca_pem=bundle.to_pem(),
        namespace_selector=namespace_selector(selector, False),
        failure_policy=failure_policy,
        timeout_seconds=timeout_seconds,
        url=url,
        service=target,
        image=image,
        source=parsed,
    )
    _write_in_cluster(out, rendered, force=force, output=output)


def _write_in_cluster(out: Path, rendered: Any, *, force: bool, output: Format) -> None:
    """The folder, then the summary and what the folder needs that it does not hold."""
    from airtrust.controller.render import write_in_cluster

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
    from airtrust.controller.render import controller_objects
    from airtrust.plan.source import Source
    from airtrust.plan.topology import SyncScope
    from airtrust.profiles import load_profile

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


class OpenShiftChoice(enum.StrEnum):
    AUTO = "auto"
    TRUE = "true"
    FALSE = "false"


class RoleChoice(enum.StrEnum):
    """plan.topology.Role's values; kept here so a start does not import pydantic."""

    CONTROL_PLANE = "control-plane"
    CLUSTER = "cluster"


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
    from airtrust.controller.sync.start import SyncOptions, run_sync

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
            roles=tuple(str(r) for r in role or ()),
            platform_version=platform_version,
            openshift=str(openshift),
        )
    )
    if once:
        info(f"{written} object(s) written")


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
    from airtrust.controller.helm import helm_releases

    charts = dict(_split_chart(c) for c in chart or ())
    with _session(config, kubeconfig) as session:
        report = helm_releases(
            session,
            kubeconfig=str(kubeconfig) if kubeconfig else None,
            out=out,
            run=run,
            charts=charts,
        )
    steps = report.steps

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
        for r in report.ran:
            if r.ok and r.changed is not None:
                lost = ", ".join(r.changed.values_lost) or "none"
                console.print(
                    f"ran {r.release} on {r.context}: chart {r.changed.chart_version} via "
                    f"{r.path}; values kept {r.changed.values_kept}, lost {lost}",
                    markup=False,
                    soft_wrap=True,
                )
            else:
                console.print(f"skipped {r.release}: {r.skipped}", markup=False, soft_wrap=True)

    emit(report.to_dict(), output, table=table)


def _split_chart(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not path:
        raise InputError(
            f"--chart {text} is not CHART=ARCHIVE",
            hint="e.g. --chart runai-cluster=./runai-cluster-2.20.tgz",
        )
    return name, Path(path)


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

    from airtrust.config import load_config
    from airtrust.controller.doctor import open_for_doctor, run_doctor
    from airtrust.probe import ConnectTo

    rules = [ConnectTo.parse(c) for c in connect_to or ()]
    while True:
        session, unreachable = open_for_doctor(
            load_config(config), now=_now(), kubeconfig=kubeconfig
        )
        with session:
            report = run_doctor(session, connect_to=rules, probe=probe, unreachable=unreachable)
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

    with _session(config, kubeconfig) as session:
        state = start(session, new_ca, keep_tls=keep_tls)
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

    with _session(config, kubeconfig) as session:
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
    from airtrust.controller.session import read_rotation

    with _session(config, kubeconfig) as session:
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
    app.command("sync")(sync_cmd)
    app.command("doctor")(doctor_cmd)
    app.command("init")(init_cmd)
    app.command("plan")(plan_cmd)
    app.command("apply")(apply_cmd)
    app.command("render")(render_cmd)
    app.command("helm")(helm_cmd)
