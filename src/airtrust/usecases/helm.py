"""``airtrust helm``: observe the releases, the commands that enable the custom CA,
values fragments, and ``--run``, in one place.

Deployed state comes from the release Secrets (no helm binary needed);
``--run`` shells out to helm because installing charts is helm's job, then
observes again and compares the releases by value *name* (values may be
secrets; they are never shown).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from airtrust.errors import InputError
from airtrust.files import OutputSet
from airtrust.kube.helm import deployed_release
from airtrust.plan.helm import HelmStep, Release, helm_steps, nested_values
from airtrust.plan.topology import roles_by_context
from airtrust.usecases.session import Session

__all__ = [
    "HelmReport",
    "HelmRun",
    "ValueChanges",
    "changes",
    "chart_version",
    "helm_releases",
    "observe_helm",
    "run_step",
    "write_fragments",
]


@dataclass(frozen=True)
class ValueChanges:
    """What an upgrade changed, by value name only."""

    revision: str
    chart_version: str
    values_added: tuple[str, ...]
    values_lost: tuple[str, ...]
    values_kept: int


@dataclass(frozen=True)
class HelmRun:
    """One release's ``--run``: carried out (``path`` says how), or skipped and why."""

    context: str
    release: str
    ok: bool
    skipped: str = ""
    chart_version: str = ""
    path: str = ""
    changed: ValueChanges | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k != "changed"}
        if self.changed is not None:
            data.update(asdict(self.changed))  # the chart versions as observed after
        return data


@dataclass(frozen=True)
class HelmReport:
    steps: tuple[HelmStep, ...]
    files: tuple[Path, ...] = ()
    ran: tuple[HelmRun, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "releases": [s.to_dict() for s in self.steps],
            "files": [str(f) for f in self.files],
            "ran": [r.to_dict() for r in self.ran],
        }


def observe_helm(session: Session, *, kubeconfig: str | None = None) -> list[HelmStep]:
    """The profile's Helm releases on every context, as installed, with the step each needs."""
    deployed: dict[tuple[str, str], Release | None] = {}
    for context, roles in roles_by_context(session.config).items():
        for role in roles:
            release = session.profile.release(role)
            if release is not None:
                deployed[(context, release.release)] = deployed_release(
                    session.apis[context], release.release, release.namespace
                )
    path = kubeconfig or (str(session.config.kubeconfig) if session.config.kubeconfig else None)
    return helm_steps(session.config, session.profile, session.version, deployed, kubeconfig=path)


def helm_releases(
    session: Session,
    *,
    kubeconfig: str | None = None,
    out: Path | None = None,
    run: bool = False,
    charts: Mapping[str, Path] | None = None,
) -> HelmReport:
    """Observe; write the values fragments (``out``); with ``run``, carry out each step,
    observe again and compare each release before and after."""
    steps = observe_helm(session, kubeconfig=kubeconfig)
    files = tuple(write_fragments(steps, out)) if out is not None else ()
    if not run:
        return HelmReport(tuple(steps), files)
    before = {(s.context, s.release): s for s in steps}
    results = [run_step(step, charts or {}) for step in steps]
    steps = observe_helm(session, kubeconfig=kubeconfig)
    after = {(s.context, s.release): s for s in steps}
    ran = tuple(
        HelmRun(
            r.context,
            r.release,
            r.ok,
            r.skipped,
            r.chart_version,
            r.path,
            changes(before[(r.context, r.release)], after[(r.context, r.release)]),
        )
        if r.ok
        else r
        for r in results
    )
    return HelmReport(tuple(steps), files, ran)


def write_fragments(steps: list[HelmStep], out: Path) -> list[Path]:
    outputs = OutputSet(force=True)
    for step in steps:
        body = yaml.safe_dump(nested_values(step.values), sort_keys=True)
        header = f"# {step.release} ({step.role}) on context {step.context}: written by airtrust\n"
        outputs.add(out / step.context / f"{step.release}.values.yaml", (header + body).encode())
    return outputs.commit()


def chart_version(archive: Path) -> str:
    """The version in a chart archive's Chart.yaml (``CHART/Chart.yaml`` in the .tgz)."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            member = next(
                m
                for m in tar.getmembers()
                if m.name.count("/") == 1 and m.name.endswith("/Chart.yaml")
            )
            handle = tar.extractfile(member)
            meta = yaml.safe_load(handle.read() if handle else b"") or {}
        return str(meta["version"])
    except (OSError, tarfile.TarError, StopIteration, KeyError, TypeError, yaml.YAMLError):
        raise InputError(
            f"{archive} is not a Helm chart archive (no CHART/Chart.yaml with a version)",
            hint="give the .tgz that helm package or helm pull wrote",
        ) from None


def _flat_keys(values: Mapping[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            keys |= _flat_keys(value, path + ".")
        else:
            keys.add(path)
    return keys


def run_step(step: HelmStep, charts: Mapping[str, Path]) -> HelmRun:
    """Carry out one step with helm; raise with helm's last line when it fails. A release
    that is not installed is skipped: installing needs values only the user has."""
    if step.installed is None:
        return HelmRun(step.context, step.release, False, skipped=step.note or "not installed")
    name = step.chart.rsplit("/", 1)[-1]
    archive = charts.get(name) or charts.get(step.chart)
    if archive is None:
        raise InputError(
            f"no chart archive given for {step.chart} (release {step.release}, context "
            f"'{step.context}')",
            hint=f"pass --chart {name}=PATH/TO/{name}-VERSION.tgz",
        )
    if not archive.exists():
        raise InputError(f"{archive} does not exist", hint="point --chart at the chart archive")
    helm = shutil.which("helm")
    if helm is None:
        raise InputError("helm is not on PATH", hint="install helm, or run the printed commands")
    version = chart_version(archive)
    with tempfile.TemporaryDirectory(prefix="airtrust-helm-") as tmp:
        saved = str(Path(tmp) / f"{step.release}.values.yaml")
        for command in step.commands(str(archive), version, saved=saved):
            argv = [helm, *command.argv[1:]]
            out = None
            if command.stdout_to:
                # The saved values may hold secrets (client secrets): 0600, removed after.
                out = os.open(command.stdout_to, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                proc = subprocess.run(
                    argv,
                    stdout=out if out is not None else subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    check=False,
                )
            finally:
                if out is not None:
                    os.close(out)
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                raise InputError(
                    f"helm failed for {step.release} on context '{step.context}': {last}",
                    hint="fix the chart or values and rerun",
                    reference="helm-failed",
                )
    return HelmRun(
        step.context,
        step.release,
        True,
        chart_version=f"{step.chart_version} -> {version}",
        path="reuse-values" if version == step.chart_version else "saved values (-f)",
    )


def changes(before: HelmStep, after: HelmStep) -> ValueChanges:
    """What an upgrade changed, by value name only (values may be secrets)."""
    old = before.live.user_values if before.live else {}
    new = after.live.user_values if after.live else {}
    old_keys, new_keys = _flat_keys(old), _flat_keys(new)
    return ValueChanges(
        revision=f"{before.live.revision if before.live else '-'} -> "
        f"{after.live.revision if after.live else '-'}",
        chart_version=f"{before.chart_version} -> {after.chart_version}",
        values_added=tuple(sorted(new_keys - old_keys)),
        values_lost=tuple(sorted(old_keys - new_keys)),
        values_kept=len(old_keys & new_keys),
    )
