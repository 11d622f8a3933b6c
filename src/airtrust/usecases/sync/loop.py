"""The reconcile loop of ``airtrust sync``: watch, validate, converge."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from airtrust.clock import utc_now
from airtrust.errors import AirtrustError, InputError
from airtrust.kube.api import FIELD_MANAGER, KubeAPI
from airtrust.kube.source import read_source
from airtrust.kube.watch import RELIST, Watcher
from airtrust.pki.bundle import Bundle
from airtrust.plan.diff import secret_holds, written_by_only
from airtrust.plan.manifests import secret_manifest
from airtrust.plan.model import BUNDLE_HASH
from airtrust.plan.source import Source
from airtrust.profiles import Profile
from airtrust.usecases.parallel import parallel_count
from airtrust.usecases.sync.health import Metrics
from airtrust.usecases.sync.lease import LeaderElector

__all__ = ["SyncController"]

log = logging.getLogger(__name__)

#: what a watch calls with each event: its type and the object's metadata
EventHandler = Callable[[str, Mapping[str, Any]], None]
#: more namespaces named at once than this and a full pass is cheaper than one by one
MANY_NAMESPACES = 50


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
    #: what the watches asked for since the loop last looked: a full pass, namespaces
    _full: bool = False
    _pending: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    #: the bundle last turned into a Secret, its PEM and digest (thousands of Secrets
    #: are built from one bundle)
    _rendered: tuple[Bundle, bytes, str] | None = None

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

    def in_scope(self, namespace: str) -> bool:
        """Whether one namespace is a target, asked of the apiserver (it matches the
        selector, set-based forms included) without listing the others."""
        if namespace in self.namespaces:
            found = self.api.get("v1", "namespaces", None, namespace)
            return found is not None and not found["metadata"].get("deletionTimestamp")
        if not self.selector:
            return False
        return any(
            not n["metadata"].get("deletionTimestamp")
            for n in self.api.list_objects(
                "v1",
                "namespaces",
                label_selector=self.selector,
                field_selector=f"metadata.name={namespace}",
                metadata_only=True,
            )
        )

    def manifest(self, namespace: str, bundle: Bundle) -> dict[str, Any]:
        """The CA secret ``namespace`` must hold."""
        ca = self.profile.ca_secret
        rendered = self._rendered
        if rendered is None or rendered[0] is not bundle:  # once per bundle read
            rendered = self._rendered = (bundle, bundle.to_pem(), bundle.digest)
        return secret_manifest(
            namespace,
            ca.name,
            secret_type="Opaque",
            data={ca.key: rendered[1]},
            labels=self.namespaces.get(namespace, {}),
            annotations={BUNDLE_HASH: rendered[2]},
        )

    def reconcile(self, *, write: bool = True) -> int:
        """One full pass; returns the number of objects written.

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
        targets = self.targets()
        wanted = set(targets)
        in_sync: set[str] = set()
        for live in self.api.list_objects(
            "v1", "secrets", field_selector=f"metadata.name={self.profile.ca_secret.name}"
        ):
            namespace = live["metadata"]["namespace"]
            if namespace in wanted and secret_holds(self.manifest(namespace, bundle), live):
                in_sync.add(namespace)
        pending = [n for n in targets if n not in in_sync]
        writes = 0
        if write and pending:
            # force: the controller owns these objects and restores any edit.
            writes = parallel_count(
                pending, lambda n: self.api.apply(self.manifest(n, bundle), force=True)
            )
        self.metrics.out_of_sync = 0 if write else len(pending)
        self.metrics.writes += writes
        return writes

    def reconcile_namespaces(self, namespaces: Collection[str]) -> int:
        """The namespaces a watch named (one created or labelled into scope, a CA
        secret deleted or edited by someone else), each judged on its own: a new
        namespace gets its Secret in a few requests, not a pass over the cluster.
        Returns the objects written."""
        bundle = self.last_good
        if bundle is None:  # no full pass yet: the first one covers them
            return 0
        name = self.profile.ca_secret.name

        def converge(namespace: str) -> int:
            if not self.in_scope(namespace):
                return 0
            manifest = self.manifest(namespace, bundle)
            live = self.api.get("v1", "secrets", namespace, name)
            if live is not None and secret_holds(manifest, live):
                return 0
            self.api.apply(manifest, force=True)
            log.info("namespace %s: CA secret written", namespace)
            return 1

        writes = sum(converge(n) for n in sorted(namespaces))
        self.metrics.writes += writes
        return writes

    # --- loops -------------------------------------------------------------------------

    def _wake(self, *, full: bool = False, namespace: str | None = None) -> None:
        with self._lock:
            self._full = self._full or full
            if namespace:
                self._pending.add(namespace)
        self.dirty.set()

    def _on_event(self, handler: EventHandler) -> EventHandler:
        """``handler`` for a watch's changes. Its first list is the start (the first
        full pass covers it); a list again (a compacted watch) may have missed events:
        a full pass."""
        lists = 0

        def on_event(kind: str, obj: Mapping[str, Any]) -> None:
            nonlocal lists
            if kind != RELIST:
                handler(kind, obj)
                return
            lists += 1
            if lists > 1:
                self._wake(full=True)

        return on_event

    def _source_event(self, _kind: str, _obj: Mapping[str, Any]) -> None:
        self._wake(full=True)

    def _namespace_event(self, kind: str, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        if kind in ("ADDED", "MODIFIED") and meta.get("name") and not meta.get("deletionTimestamp"):
            self._wake(namespace=meta["name"])

    def _secret_event(self, kind: str, obj: Mapping[str, Any]) -> None:
        """A CA secret changed: judged by its metadata (the event carries no data), so
        the controller's own writes, thousands after a CA change, cost nothing more."""
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace")
        bundle = self.last_good
        if not namespace:
            return
        if (
            kind != "DELETED"
            and bundle is not None
            and written_by_only(self.manifest(namespace, bundle), meta, FIELD_MANAGER)
        ):
            return
        self._wake(namespace=namespace)

    def watches(self) -> Iterator[threading.Thread]:
        s = self.source
        ca = self.profile.ca_secret.name
        specs: list[tuple[str, dict[str, str], EventHandler]] = [
            ("/api/v1/namespaces", {}, self._namespace_event),
            ("/api/v1/secrets", {"fieldSelector": f"metadata.name={ca}"}, self._secret_event),
            (
                f"/api/v1/namespaces/{s.namespace}/{s.plural}",
                {"fieldSelector": f"metadata.name={s.name}"},
                self._source_event,
            ),
        ]
        for path, params, handler in specs:
            # metadata alone, from now: an event names what to judge again, and the
            # judging reads what it needs
            watcher = Watcher(
                self.api,
                path,
                self._on_event(handler),
                self.stop,
                params=params,
                metadata_only=True,
                from_now=True,
            )
            thread = threading.Thread(target=watcher.run, daemon=True)
            thread.start()
            yield thread

    def run(self, elector: LeaderElector | None, *, resync: float = 30.0) -> None:
        """Full passes at start, when the source changes and every ``resync`` seconds;
        between them, the namespaces the watches name, one by one (many at once, as
        after a relabelling of the whole cluster, make a full pass: it is cheaper)."""
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
            self.dirty.clear()  # before taking the work: a later event wakes the next turn
            with self._lock:
                full = (
                    self._full
                    or time.monotonic() >= next_resync
                    or len(self._pending) > MANY_NAMESPACES
                )
                pending, self._pending, self._full = self._pending, set(), False
            try:
                if full:
                    next_resync = time.monotonic() + resync
                    written = self.reconcile(write=leader)
                elif pending and leader:
                    written = self.reconcile_namespaces(pending)
                else:
                    written = None
                if written is not None:
                    self.metrics.reconciles += 1
                if written:
                    log.info("reconciled: %d object(s) written", written)
            except Exception as exc:  # apiserver gone, bad source: count, retry soon
                self.metrics.errors += 1
                text = exc.one_line() if isinstance(exc, AirtrustError) else repr(exc)
                log.error("reconcile failed: %s", text)
                self.stop.wait(1.0)
                self._wake(full=True)
                continue
            self.dirty.wait(timeout=tick)
