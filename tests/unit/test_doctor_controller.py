"""The sync controller's health as doctor judges it from the Deployment and its Lease."""

from __future__ import annotations

import datetime as dt
from typing import Any

from airtrust.usecases.doctor.controller import judge_controller
from airtrust.usecases.doctor.model import Status

NOW = dt.datetime(2026, 12, 5, 12, 0, 0, tzinfo=dt.UTC)


def deployment(ready: int, wanted: int = 2) -> dict[str, Any]:
    return {
        "metadata": {"name": "airtrust-sync", "namespace": "airtrust-system"},
        "spec": {"replicas": wanted},
        "status": {"readyReplicas": ready} if ready else {},
    }


def lease(holder: str | None, renewed_ago: float | None, duration: int = 15) -> dict[str, Any]:
    spec: dict[str, Any] = {"leaseDurationSeconds": duration}
    if holder:
        spec["holderIdentity"] = holder
    if renewed_ago is not None:
        spec["renewTime"] = (NOW - dt.timedelta(seconds=renewed_ago)).strftime(
            "%Y-%m-%dT%H:%M:%S.%fZ"
        )
    return {"spec": spec}


def test_all_ready_and_a_fresh_lease_is_ok() -> None:
    status, evidence, fix = judge_controller(deployment(2), lease("sync-abc-7", 3), NOW)
    assert status is Status.OK
    assert evidence == "2/2 replicas ready; Lease held by sync-abc-7, renewed 3 s ago"
    assert fix == ""


def test_no_ready_replica_fails_whatever_the_lease_says() -> None:
    status, evidence, fix = judge_controller(deployment(0), lease("sync-abc-7", 1), NOW)
    assert status is Status.FAIL and "nothing reconciles" in evidence
    assert "kubectl -n airtrust-system logs deploy/airtrust-sync" in fix


def test_ready_replicas_without_a_holder_fail() -> None:
    for live in (None, lease(None, None)):
        status, evidence, _ = judge_controller(deployment(2), live, NOW)
        assert status is Status.FAIL and "no replica holds Lease" in evidence


def test_a_lease_older_than_its_duration_names_the_stuck_pod() -> None:
    status, evidence, fix = judge_controller(
        deployment(2), lease("airtrust-sync-5c9-x2x-1", 40), NOW
    )
    assert status is Status.FAIL and "the leader is stuck" in evidence
    assert fix == "kubectl -n airtrust-system delete pod airtrust-sync-5c9-x2x"


def test_one_replica_missing_warns() -> None:
    status, evidence, _ = judge_controller(deployment(1), lease("a-1", 2), NOW)
    assert status is Status.WARN and evidence.startswith("1/2 replicas ready")
