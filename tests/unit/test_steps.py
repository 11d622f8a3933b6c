"""plan/steps.py: the documented manual steps as copyable commands, and as a script."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from airtrust.plan.steps import HEADINGS, Step, When, manual_steps, shell_script
from airtrust.profiles import load_profile

PROFILE = load_profile()
APPLY = " --dry-run=client -o yaml | kubectl apply -f -"
DETECT = "kubectl api-resources --api-group=config.openshift.io -o name 2>/dev/null | grep -q ."


def _steps(version: str, **paths: Path) -> list[Step]:
    files = {"bundle": Path("b.pem"), "cert": Path("c.pem"), "key": Path("k.pem"), **paths}
    return manual_steps(PROFILE, version, **files)


def test_every_step_for_2_20_in_order() -> None:
    steps = _steps("2.20")
    assert [(s.when, s.command) for s in steps] == [
        (When.ALWAYS, f"kubectl create namespace runai-backend{APPLY}"),
        (
            When.ALWAYS,
            "kubectl -n runai-backend create secret generic runai-ca-cert "
            f"--from-file=runai-ca.pem=b.pem{APPLY}",
        ),
        (
            When.KUBERNETES,
            "kubectl -n runai-backend create secret tls runai-backend-tls "
            f"--cert=c.pem --key=k.pem{APPLY}",
        ),
        (When.ALWAYS, f"kubectl create namespace runai{APPLY}"),
        (
            When.ALWAYS,
            f"kubectl -n runai create secret generic runai-ca-cert "
            f"--from-file=runai-ca.pem=b.pem{APPLY}",
        ),
        (
            When.ALWAYS,
            "kubectl -n runai label secret runai-ca-cert run.ai/cluster-wide=true "
            "run.ai/name=runai-ca-cert --overwrite",
        ),
        (
            When.OPENSHIFT,
            "kubectl -n openshift-monitoring create secret generic runai-ca-cert "
            f"--from-file=runai-ca.pem=b.pem{APPLY}",
        ),
        (
            When.WITH_VALUES,
            "helm upgrade --install runai-backend runai-backend/control-plane --version "
            "'~2.20.0' --namespace runai-backend --create-namespace "
            "--set global.customCA.enabled=true -f runai-backend.values.yaml",
        ),
        (
            When.WITH_VALUES,
            "helm upgrade --install runai-cluster runai/runai-cluster --version '~2.20.0' "
            "--namespace runai --create-namespace --set global.customCA.enabled=true "
            "-f runai-cluster.values.yaml",
        ),
    ]
    assert steps[2].note == "on OpenShift the router's certificate is used instead"
    assert steps[5].note == "labels runai 2.20 needs"
    assert steps[7].note == (
        "runai-backend.values.yaml holds your values (global.domain); an existing release: "
        "airtrust helm prints the upgrade that keeps its values"
    )
    assert "controlPlane.url, controlPlane.clientSecret, cluster.uid, cluster.url" in steps[8].note
    assert [i for i, s in enumerate(steps) if s.note] == [2, 5, 7, 8]


def test_labels_only_from_2_18_and_the_old_chart_name_before_2_15() -> None:
    def label_steps(version: str) -> list[Step]:
        return [s for s in _steps(version) if " label secret " in s.command]

    assert len(label_steps("2.18")) == 1 and label_steps("2.17") == []
    old = [s.command for s in _steps("2.14") if s.command.startswith("helm ")]
    assert old[0].startswith("helm upgrade --install runai-backend runai-backend/runai-backend ")
    assert "--version '~2.14.0'" in old[0]
    assert old[1].startswith("helm upgrade --install runai-cluster runai/runai-cluster ")
    new = [s.command for s in _steps("2.15") if s.command.startswith("helm ")]
    assert " runai-backend/control-plane " in new[0]


def test_openshift_only_namespaces_are_not_created() -> None:
    openshift = [s for s in _steps("2.20") if s.when is When.OPENSHIFT]
    assert [s.command.split()[2] for s in openshift] == ["openshift-monitoring"]
    assert not any("namespace openshift-monitoring" in s.command for s in _steps("2.20"))


def test_paths_are_quoted_so_a_copied_line_still_runs() -> None:
    steps = _steps(
        "2.20",
        bundle=Path("/tmp/my ca/bundle.pem"),
        cert=Path("/tmp/it's.crt"),
        key=Path("k $HOME.pem"),
    )
    secret = shlex.split(steps[1].command.split(" | ")[0])
    assert "--from-file=runai-ca.pem=/tmp/my ca/bundle.pem" in secret
    tls = shlex.split(steps[2].command.split(" | ")[0])
    assert "--cert=/tmp/it's.crt" in tls and "--key=k $HOME.pem" in tls


def test_every_step_is_idempotent_or_explicitly_overwrites() -> None:
    for step in _steps("2.20"):
        if step.command.startswith("kubectl"):
            assert step.command.endswith(APPLY) or step.command.endswith(" --overwrite")
        else:
            assert step.command.startswith("helm upgrade --install ")


def test_to_dict() -> None:
    assert Step("echo", When.LATER, "n").to_dict() == {
        "command": "echo",
        "when": "later",
        "note": "n",
    }
    assert Step("x").to_dict() == {"command": "x", "when": "always", "note": ""}
    assert set(HEADINGS) == {When.OPENSHIFT, When.KUBERNETES, When.WITH_VALUES, When.LATER}


def test_shell_script_runs_each_step_where_it_applies() -> None:
    script = shell_script(_steps("2.20"), PROFILE)
    lines = script.splitlines()
    assert script.endswith("\n")
    assert lines[:3] == [
        "#!/bin/sh",
        "# Run:ai self-hosted: control plane and GPU clusters (2.x): the documented manual "
        "steps (written by airtrust).",
        "set -eu",
    ]
    assert f"kubectl create namespace runai{APPLY}" in lines
    assert (
        f"if ! {DETECT}; then kubectl -n runai-backend create secret tls runai-backend-tls "
        f"--cert=c.pem --key=k.pem{APPLY}; fi"
    ) in lines
    assert (
        f"if {DETECT}; then kubectl -n openshift-monitoring create secret generic runai-ca-cert "
        f"--from-file=runai-ca.pem=b.pem{APPLY}; fi"
    ) in lines
    helm = [line for line in lines if "helm upgrade" in line]
    assert len(helm) == 2 and all(line.startswith("# helm upgrade --install ") for line in helm)
    # The note goes on its own comment line just above its step.
    index = lines.index("# labels runai 2.20 needs")
    assert lines[index + 1].startswith("kubectl -n runai label secret runai-ca-cert ")


def test_without_a_way_to_detect_openshift_the_script_assumes_kubernetes() -> None:
    plain = PROFILE.model_copy(update={"openshift": None})
    lines = shell_script(_steps("2.20"), plain).splitlines()
    assert not any("api-resources" in line for line in lines)
    tls = "kubectl -n runai-backend create secret tls runai-backend-tls --cert=c.pem --key=k.pem"
    assert f"{tls}{APPLY}" in lines
    assert any(
        line.startswith("# kubectl -n openshift-monitoring create secret generic ")
        for line in lines
    )


@pytest.mark.parametrize("when", [When.WITH_VALUES, When.LATER])
def test_steps_that_need_the_user_are_commented_out(when: When) -> None:
    lines = shell_script([Step("do it", when)], PROFILE).splitlines()
    assert lines[3:] == ["# do it"]
