"""The reconcile loop of ``airtrust sync``: watch, validate, converge."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from airtrust.clock import utc_now
from airtrust.errors import AirtrustError, InputError
from airtrust.kube.api import FIELD_MANAGER, KubeAPI
from airtrust.kube.source import read_source
from airtrust.kube.watch import Watcher
from airtrust.pki.bundle import Bundle
from airtrust.plan.diff import diff
from airtrust.plan.manifests import secret_manifest
from airtrust.plan.model import BUNDLE_HASH, Action, Desired
from airtrust.plan.source import Source
from airtrust.profiles import Profile
from airtrust.usecases.apply import parallel_count
from airtrust.usecases.sync.health import Metrics
from airtrust.usecases.sync.lease import LeaderElector

__all__ = ["SyncController"]

log = logging.getLogger(__name__)


@dataclass
class SyncController:
    api: KubeAPI
    profile: Profile
    source: Source
    #: namespace -> the labels its CA secret carries (the profile's, for its version)
    namespaces: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    selector: str | None = None
    metrics: Metrics = field(default_factory=Metrics)
    last_good: Bundle | None = None
    dirty: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    clock: Callable[[], dt.datetime] = utc_now

    # --- one pass ----------------------------------------------------------------------

    def read_source(self, now: dt.datetime) -> Bundle | None:
        """The validated bundle from the source, or None (keep the last good one)."""
        try:
            bundle = read_source(self.api, self.source, now)
        except AirtrustError as exc:
            log.error("CA source refused, keeping the last good bundle: %s", exc.one_line())
            self.metrics.source_valid = 0
            return None
        self.metrics.source_valid = 1
        return bundle

    def targets(self) -> list[str]:
        """The namespaces to hold the CA secret: the selected ones and the named ones
        that exist (each named one read on its own: a cluster of thousands of
        namespaces is not listed whole to find two)."""
        names = set(self.api.namespaces(self.selector)) if self.selector else set()
        for namespace in set(self.namespaces) - names:
            if self.api.get("v1", "namespaces", None, namespace) is not None:
                names.add(namespace)
        return sorted(names)

    def reconcile(self, *, write: bool = True) -> int:
        """One pass; returns the number of objects written.

        Memory stays flat in the number of namespaces: the live Secrets are judged a
        page at a time and only the names already in sync are kept; the Secrets to
        write are built one by one as the writers take them, and the apiserver's
        answers are counted, not kept.
        """
        now = self.clock()
        bundle = self.read_source(now) or self.last_good
        if bundle is None:
            raise InputError("no valid CA bundle yet", hint="fix the CA source")
        self.last_good = bundle
        self.metrics.expiry_seconds = round((bundle.earliest_expiry() - now).total_seconds(), 3)
        ca = self.profile.ca_secret
        pem = bundle.to_pem()
        targets = self.targets()
        wanted = set(targets)

        def desired(namespace: str) -> Desired:
            manifest = secret_manifest(
                namespace,
                ca.name,
                secret_type="Opaque",
                data={ca.key: pem},
                labels=self.namespaces.get(namespace, {}),
                annotations={BUNDLE_HASH: bundle.digest},
            )
            return Desired(
                self.api.context,
                "Secret",
                namespace,
                ca.name,
                "sync",
                manifest=manifest,
                bundle_key=ca.key,
            )

        in_sync: set[str] = set()
        for live in self.api.list_objects(
            "v1", "secrets", field_selector=f"metadata.name={ca.name}"
        ):
            namespace = live["metadata"]["namespace"]
            if namespace in wanted:
                change = diff(desired(namespace), live, manager=FIELD_MANAGER)
                if change.action is Action.UNCHANGED:
                    in_sync.add(namespace)
        pending = [n for n in targets if n not in in_sync]
        writes = 0
        if write and pending:
            # force: the controller owns these objects and restores any edit.
            writes = parallel_count(
                pending, lambda n: self.api.apply(desired(n).manifest or {}, force=True)
            )
        self.metrics.out_of_sync = 0 if write else len(pending)
        self.metrics.writes += writes
        return writes

    # --- loops -------------------------------------------------------------------------

    def _changed(self, _kind: str, _obj: Mapping[str, Any]) -> None:
        self.dirty.set()

    def watches(self) -> Iterator[threading.Thread]:
        s = self.source
        ca = self.profile.ca_secret.name
        specs = [
            ("/api/v1/namespaces", {}),
            ("/api/v1/secrets", {"fieldSelector": f"metadata.name={ca}"}),
            (
                f"/api/v1/namespaces/{s.namespace}/{s.plural}",
                {"fieldSelector": f"metadata.name={s.name}"},
            ),
        ]
        for path, params in specs:
            # metadata alone: a change is only a reason to reconcile, which reads again
            watcher = Watcher(
                self.api, path, self._changed, self.stop, params=params, metadata_only=True
            )
            thread = threading.Thread(target=watcher.run, daemon=True)
            thread.start()
            yield thread

    def run(self, elector: LeaderElector | None, *, resync: float = 30.0) -> None:
        list(self.watches())
        next_resync = 0.0
        tick = min(elector.duration / 3, resync) if elector else resync
        while not self.stop.is_set():
            leader = True
            if elector is not None:
                try:
                    leader = elector.try_acquire()
                except AirtrustError as exc:
                    log.warning("lease: %s", exc.one_line())
                    leader = False
            self.metrics.leader = int(leader)
            if self.dirty.is_set() or time.monotonic() >= next_resync:
                self.dirty.clear()
                next_resync = time.monotonic() + resync
                try:
                    written = self.reconcile(write=leader)
                    self.metrics.reconciles += 1
                    if written:
                        log.info("reconciled: %d object(s) written", written)
                except Exception as exc:  # apiserver gone, bad source: count, retry soon
                    self.metrics.errors += 1
                    text = exc.one_line() if isinstance(exc, AirtrustError) else repr(exc)
                    log.error("reconcile failed: %s", text)
                    self.stop.wait(1.0)
                    self.dirty.set()
                    continue
            self.dirty.wait(timeout=tick)
