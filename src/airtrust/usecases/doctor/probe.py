"""``in-cluster-probe`` (``--probe``): a short-lived Job that mounts the CA secret and
reaches the control plane from inside the cluster, as a workload would."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence

from airtrust.kube.api import KubeAPI
from airtrust.plan.desired import ClusterFacts
from airtrust.plan.manifests import PROBE_JOB, probe_job
from airtrust.plan.topology import CLUSTER
from airtrust.probe.route import ConnectTo
from airtrust.usecases.doctor.model import Check, Status
from airtrust.usecases.session import Session

__all__ = ["PROBE_TIMEOUT", "check_probe"]

NAME = "in-cluster-probe"
#: How long the Job may take, image pull included.
PROBE_TIMEOUT = 120.0


def _namespace(session: Session) -> str:
    return session.profile.ca_targets(CLUSTER, openshift=False)[0].namespace


def check_probe(
    session: Session, facts: Mapping[str, ClusterFacts], connect_to: Sequence[ConnectTo] = ()
) -> list[Check]:
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
            out.append(_run_probe(session, context, session.config.doctor.probe_image, connect_to))
    return out


def _run_probe(
    session: Session, context: str, image: str, connect_to: Sequence[ConnectTo]
) -> Check:
    api = session.apis[context]
    ns = _namespace(session)
    secret = session.profile.ca_secret
    target = f"Job {ns}/{PROBE_JOB}"
    url = f"https://{session.config.domain}/"
    # The same routes doctor's own connections take (curl has the same option).
    routes = [
        a
        for rule in connect_to
        for a in ("--connect-to", f"{rule.host}:{rule.port}:{rule.address}:{rule.address_port}")
    ]
    api.delete("batch/v1", "jobs", ns, PROBE_JOB)  # a leftover of an interrupted run
    created = api.create(
        probe_job(
            ns,
            image=image,
            secret=secret.name,
            key=secret.key,
            url=url,
            curl_args=routes,
            host_network=session.config.doctor.probe_host_network,
        )
    )
    uid = str(((created or {}).get("metadata") or {}).get("uid", ""))
    expected = hashlib.sha256(session.bundle.to_pem()).hexdigest()[:16]
    try:
        deadline = time.monotonic() + PROBE_TIMEOUT
        while time.monotonic() < deadline:
            status = (api.get("batch/v1", "jobs", ns, PROBE_JOB) or {}).get("status", {})
            if status.get("succeeded") or status.get("failed"):
                said = _said(api, ns, uid)
                if status.get("succeeded"):
                    return Check(NAME, context, target, Status.OK, said or f"reached {url}")
                fix = f"kubectl -n {ns} logs job/{PROBE_JOB}"
                if expected not in said:
                    fix = (
                        f"the mounted {secret.name} is not airtrust's bundle "
                        f"(sha256 {expected}): run airtrust apply"
                    )
                return Check(NAME, context, target, Status.FAIL, said or "curl failed", fix)
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


def _said(api: KubeAPI, namespace: str, uid: str) -> str:
    """The probe container's termination message (what it saw and what curl said), from
    this run's pod (an earlier run's may still be on its way out)."""
    selector = f"batch.kubernetes.io/controller-uid={uid}" if uid else f"job-name={PROBE_JOB}"
    for pod in api.list_objects("v1", "pods", namespace, label_selector=selector):
        for state in (pod.get("status") or {}).get("containerStatuses") or []:
            message = ((state.get("state") or {}).get("terminated") or {}).get("message")
            if message:
                return " ".join(str(message).split())
    return ""
