"""``sync-controller``: the rendered sync controller is running and one replica leads.

A Deployment can report every replica Ready while nobody reconciles (every replica
waiting for a Lease whose holder hangs), so the Lease is read too: it must have a
holder whose last renewal is younger than the Lease's own duration. Both answers come
from the cluster; doctor never asks the controller about itself.
"""

from __future__ import annotations

import datetime as dt

from airtrust.errors import AirtrustError
from airtrust.kube.api import JsonObj, KubeAPI
from airtrust.plan.manifests import LEASE_NAME
from airtrust.usecases.doctor.model import Check, Status
from airtrust.usecases.session import Session

__all__ = ["check_controller", "judge_controller"]

NAME = "sync-controller"
SELECTOR = "app.kubernetes.io/name=airtrust-sync"


def check_controller(session: Session) -> list[Check]:
    out: list[Check] = []
    for context, api in session.apis.items():
        out += _check_context(context, api, session.now)
    return out


def _check_context(context: str, api: KubeAPI, now: dt.datetime) -> list[Check]:
    try:
        deployments = list(api.list_objects("apps/v1", "deployments", label_selector=SELECTOR))
    except AirtrustError as exc:
        return [Check(NAME, context, "deployments", Status.SKIP, f"not listable: {exc.message}")]
    if not deployments:
        return [Check(NAME, context, "Deployment airtrust-sync", Status.SKIP, "not installed")]
    out = []
    for deployment in deployments:
        ns = str(deployment["metadata"]["namespace"])
        try:
            lease = api.get("coordination.k8s.io/v1", "leases", ns, LEASE_NAME)
        except AirtrustError as exc:
            lease = None
            out.append(Check(NAME, context, f"Lease {ns}/{LEASE_NAME}", Status.SKIP, exc.message))
        status, evidence, fix = judge_controller(deployment, lease, now)
        out.append(Check(NAME, context, f"Deployment {ns}/airtrust-sync", status, evidence, fix))
    return out


def judge_controller(
    deployment: JsonObj, lease: JsonObj | None, now: dt.datetime
) -> tuple[Status, str, str]:
    """(status, evidence, fix) from the Deployment's status and its Lease."""
    ns = str(deployment["metadata"]["namespace"])
    wanted = int((deployment.get("spec") or {}).get("replicas", 1))
    ready = int((deployment.get("status") or {}).get("readyReplicas") or 0)
    replicas = f"{ready}/{wanted} replicas ready"
    logs = (
        f"kubectl -n {ns} describe deployment airtrust-sync; "
        f"kubectl -n {ns} logs deploy/airtrust-sync"
    )
    if ready == 0:
        return Status.FAIL, f"{replicas}: nothing reconciles", logs
    spec = (lease or {}).get("spec") or {}
    holder = spec.get("holderIdentity")
    if not holder:
        return Status.FAIL, f"{replicas}; no replica holds Lease {ns}/{LEASE_NAME}", logs
    renewed = _parse_time(spec.get("renewTime"))
    duration = int(spec.get("leaseDurationSeconds") or 15)
    if renewed is None:
        return Status.FAIL, f"{replicas}; Lease held by {holder} but never renewed", logs
    age = (now - renewed).total_seconds()
    led = f"Lease held by {holder}, renewed {max(age, 0):.0f} s ago"
    if age > duration:
        return (
            Status.FAIL,
            f"{replicas}; {led}, longer than its {duration} s: the leader is stuck",
            # The identity is the pod's hostname (its name) and the process id.
            f"kubectl -n {ns} delete pod {str(holder).rsplit('-', 1)[0]}",
        )
    if ready < wanted:
        return Status.WARN, f"{replicas}; {led}", logs
    return Status.OK, f"{replicas}; {led}", ""


def _parse_time(value: object) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
