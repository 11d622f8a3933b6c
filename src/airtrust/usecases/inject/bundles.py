"""The merged bundle each in-scope namespace needs for its injected pods.

A pod can only mount a ConfigMap of its own namespace, so the bundle the
webhook points pods at is written into every namespace the selector matches:
``ca-bundle.pem`` (the base bundle's public roots plus the local CA) and, for
Java pods that opt in, ``truststore.p12`` (the same roots, password-less,
deterministic so an unchanged bundle is an unchanged object).

The local CA is read again on every pass: in the cluster it is the mounted CA
secret, which a rotation rewrites with old + new. The next pass then writes
the merged bundle with both into every namespace and sets the webhook
configuration's ``caBundle`` to the same CAs, before the webhook's own
certificate is reissued from the new CA.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airtrust.errors import AirtrustError
from airtrust.kube.api import KubeAPI
from airtrust.kube.watch import RELIST, Watcher
from airtrust.layers.truststore import joined_bundle
from airtrust.pki.bundle import Bundle, read_certificates
from airtrust.pki.truststore import to_pkcs12
from airtrust.plan.inject import (
    BUNDLE_KEY,
    INJECT_NAME,
    INJECT_WEBHOOK,
    TRUSTSTORE_KEY,
    WEBHOOK_CONFIGURATIONS,
    InjectSettings,
)
from airtrust.plan.manifests import bundle_configmap
from airtrust.plan.model import JsonObj

__all__ = ["BundleDistributor", "merged_bundle"]

log = logging.getLogger(__name__)


def merged_bundle(base_pem: bytes, local: Bundle) -> tuple[bytes, bytes]:
    """(PEM, password-less PKCS#12) of the base's roots plus the local CAs."""
    pem = joined_bundle(base_pem, [a.certificate for a in local.anchors])
    anchors = tuple(read_certificates(pem, "merged bundle"))
    return pem, to_pkcs12(Bundle(anchors), "")


@dataclass
class BundleDistributor:
    api: KubeAPI
    selector: str
    settings: InjectSettings
    base_pem: bytes
    #: the local CA, read again on each pass (a rotation rewrites the mounted secret)
    local: Callable[[], Bundle]
    passes: int = 0
    failed: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)
    _merged: tuple[str, bytes, bytes] | None = None
    #: namespaces the watch saw come into scope, written before the next full pass
    _pending: set[str] = field(default_factory=set)
    _wake: threading.Event = field(default_factory=threading.Event)
    _relisted: bool = False
    _lists: int = 0

    def merged(self) -> tuple[Bundle, bytes, bytes]:
        """(local CAs, merged PEM, truststore), rebuilt only when the local CAs change."""
        local = self.local()
        if self._merged is None or self._merged[0] != local.digest:
            pem, truststore = merged_bundle(self.base_pem, local)
            self._merged = (local.digest, pem, truststore)
        return local, self._merged[1], self._merged[2]

    def manifest(self, namespace: str, pem: bytes, truststore: bytes) -> JsonObj:
        return bundle_configmap(
            namespace,
            self.settings.configmap,
            {BUNDLE_KEY: pem.decode()},
            {TRUSTSTORE_KEY: truststore},
        )

    def reconcile(self) -> list[str]:
        """Write the bundle into every namespace in scope and keep the webhook's caBundle
        on the local CAs; the namespaces written."""
        local, pem, truststore = self.merged()
        namespaces = self.api.namespaces(self.selector)
        for namespace in namespaces:
            self.api.apply(self.manifest(namespace, pem, truststore))
        self._follow_ca_bundle(local)
        with self.lock:
            self.passes += 1
            self.failed = ""
        return namespaces

    def may_serve(self, chain_pem: bytes) -> bool:
        """Whether the webhook may serve this (new) certificate now: its issuer is one of
        the local CAs and the configuration's caBundle already holds them. Else it is not
        served yet (the apiserver would refuse the handshake: every pod in scope then
        admitted uninjected, or refused under Fail): the caBundle is set first and the
        certificate served at the next look, when the apiserver has seen the change.
        (During a rotation the reissued certificate may be mounted before the CA secret
        with old + new is, or before the next bundle pass.)"""
        local = self.local()
        chain = [a.certificate for a in read_certificates(chain_pem, "serving certificate")]
        subjects = {a.certificate.subject for a in local.anchors}
        if not any(c.issuer in subjects or c.subject in subjects for c in chain):
            log.info("inject: new serving certificate not served yet: its CA is not mounted")
            return False
        return not self._follow_ca_bundle(local)

    def _follow_ca_bundle(self, local: Bundle) -> bool:
        """Set the configuration's caBundle to the local CAs; whether it changed."""
        config = self.api.get(*WEBHOOK_CONFIGURATIONS, None, INJECT_NAME)
        if config is None:
            return False
        changed = False
        wanted = base64.b64encode(local.to_pem()).decode()
        for index, webhook in enumerate(config.get("webhooks") or []):
            if webhook.get("name") != INJECT_WEBHOOK:
                continue
            if (webhook.get("clientConfig") or {}).get("caBundle") != wanted:
                self.api.json_patch(
                    *WEBHOOK_CONFIGURATIONS,
                    None,
                    INJECT_NAME,
                    [
                        {"op": "test", "path": f"/webhooks/{index}/name", "value": INJECT_WEBHOOK},
                        {
                            "op": "replace",
                            "path": f"/webhooks/{index}/clientConfig/caBundle",
                            "value": wanted,
                        },
                    ],
                )
                log.info("inject: webhook caBundle set to %d CA(s)", len(local.anchors))
                changed = True
        return changed

    def write_namespaces(self, namespaces: Iterable[str]) -> None:
        """The bundle into these namespaces only (just labelled into scope)."""
        _, pem, truststore = self.merged()
        for namespace in sorted(namespaces):
            self.api.apply(self.manifest(namespace, pem, truststore))
            log.info("inject: bundle written into namespace %s (now in scope)", namespace)

    def _in_scope(self, kind: str, obj: Mapping[str, Any]) -> None:
        """Watch events of namespaces matching the selector: a namespace labelled into
        scope gets its bundle now, before its first pod mounts it, not a pass later."""
        if kind == RELIST:
            # The first list is the start (the first full pass covers it); a list again
            # (a compacted watch) may have missed events, so the next pass is a full one.
            with self.lock:
                self._lists += 1
                self._relisted = self._lists > 1
            self._wake.set()
            return
        if kind not in ("ADDED", "MODIFIED"):
            return
        meta = obj.get("metadata") or {}
        name = meta.get("name")
        if not name or meta.get("deletionTimestamp"):  # terminating: no new objects
            return
        with self.lock:
            self._pending.add(name)
        self._wake.set()

    def run(self, stop: threading.Event, interval: float) -> None:
        """Full passes every ``interval`` seconds (the CA may change), and the namespaces
        the watch reports as they come."""
        watcher = Watcher(
            self.api,
            "/api/v1/namespaces",
            self._in_scope,
            stop,
            params={"labelSelector": self.selector},
            metadata_only=True,
            from_now=True,  # a RELIST means a full pass, which reads what it needs
        )
        threading.Thread(target=watcher.run, daemon=True, name="inject-ns-watch").start()
        next_pass = 0.0
        while not stop.is_set():
            with self.lock:
                relisted, self._relisted = self._relisted, False
            if relisted:
                next_pass = 0.0
            try:
                if time.monotonic() >= next_pass:
                    with self.lock:
                        self._pending.clear()
                    self.reconcile()
                    next_pass = time.monotonic() + interval
                with self.lock:
                    pending, self._pending = self._pending, set()
                if pending:
                    self.write_namespaces(pending)
            except AirtrustError as exc:
                with self.lock:
                    self.failed = exc.one_line()
                log.warning("inject: bundle pass failed: %s", exc.one_line())
                next_pass = time.monotonic() + interval
            # Woken by the watch (or the stop), else at the next full pass.
            self._wake.wait(max(0.0, min(next_pass - time.monotonic(), 1.0)))
            self._wake.clear()
