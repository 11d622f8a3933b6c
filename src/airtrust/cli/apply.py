"""``init``, ``plan`` and ``apply``: the config, what would change, and the change."""

import enum
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from airtrust.cli.output import Format, emit, info, rows_table, settings, warn
from airtrust.cli.params import ConfigOpt, KubeconfigOpt, OutputOpt, open_config
from airtrust.errors import EXIT_CHANGES_PENDING, CheckFailed

__all__ = [
    "DryRun",
    "apply_cmd",
    "init_cmd",
    "plan_cmd",
    "plan_table",
    "register",
    "run_apply",
    "show_report",
]

if TYPE_CHECKING:
    from airtrust.plan.model import Plan, SavedPlan
    from airtrust.usecases.apply import ApplyReport
    from airtrust.usecases.session import Session


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
    from airtrust.files import OutputSet
    from airtrust.plan.model import SavedPlan
    from airtrust.usecases.apply import make_plan

    with open_config(config, kubeconfig) as session:
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
    from airtrust.usecases import apply

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
    with open_config(config, kubeconfig) as session:
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


def register(app: typer.Typer) -> None:
    app.command("init")(init_cmd)
    app.command("plan")(plan_cmd)
    app.command("apply")(apply_cmd)
