"""Helm: which releases need the custom-CA values, the commands, and running them.

Deployed state comes from the release Secrets (no helm binary needed);
``--run`` shells out to helm because installing charts is helm's job.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from airtrust.controller.reconcile import Session, _roles
from airtrust.errors import InputError
from airtrust.files import OutputSet
from airtrust.kube.helm import deployed_release, is_true, lookup, nested_values


@dataclass(frozen=True)
class HelmStep:
    context: str
    role: str
    release: str
    namespace: str
    chart: str
    values: dict[str, str]
    installed: str | None  # "chart-version (revision N)" when deployed
    enabled: bool  # every value already in effect
    kubeconfig: str | None

    def command(self, chart_ref: str | None = None) -> str:
        parts = [
            "helm",
            "upgrade",
            "--install",
            self.release,
            chart_ref or self.chart,
            "--namespace",
            self.namespace,
            "--create-namespace",
            "--kube-context",
            self.context,
        ]
        if self.kubeconfig:
            parts += ["--kubeconfig", self.kubeconfig]
        parts.append("--reuse-values")
        for key, value in sorted(self.values.items()):
            parts += ["--set", f"{key}={value}"]
        return shlex.join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "command": self.command()}


def _in_effect(values: Mapping[str, Any], wanted: Mapping[str, str]) -> bool:
    for key, want in wanted.items():
        have = lookup(values, key)
        if want in ("true", "false"):
            if is_true(have) != (want == "true"):
                return False
        elif str(have) != want:
            return False
    return True


def helm_steps(session: Session, *, kubeconfig: Path | None = None) -> list[HelmStep]:
    config, profile = session.config, session.profile
    sidecar_values = config.images.strategy == "helm-values"
    path = kubeconfig or config.kubeconfig
    steps = []
    for context, roles in sorted(_roles(config).items()):
        for role in sorted(roles):
            release = profile.release(role)
            if release is None:
                continue
            values = profile.helm_values(role, session.version, sidecar_values=sidecar_values)
            deployed = deployed_release(session.apis[context], release.release, release.namespace)
            steps.append(
                HelmStep(
                    context=context,
                    role=role,
                    release=release.release,
                    namespace=release.namespace,
                    chart=release.chart,
                    values=values,
                    installed=(
                        f"{deployed.chart}-{deployed.chart_version} (revision "
                        f"{deployed.revision}, {deployed.status})"
                    )
                    if deployed
                    else None,
                    enabled=deployed is not None and _in_effect(deployed.values, values),
                    kubeconfig=str(path) if path else None,
                )
            )
    return steps


def write_fragments(steps: list[HelmStep], out: Path) -> list[Path]:
    outputs = OutputSet(force=True)
    for step in steps:
        body = yaml.safe_dump(nested_values(step.values), sort_keys=True)
        header = f"# {step.release} ({step.role}) on context {step.context}: written by airtrust\n"
        outputs.add(out / step.context / f"{step.release}.values.yaml", (header + body).encode())
    return outputs.commit()


def run_step(step: HelmStep, charts: Mapping[str, Path]) -> dict[str, Any]:
    archive = charts.get(step.chart)
    if archive is None:
        raise InputError(
            f"no chart archive given for {step.chart}",
            hint=f"pass --chart {step.chart}=PATH/TO/{step.chart}-VERSION.tgz",
        )
    if not archive.exists():
        raise InputError(f"{archive} does not exist", hint="point --chart at the chart archive")
    helm = shutil.which("helm")
    if helm is None:
        raise InputError("helm is not on PATH", hint="install helm, or run the printed commands")
    command = shlex.split(step.command(str(archive)))
    command[0] = helm
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise InputError(
            f"helm failed for {step.release} on context '{step.context}': {last}",
            hint="fix the chart or values and rerun",
            reference="helm-failed",
        )
    return {"context": step.context, "release": step.release, "ok": True}
