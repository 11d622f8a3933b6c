"""``in-cluster-probe`` (``--probe``): a short-lived Job that mounts the CA secret and
reaches the control plane from inside the cluster, as a workload would."""

from __future__ import annotations

import time
from collections.abc import Mapping

from airtrust.controller.doctor.model import Check, Status
from airtrust.controller.session import Session
from airtrust.plan.desired import ClusterFacts
from airtrust.plan.manifests import PROBE_JOB, probe_job
from airtrust.plan.topology import CLUSTER

__all__ = ["PROBE_TIMEOUT", "check_probe"]

NAME = "in-cluster-probe"
#: How long the Job may take, image pull included.
PROBE_TIMEOUT = 120.0


def _namespace(session: Session) -> str:
    return session.profile.ca_targets(CLUSTER, openshift=False)[0].namespace


def check_probe(session: Session, facts: Mapping[str, ClusterFacts]) -> list[Check]:
    out = []
    for context, fact in facts.items():
        if CLUSTER not in fact.roles:
            continue
        target = f"Job {_namespace(session)}/{PROBE_JOB}"
        nodes = list(session.apis[context].list_objects("v1", "nodes"))
        ready = [
            n
            for n in nodes
            if any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in n.get("status", {}).get("conditions", [])
            )
        ]
        if not ready:
            why = f"the cluster cannot run pods ({len(nodes)} node(s), none Ready)"
            out.append(Check(NAME, context, target, Status.SKIP, why))
        elif session.config.doctor.probe_image is None:
            fix = "set doctor.probe_image to an image with curl in your registry"
            out.append(Check(NAME, context, target, Status.SKIP, "no probe image configured", fix))
        else:
            out.append(_run_probe(session, context, session.config.doctor.probe_image))
    return out


def _run_probe(session: Session, context: str, image: str) -> Check:
    api = session.apis[context]
    ns = _namespace(session)
    secret = session.profile.ca_secret
    target = f"Job {ns}/{PROBE_JOB}"
    url = f"https://{session.config.domain}/"
    api.create(probe_job(ns, image=image, secret=secret.name, key=secret.key, url=url))
    try:
        deadline = time.monotonic() + PROBE_TIMEOUT
        while time.monotonic() < deadline:
            status = (api.get("batch/v1", "jobs", ns, PROBE_JOB) or {}).get("status", {})
            if status.get("succeeded"):
                return Check(
                    NAME, context, target, Status.OK, f"a pod mounting {secret.name} reached {url}"
                )
            if status.get("failed"):
                return Check(
                    NAME,
                    context,
                    target,
                    Status.FAIL,
                    "curl from inside the cluster failed",
                    f"kubectl -n {ns} logs job/{PROBE_JOB}",
                )
            time.sleep(1)
        return Check(
            NAME,
            context,
            target,
            Status.FAIL,
            "timed out",
            f"kubectl -n {ns} describe job/{PROBE_JOB}",
        )
    finally:
        api.delete("batch/v1", "jobs", ns, PROBE_JOB)
