"""``cluster-oidc``: each cluster's kube-apiserver trusts the control plane's identity
provider (researcher authentication), read from its static pod."""

from __future__ import annotations

from collections.abc import Mapping

from airtrust.errors import AirtrustError
from airtrust.plan.desired import ClusterFacts
from airtrust.plan.oidc import Finding, judge_apiserver
from airtrust.plan.topology import CLUSTER
from airtrust.usecases.doctor.model import Check, Status
from airtrust.usecases.session import Session

__all__ = ["check_cluster_oidc"]

NAME = "cluster-oidc"
TARGET = "kube-system pods component=kube-apiserver"


def check_cluster_oidc(session: Session, facts: Mapping[str, ClusterFacts]) -> list[Check]:
    oidc = session.profile.cluster_oidc
    if oidc is None:
        return []
    out = []
    for context, fact in facts.items():
        if CLUSTER not in fact.roles:
            continue
        if fact.openshift:
            out.append(
                Check(NAME, context, TARGET, Status.SKIP, "OpenShift: its own identity provider")
            )
            continue
        try:
            pods = list(
                session.apis[context].list_objects(
                    "v1", "pods", "kube-system", label_selector="component=kube-apiserver"
                )
            )
        except AirtrustError as exc:
            why = (
                f"the apiserver's pod is not readable ({exc.message}); managed clusters keep "
                "it hidden: check the provider's OIDC settings"
            )
            out.append(Check(NAME, context, TARGET, Status.SKIP, why))
            continue
        if not pods:
            why = (
                "no kube-apiserver static pod (a managed cluster?): check the provider's OIDC "
                "settings for the control plane's issuer and CA"
            )
            out.append(Check(NAME, context, TARGET, Status.SKIP, why))
            continue
        for pod in pods:
            verdict = judge_apiserver(pod, oidc, session.config.domain)
            status = Status.OK if verdict.finding is Finding.OK else Status.WARN
            name = pod.get("metadata", {}).get("name", "kube-apiserver")
            out.append(
                Check(
                    NAME, context, f"Pod kube-system/{name}", status, verdict.evidence, verdict.fix
                )
            )
    return out
