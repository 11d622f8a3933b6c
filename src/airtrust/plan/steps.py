"""The documented manual steps, as commands an admin can copy line by line (pure).

For people who apply by hand (or want to see what ``apply`` does): the
kubectl and helm commands of the platform's documentation, for the configured
version (labels where it needs them) and with the OpenShift-only steps
marked. Each step is one complete shell command; nothing here wraps or
abbreviates, so a line copied from a terminal, a pipe or a ticket still runs.
"""

from __future__ import annotations

import enum
import shlex
from dataclasses import dataclass
from pathlib import Path

from airtrust.plan.topology import CLUSTER, CONTROL_PLANE
from airtrust.profiles import Profile

__all__ = ["HEADINGS", "Step", "When", "manual_steps", "shell_script"]

#: ``kubectl create`` refuses an object that exists; through apply every step can run
#: again (a second run of the script under ``set -e`` must not stop at the first secret).
_IDEMPOTENT = " --dry-run=client -o yaml | kubectl apply -f -"

#: Detects OpenShift the way airtrust does (an API group only OpenShift serves).
_OPENSHIFT_TEST = "kubectl api-resources --api-group={group} -o name 2>/dev/null | grep -q ."


class When(enum.StrEnum):
    ALWAYS = "always"
    OPENSHIFT = "openshift"
    KUBERNETES = "kubernetes"
    #: needs values only the user has (a Helm install): shown, commented out in scripts
    WITH_VALUES = "with-values"
    #: once the platform is up (a check): shown, commented out in scripts
    LATER = "later"


#: What a printed list says above a run of steps that do not always apply.
HEADINGS = {
    When.OPENSHIFT: "# OpenShift only:",
    When.KUBERNETES: "# Kubernetes only (not OpenShift):",
    When.WITH_VALUES: "# Helm, with your values:",
    When.LATER: "# Once the control plane is up:",
}


@dataclass(frozen=True)
class Step:
    command: str
    when: When = When.ALWAYS
    note: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"command": self.command, "when": str(self.when), "note": self.note}


def _q(value: str | Path) -> str:
    return shlex.quote(str(value))


def manual_steps(
    profile: Profile, version: str, *, bundle: Path, cert: Path, key: Path
) -> list[Step]:
    """Every documented step for a control plane and a cluster of ``version``."""
    ca = profile.ca_secret
    steps: list[Step] = []
    for role in (CONTROL_PLANE, CLUSTER):
        for target in profile.ca_secret.targets:
            if target.role != role:
                continue
            when = When.OPENSHIFT if target.openshift_only else When.ALWAYS
            ns = target.namespace
            if not target.openshift_only:
                steps.append(
                    Step(
                        f"kubectl create namespace {_q(ns)} --dry-run=client -o yaml | "
                        "kubectl apply -f -",
                        when,
                    )
                )
            steps.append(
                Step(
                    f"kubectl -n {_q(ns)} create secret generic {_q(ca.name)} "
                    f"--from-file={_q(f'{ca.key}={bundle}')}{_IDEMPOTENT}",
                    when,
                )
            )
            labels = target.labels_for(version)
            if labels:
                pairs = " ".join(_q(f"{k}={v}") for k, v in sorted(labels.items()))
                steps.append(
                    Step(
                        f"kubectl -n {_q(ns)} label secret {_q(ca.name)} {pairs} --overwrite",
                        when,
                        f"labels {profile.name} {version} needs",
                    )
                )
        if role == CONTROL_PLANE:
            tls = profile.tls_secret
            steps.append(
                Step(
                    f"kubectl -n {_q(tls.namespace)} create secret tls {_q(tls.name)} "
                    f"--cert={_q(cert)} --key={_q(key)}{_IDEMPOTENT}",
                    When.KUBERNETES,
                    "on OpenShift the router's certificate is used instead",
                )
            )
    for release in profile.helm:
        chart = release.reference(release.chart_for(version))
        sets = " ".join(f"--set {_q(f'{k}={v}')}" for k, v in sorted(release.set.items()))
        needed = ", ".join(release.install_values)
        steps.append(
            Step(
                f"helm upgrade --install {_q(release.release)} {_q(chart)} "
                f"--version {_q(f'~{version}.0')} --namespace {_q(release.namespace)} "
                f"--create-namespace {sets} -f {_q(release.release + '.values.yaml')}",
                When.WITH_VALUES,
                f"{release.release}.values.yaml holds your values ({needed}); an existing "
                "release: airtrust helm prints the upgrade that keeps its values",
            )
        )
    return steps


def shell_script(steps: list[Step], profile: Profile) -> str:
    """The steps as a POSIX shell script: OpenShift-only steps run where OpenShift is
    detected, Kubernetes-only ones elsewhere, Helm installs left commented out."""
    group = profile.openshift.detect_group if profile.openshift else ""
    test = _OPENSHIFT_TEST.format(group=group)
    lines = [
        "#!/bin/sh",
        f"# {profile.description}: the documented manual steps (written by airtrust).",
        "set -eu",
    ]
    for step in steps:
        if step.note:
            lines.append(f"# {step.note}")
        if step.when is When.ALWAYS:
            lines.append(step.command)
        elif step.when is When.OPENSHIFT and group:
            lines.append(f"if {test}; then {step.command}; fi")
        elif step.when is When.KUBERNETES and group:
            lines.append(f"if ! {test}; then {step.command}; fi")
        elif step.when is When.KUBERNETES:
            lines.append(step.command)
        else:
            lines.append(f"# {step.command}")
    return "\n".join(lines) + "\n"
