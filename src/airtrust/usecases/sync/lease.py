"""Leader election on a ``coordination.k8s.io/v1`` Lease, optimistic on resourceVersion.

Only the holder writes; the others keep watching so a failover needs no warm
up. A renewal that loses the race (409) means another replica wrote first.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from airtrust.clock import utc_now
from airtrust.kube.api import KubeAPI
from airtrust.plan.manifests import LEASE_NAME, lease, micro_time

__all__ = ["LeaderElector", "expired", "parse_micro_time"]


def parse_micro_time(text: str) -> dt.datetime:
    return dt.datetime.strptime(text.replace("Z", ""), "%Y-%m-%dT%H:%M:%S.%f").replace(
        tzinfo=dt.UTC
    )


def expired(spec: Mapping[str, Any], now: dt.datetime, default_duration: int) -> bool:
    """A lease nobody renewed within its duration may be taken (pure)."""
    renewed = spec.get("renewTime")
    if renewed is None:
        return True
    duration = dt.timedelta(seconds=spec.get("leaseDurationSeconds", default_duration))
    return parse_micro_time(renewed) + duration < now


@dataclass
class LeaderElector:
    api: KubeAPI
    namespace: str
    identity: str
    duration: int = 15
    clock: Callable[[], dt.datetime] = utc_now

    def try_acquire(self) -> bool:
        now = self.clock()
        live = self.api.get("coordination.k8s.io/v1", "leases", self.namespace, LEASE_NAME)
        if live is None:
            return (
                self.api.create(lease(self.namespace, self.identity, self.duration, now))
                is not None
            )
        current = live.get("spec", {})
        holder = current.get("holderIdentity")
        if holder != self.identity and not expired(current, now, self.duration):
            return False
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.duration,
            "renewTime": micro_time(now),
        }
        if holder != self.identity:
            spec["acquireTime"] = micro_time(now)
            spec["leaseTransitions"] = current.get("leaseTransitions", 0) + 1
        live["spec"] = {**current, **spec}
        return self.api.replace(live) is not None  # None: someone else renewed first
