"""``airtrust sync``: a controller that keeps every target converged.

It watches namespaces (by the configured selector and names), the CA source
(a Secret or ConfigMap in a trust namespace) and the target secrets, and
reconciles within seconds with server-side apply. A source that fails
validation is never distributed: the last good bundle stays, and the
failure shows in the logs and metrics. Several replicas may run; a
``coordination.k8s.io`` Lease elects the one that writes.

Unlike trust-manager, the bundle it distributes is validated exactly as
``airtrust bundle build`` validates (no keys, CA certificates only, none
expired) and the objects are the same ones ``airtrust apply`` writes.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import json
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from airtrust.errors import AirtrustError, InputError
from airtrust.kube.api import KubeAPI
from airtrust.pki.bundle import Bundle, parse_bundle
from airtrust.plan.desired import secret_manifest
from airtrust.plan.diff import diff
from airtrust.plan.model import BUNDLE_HASH, Action, Desired
from airtrust.profiles import Profile

log = logging.getLogger(__name__)
LEASE_NAME = "airtrust-sync"


@dataclass(frozen=True)
class Source:
    kind: str  # secret or configmap
    namespace: str
    name: str
    key: str

    @classmethod
    def parse(cls, text: str, default_key: str) -> Source:
        """secret/NS/NAME[:KEY] or configmap/NS/NAME[:KEY]."""
        spec, _, key = text.partition(":")
        parts = spec.split("/")
        if len(parts) != 3 or parts[0] not in ("secret", "configmap") or not all(parts):
            raise InputError(
                f"--source {text} is not KIND/NAMESPACE/NAME[:KEY]",
                hint="e.g. --source secret/airtrust-system/local-ca:ca.pem",
            )
        return cls(parts[0], parts[1], parts[2], key or default_key)

    @property
    def plural(self) -> str:
        return "secrets" if self.kind == "secret" else "configmaps"


@dataclass
class Metrics:
    reconciles: int = 0
    errors: int = 0
    out_of_sync: int = 0
    expiry_seconds: float = 0.0
    source_valid: int = 0
    leader: int = 0
    writes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def render(self) -> str:
        rows = [
            (
                "airtrust_ca_expiry_seconds",
                "gauge",
                "Seconds until the earliest CA of the distributed bundle expires.",
                self.expiry_seconds,
            ),
            ("airtrust_reconcile_total", "counter", "Reconcile passes.", self.reconciles),
            (
                "airtrust_reconcile_errors_total",
                "counter",
                "Reconcile passes with errors.",
                self.errors,
            ),
            (
                "airtrust_targets_out_of_sync",
                "gauge",
                "Targets that differed from the bundle at the last pass.",
                self.out_of_sync,
            ),
            (
                "airtrust_source_valid",
                "gauge",
                "1 when the CA source passed validation.",
                self.source_valid,
            ),
            ("airtrust_leader", "gauge", "1 on the replica that holds the lease.", self.leader),
            ("airtrust_writes_total", "counter", "Objects written.", self.writes),
        ]
        out = []
        for name, kind, help_text, value in rows:
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"]
        return "\n".join(out) + "\n"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _micro(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_micro(text: str) -> dt.datetime:
    return dt.datetime.strptime(text.replace("Z", ""), "%Y-%m-%dT%H:%M:%S.%f").replace(
        tzinfo=dt.UTC
    )


@dataclass
class LeaderElector:
    """Lease-based election (coordination.k8s.io/v1), optimistic on resourceVersion."""

    api: KubeAPI
    namespace: str
    identity: str
    duration: int = 15

    def try_acquire(self) -> bool:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases"
        now = _now()
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.duration,
            "renewTime": _micro(now),
        }
        live = self.api.get("coordination.k8s.io/v1", "leases", self.namespace, LEASE_NAME)
        if live is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": LEASE_NAME, "namespace": self.namespace},
                "spec": {**spec, "acquireTime": _micro(now)},
            }
            return self.api.request("POST", path, body=body, what="create lease").status_code == 201
        current = live.get("spec", {})
        holder = current.get("holderIdentity")
        renewed = current.get("renewTime")
        expired = (
            renewed is None
            or _parse_micro(renewed)
            + dt.timedelta(seconds=current.get("leaseDurationSeconds", self.duration))
            < now
        )
        if holder != self.identity and not expired:
            return False
        if holder != self.identity:
            spec["acquireTime"] = _micro(now)
            spec["leaseTransitions"] = current.get("leaseTransitions", 0) + 1
        live["spec"] = {**current, **spec}
        response = self.api.request("PUT", f"{path}/{LEASE_NAME}", body=live, what="renew lease")
        return response.status_code == 200  # 409: someone else renewed first


@dataclass
class SyncController:
    api: KubeAPI
    profile: Profile
    source: Source
    namespaces: tuple[str, ...] = ()
    selector: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    metrics: Metrics = field(default_factory=Metrics)
    last_good: Bundle | None = None
    dirty: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)

    # --- one pass ----------------------------------------------------------------------

    def read_source(self) -> Bundle | None:
        """The validated bundle from the source, or None (keep the last good one)."""
        s = self.source
        live = self.api.get("v1", s.plural, s.namespace, s.name)
        try:
            if live is None:
                raise InputError(
                    f"{s.kind} {s.namespace}/{s.name} does not exist", hint="create the CA source"
                )
            raw = (live.get("data") or {}).get(s.key)
            if raw is None:
                raise InputError(
                    f"{s.kind} {s.namespace}/{s.name} has no key {s.key}",
                    hint="put the CA bundle under that key",
                )
            data = base64.b64decode(raw) if s.kind == "secret" else raw.encode()
            bundle = parse_bundle([(f"{s.kind} {s.namespace}/{s.name}", data)], now=_now())
        except AirtrustError as exc:
            log.error("CA source refused, keeping the last good bundle: %s", exc.one_line())
            self.metrics.source_valid = 0
            return None
        self.metrics.source_valid = 1
        return bundle

    def targets(self) -> list[str]:
        names = set(self.namespaces)
        if self.selector:
            names.update(self.api.namespaces(self.selector))
        existing = set(self.api.namespaces())
        return sorted(names & existing)

    def reconcile(self, *, write: bool = True) -> int:
        """One pass; returns the number of objects written."""
        bundle = self.read_source() or self.last_good
        if bundle is None:
            raise InputError("no valid CA bundle yet", hint="fix the CA source")
        self.last_good = bundle
        expiry = bundle.earliest_expiry() - _now()
        self.metrics.expiry_seconds = round(expiry.total_seconds(), 3)
        ca = self.profile.ca_secret
        live = {
            obj["metadata"]["namespace"]: obj
            for obj in self.api.list_objects(
                "v1", "secrets", field_selector=f"metadata.name={ca.name}"
            )
        }
        pending = []
        for namespace in self.targets():
            manifest = secret_manifest(
                namespace,
                ca.name,
                secret_type="Opaque",
                data={ca.key: bundle.to_pem()},
                labels=self.labels if namespace in self.namespaces else {},
                annotations={BUNDLE_HASH: bundle.digest},
            )
            desired = Desired(
                self.api.context,
                "Secret",
                namespace,
                ca.name,
                "sync",
                manifest=manifest,
                bundle_key=ca.key,
            )
            if diff(desired, live.get(namespace)).action is not Action.UNCHANGED:
                pending.append(manifest)
        out_of_sync, writes = len(pending), 0
        if write and pending:
            # force: the controller owns these objects and restores any edit.
            with ThreadPoolExecutor(max_workers=min(16, len(pending))) as pool:
                writes = len(list(pool.map(lambda m: self.api.apply(m, force=True), pending)))
        self.metrics.out_of_sync = out_of_sync if not write else 0
        self.metrics.writes += writes
        return writes

    # --- loops -------------------------------------------------------------------------

    def _watch(self, path: str, params: dict[str, str]) -> None:
        """Set ``dirty`` on every event; reconnect (with backoff) whenever the stream ends."""
        delay = 0.5
        while not self.stop.is_set():
            try:
                with self.api.http.stream(
                    "GET",
                    path,
                    params={**params, "watch": "1", "timeoutSeconds": "60"},
                    timeout=None,
                ) as response:
                    if response.status_code != 200:
                        raise OSError(f"watch {path}: HTTP {response.status_code}")
                    delay = 0.5
                    for line in response.iter_lines():
                        if line:
                            self.dirty.set()
                        if self.stop.is_set():
                            return
            except Exception as exc:  # apiserver restarts, dropped streams
                log.debug("watch %s interrupted: %s", path, exc)
                self.dirty.set()
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

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
            thread = threading.Thread(target=self._watch, args=(path, params), daemon=True)
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


def serve_metrics(controller: SyncController, address: str) -> http.server.ThreadingHTTPServer:
    host, _, port = address.rpartition(":")
    metrics = controller.metrics

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            if self.path == "/metrics":
                body, code = metrics.render().encode(), 200
                ctype = "text/plain; version=0.0.4"
            elif self.path in ("/healthz", "/livez"):
                body, code, ctype = b"ok\n", 200, "text/plain"
            elif self.path == "/readyz":
                ready = metrics.reconciles > 0 or not metrics.leader
                body = json.dumps({"ready": ready}).encode()
                code, ctype = (200 if ready else 503), "application/json"
            else:
                body, code, ctype = b"not found\n", 404, "text/plain"
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer((host or "0.0.0.0", int(port)), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def controller_manifests(
    *,
    image: str,
    namespace: str,
    source: Source,
    selector: str | None,
    target_namespaces: tuple[str, ...],
    replicas: int = 2,
) -> list[dict[str, Any]]:
    """Deployment, ServiceAccount and least-privilege RBAC to run ``airtrust sync`` in-cluster."""
    name = "airtrust-sync"
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/managed-by": "airtrust"}
    meta = {"name": name, "namespace": namespace, "labels": labels}
    args = [
        "sync",
        "--in-cluster",
        "--source",
        f"{source.kind}/{source.namespace}/{source.name}:{source.key}",
        "--lease-namespace",
        namespace,
        "--metrics-addr",
        "0.0.0.0:8080",
    ]
    if selector:
        args += ["--selector", selector]
    for ns in target_namespaces:
        args += ["--namespace", ns]
    source_rule = {
        "apiGroups": [""],
        "resources": [source.plural],
        "resourceNames": [source.name],
        "verbs": ["get", "list", "watch"],
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name, "labels": labels},
            "rules": [
                {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
                # Targets are any namespace the selector matches; writes are by server-side apply.
                {
                    "apiGroups": [""],
                    "resources": ["secrets"],
                    "verbs": ["get", "list", "watch", "create", "patch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": labels},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "rules": [
                {
                    "apiGroups": ["coordination.k8s.io"],
                    "resources": ["leases"],
                    "verbs": ["get", "create", "update"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": f"{name}-source", "namespace": source.namespace, "labels": labels},
            "rules": [source_rule],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": f"{name}-source", "namespace": source.namespace, "labels": labels},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": f"{name}-source",
            },
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": name,
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": 65532,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "containers": [
                            {
                                "name": "sync",
                                "image": image,
                                "args": args,
                                "ports": [{"name": "metrics", "containerPort": 8080}],
                                "readinessProbe": {
                                    "httpGet": {"path": "/readyz", "port": "metrics"}
                                },
                                "livenessProbe": {
                                    "httpGet": {"path": "/healthz", "port": "metrics"}
                                },
                                "resources": {
                                    "requests": {"cpu": "10m", "memory": "64Mi"},
                                    "limits": {"memory": "256Mi"},
                                },
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                            }
                        ],
                    },
                },
            },
        },
    ]
