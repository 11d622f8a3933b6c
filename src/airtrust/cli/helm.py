"""``helm``: whether each release has the custom CA, and the commands that enable it."""

from pathlib import Path
from typing import Annotated, Any

import typer

from airtrust.cli.output import Format, emit, rows_table
from airtrust.cli.params import ConfigOpt, KubeconfigOpt, OutputOpt, open_config
from airtrust.errors import InputError

__all__ = ["helm_cmd", "register"]


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
    from airtrust.usecases.helm import helm_releases

    charts = dict(_split_chart(c) for c in chart or ())
    with open_config(config, kubeconfig) as session:
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


def register(app: typer.Typer) -> None:
    app.command("helm")(helm_cmd)
