"""``chart values``: the Helm chart's values file from ``airtrust.yaml`` (flags only;
the work is in usecases.chart)."""

from pathlib import Path
from typing import Annotated, Any

import typer

from airtrust.cli.output import Format, emit
from airtrust.cli.params import KubeconfigOpt, OutputOpt, open_config
from airtrust.plan.model import FailurePolicy

__all__ = ["chart_app", "chart_values_cmd", "register"]

chart_app = typer.Typer(help="The airtrust Helm chart (charts/airtrust).", no_args_is_help=True)


@chart_app.command("values")
def chart_values_cmd(
    out: Annotated[Path, typer.Option("--out", help="The values file to write.")],
    config: Annotated[
        Path, typer.Option("--config", "-c", help="The airtrust.yaml to read.")
    ] = Path("airtrust.yaml"),
    context: Annotated[
        str | None,
        typer.Option("--context", help="The config's context the chart is installed in."),
    ] = None,
    image: Annotated[
        str | None, typer.Option("--image", help="REPOSITORY[:TAG] of the airtrust image.")
    ] = None,
    webhook: Annotated[
        bool, typer.Option("--webhook", help="Enable the injection webhook.")
    ] = False,
    failure_policy: Annotated[
        FailurePolicy, typer.Option("--failure-policy", help="The webhook's failurePolicy.")
    ] = FailurePolicy.IGNORE,
    registry: Annotated[
        list[str] | None,
        typer.Option(
            "--registry", help="HOST[:PORT] every node must trust (enables the node agent)."
        ),
    ] = None,
    runai_projects: Annotated[
        bool,
        typer.Option(
            "--runai-projects",
            help="Scope: Run:ai project namespaces (runai/queue) instead of a selector.",
        ),
    ] = False,
    runtime: Annotated[
        str, typer.Option("--runtime", help="The nodes' runtime, for the node agent.")
    ] = "containerd",
    offline: Annotated[
        bool,
        typer.Option(
            "--offline",
            help="Do not read the clusters: the config's bundle even while a rotation is "
            "recorded there.",
        ),
    ] = False,
    kubeconfig: KubeconfigOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Write the chart's values from the config (the CA, version, roles and scope); while
    a rotation is recorded in the cluster, its old + new CA."""
    from airtrust.usecases.chart import ChartSettings, write_chart_values

    settings = ChartSettings(
        image=image,
        context=context,
        webhook=webhook,
        failure_policy=failure_policy,
        registries=tuple(registry or ()),
        runtime=runtime,
        runai_projects=runai_projects,
    )
    with open_config(config, kubeconfig, connect=not offline) as session:
        written = write_chart_values(session, out, settings, force=force)

    def table(console: Any) -> None:
        console.print(f"wrote {written}", markup=False)

    emit({"out": str(written)}, output, table=table)


def register(app: typer.Typer) -> None:
    app.add_typer(chart_app, name="chart")
