"""``node install``: a node's container runtime made to trust the local registry.

The files come from ``plan.node_trust``; this module reads what the root holds, writes
what changed (all or nothing, through ``files.OutputSet``), and keeps a record of what
airtrust wrote (``/var/lib/airtrust/node-trust.json`` under the root), so a re-run
writes nothing, ``--remove`` takes back exactly that (a file airtrust created is
deleted, a file it edited gets its backup back) and a CA airtrust put into a shared
``ca.crt`` before is not mistaken for someone else's after a rotation.

The node agent (:class:`NodeAgent`) runs the same install in its pod, where k3s/RKE2's
``registries.yaml`` is a single-file bind mount, which no rename can replace (in the
pod it is a mount point; on the host a new inode the pod would never see), so there
that file is rewritten in place, after the CA files it names. Since
k3s/RKE2 read it only at start, the agent then annotates the node as waiting for a
restart, not as holding the bundle, until the running service has loaded it.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from airtrust.clock import utc_now
from airtrust.errors import AirtrustError, NodeTrustError
from airtrust.files import OutputSet
from airtrust.kube.api import JsonObj, KubeAPI
from airtrust.kube.source import read_source
from airtrust.plan.node_trust import (
    BACKUP_SUFFIX,
    CA_ANNOTATION,
    CONTAINERD_CONFIG,
    K3S_CA_DIR,
    K3S_LIKE,
    K3S_RECORD,
    PENDING_ANNOTATION,
    REGISTRIES_ANNOTATION,
    FileChange,
    Registry,
    Runtime,
    containerd_certs_dir,
    detect_runtime,
    k3s_not_loaded,
    k3s_restart_command,
    node_files,
    pending_restart_value,
    registries_value,
    registry_ca_digest,
)
from airtrust.plan.openshift_trust import CONFIG_API, CONFIG_NAMESPACE, trusted_ca_name
from airtrust.plan.source import Source
from airtrust.plan.topology import cluster_entry, is_openshift

if TYPE_CHECKING:
    from airtrust.config import NodeTrustSettings
    from airtrust.usecases.session import Session

log = logging.getLogger("airtrust.node")

__all__ = [
    "CA_ANNOTATION",
    "STATE",
    "AgentNodes",
    "NodeAgent",
    "NodeChange",
    "NodeTrustReport",
    "OpenShiftCAs",
    "agent_nodes",
    "agent_record",
    "install",
    "open_agent",
    "remove",
]

STATE = "/var/lib/airtrust/node-trust.json"
#: a node is a k3s/RKE2 server when it carries this label (k3s sets it on servers)
CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"


@dataclass(frozen=True)
class NodeChange:
    path: str  # as the node reads it
    action: str  # "write", "unchanged", "delete", "restore", "kept"
    why: str


@dataclass
class NodeTrustReport:
    runtime: Runtime
    root: Path
    dry_run: bool
    changes: list[NodeChange] = field(default_factory=list)
    restart: str | None = None
    #: the node agent, k3s/RKE2: the restart it waits for (what PENDING_ANNOTATION says)
    pending_restart: str | None = None

    @property
    def writes(self) -> int:
        return sum(c.action in ("write", "delete", "restore") for c in self.changes)

    def to_dict(self) -> dict[str, object]:
        return {
            "runtime": str(self.runtime),
            "root": str(self.root),
            "dry_run": self.dry_run,
            "writes": self.writes,
            "restart": self.restart,
            "changes": [{"path": c.path, "action": c.action, "why": c.why} for c in self.changes],
        }


def _under(root: Path, node_path: str) -> Path:
    return root / node_path.lstrip("/")


def _read(root: Path, node_path: str) -> bytes | None:
    path = _under(root, node_path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise NodeTrustError(
            f"{path} is a folder, where the runtime expects a file",
            hint="move it away",
            reference="node-file-is-folder",
        ) from None
    except OSError as exc:
        raise NodeTrustError(
            f"cannot read {path}: {exc.strerror}",
            hint="run as root on the node (or mount its root with --root)",
            reference="node-unreadable",
        ) from None


def _state(root: Path, state: str = STATE) -> dict[str, dict[str, object]]:
    raw = _read(root, state)
    if raw is None:
        return {}
    try:
        files = json.loads(raw).get("files", {})
    except (ValueError, AttributeError):
        raise NodeTrustError(
            f"{_under(root, state)} is not airtrust's record",
            hint="move it away; airtrust then treats every file as not its own",
            reference="node-state",
        ) from None
    return dict(files)


def _state_bytes(files: dict[str, dict[str, object]]) -> bytes:
    return (json.dumps({"version": 1, "files": files}, indent=2, sort_keys=True) + "\n").encode()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def resolve_runtime(root: Path, runtime: Runtime | None) -> Runtime:
    if runtime is not None:
        return runtime
    return detect_runtime(lambda rel: (root / rel).exists())


def certs_dir_for(
    root: Path, runtime: Runtime, certs_dir: str | None, containerd_config: str | None
) -> str | None:
    """Where the runtime reads per-registry trust: as given, or for containerd from its
    own config (``config_path``), which airtrust reads and never edits."""
    if certs_dir is not None or runtime is not Runtime.CONTAINERD:
        return certs_dir
    config = containerd_config or CONTAINERD_CONFIG
    text = _read(root, config)
    if text is None:
        raise NodeTrustError(
            f"{_under(root, config)} does not exist",
            hint="give containerd's config with --containerd-config, or its "
            "certs.d folder with --certs-dir",
            reference="no-containerd-config",
        )
    return containerd_certs_dir(text.decode(errors="replace"), str(_under(root, config)))


def install(
    root: Path,
    registries: Sequence[Registry],
    bundle_pem: bytes,
    *,
    runtime: Runtime | None = None,
    certs_dir: str | None = None,
    containerd_config: str | None = None,
    dry_run: bool = False,
    state_file: str | None = None,
    in_place: bool = False,
) -> NodeTrustReport:
    """``state_file`` is where the record lives (a node path): the agent's pod mounts only
    the runtime's folder, so it keeps the record there. ``in_place`` (the agent): a file
    its pod mounts alone (``FileChange.mounted_alone``) is rewritten in place, after
    everything else is written, and the record last."""
    chosen = resolve_runtime(root, runtime)
    folder = certs_dir_for(root, chosen, certs_dir, containerd_config)
    state_file = state_file or STATE
    state = _state(root, state_file)
    written = {
        p: base64.b64decode(str(entry["ours"])) for p, entry in state.items() if entry.get("ours")
    }
    seen: dict[str, bytes | None] = {}

    def read(node_path: str) -> bytes | None:
        # Each file once: node_files reads what it edits, the loop below compares.
        if node_path not in seen:
            seen[node_path] = _read(root, node_path)
        return seen[node_path]

    files, restart = node_files(
        chosen, registries, bundle_pem, read, certs_dir=folder, written=written
    )
    report = NodeTrustReport(chosen, root, dry_run)
    out = OutputSet(force=True)
    later: list[FileChange] = []  # in place, once the rest is written
    for change in files:
        current = read(change.path)
        if current == change.content:
            report.changes.append(NodeChange(change.path, "unchanged", change.why))
            continue
        report.changes.append(NodeChange(change.path, "write", change.why))
        entry = dict(state.get(change.path) or {"created": current is None})
        if current is not None and not entry.get("created") and "backup" not in entry:
            # The first time airtrust edits a file someone else wrote: its backup.
            backup = change.backup or change.path + BACKUP_SUFFIX
            out.add(_under(root, backup), current)
            entry["backup"] = backup
        entry["sha256"] = _sha(change.content)
        entry["ours"] = _ours(change, bundle_pem)
        state[change.path] = entry
        if in_place and change.mounted_alone:
            later.append(change)
        else:
            out.add(_under(root, change.path), change.content)
    report.restart = restart if report.writes else None
    if not report.writes or dry_run:
        return report
    record = _under(root, state_file)
    if later:
        out.commit()  # the CA files and backups first: the file written in place names them
        for change in later:
            _write_in_place(_under(root, change.path), change.content)
        out = OutputSet(force=True)
    out.add(record, _state_bytes(state))
    out.commit()
    return report


def _write_in_place(path: Path, data: bytes) -> None:
    """Truncate, write and fsync ``path`` itself, keeping its inode and mode: a file
    bind-mounted on its own (a file hostPath) cannot be replaced by a rename (over a
    mount point it fails; a new inode the container would not see). Not atomic, which
    is safe for k3s/RKE2's registries.yaml: they read it only when they start."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.ftruncate(fd, 0)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise NodeTrustError(
            f"cannot write {path} in place: {exc.strerror}",
            hint="the agent must run as root with the file mounted read-write "
            "(render --node-trust); the CA files are written, the next pass retries",
            reference="node-unwritable",
        ) from None


def _ours(change: FileChange, bundle_pem: bytes) -> str | None:
    """The part of a file that is airtrust's CA (for a ``ca.crt`` shared with others)."""
    if change.path.endswith(".crt"):
        return base64.b64encode(bundle_pem).decode()
    return None


def remove(
    root: Path,
    *,
    dry_run: bool = False,
    runtime: Runtime | None = None,
    state_file: str | None = None,
) -> NodeTrustReport:
    """Take back what airtrust wrote, and only that: a file changed since is kept."""
    state_file = state_file or STATE
    state = _state(root, state_file)
    chosen = runtime or (resolve_runtime(root, None) if state else Runtime.CONTAINERD)
    report = NodeTrustReport(chosen, root, dry_run)
    deletions: list[Path] = []
    out = OutputSet(force=True)
    for path, entry in sorted(state.items()):
        current = _read(root, path)
        if current is None:
            continue
        if _sha(current) != entry.get("sha256"):
            report.changes.append(NodeChange(path, "kept", "changed since airtrust wrote it"))
            continue
        backup = entry.get("backup")
        if isinstance(backup, str) and (saved := _read(root, backup)) is not None:
            report.changes.append(NodeChange(path, "restore", f"from {backup}"))
            out.add(_under(root, path), saved)
            deletions.append(_under(root, backup))
        else:
            report.changes.append(NodeChange(path, "delete", "airtrust created it"))
            deletions.append(_under(root, path))
    if state:
        deletions.append(_under(root, state_file))
    if dry_run or not report.writes:
        return report
    out.commit()
    for gone in deletions:
        gone.unlink(missing_ok=True)
        _prune(gone.parent, root)
    return report


def _prune(folder: Path, root: Path) -> None:
    """A folder airtrust's files leave empty: a registry's own (``certs.d/HOST:PORT``) or
    airtrust's; never a runtime's folder, which other tools may expect to exist."""
    if folder == root or not folder.is_dir() or any(folder.iterdir()):
        return
    if folder.name in ("airtrust", PurePosixPath(K3S_CA_DIR).name) or (
        "." in folder.name or ":" in folder.name
    ):
        with contextlib.suppress(OSError):  # a mount point in the agent's pod stays
            folder.rmdir()


@dataclass
class NodeAgent:
    """``node sync``: the node's runtime follows the CA source (old + new during a
    rotation), rewritten on change, and the node says what it holds and for which
    registries. :meth:`serve_health` answers the readiness probe from the time of the
    last good pass, so Ready tells a working agent from one that merely started."""

    api: KubeAPI
    source: Source
    node: str
    root: Path
    registries: Sequence[Registry]
    runtime: Runtime | None = None
    certs_dir: str | None = None
    containerd_config: str | None = None
    state_file: str | None = None
    clock: Callable[[], dt.datetime] = utc_now
    stop: threading.Event = field(default_factory=threading.Event)
    #: ``time.monotonic()`` of the last good pass (None before the first)
    last_good: float | None = None
    #: the pending restart last logged, so it is said once, not every pass
    _pending_said: str | None = field(default=None, init=False, repr=False)

    def __enter__(self) -> NodeAgent:
        return self

    def __exit__(self, *_: object) -> None:
        self.api.close()

    def sync_once(self) -> NodeTrustReport:
        """One pass: the files as the source says, then the node's annotations. On
        k3s/RKE2 the node holds the bundle only once the running service has loaded
        registries.yaml (:func:`k3s_not_loaded`); until then the node says which restart
        it waits for (PENDING_ANNOTATION) and keeps the digest it had, so doctor and
        ``rotate finish`` do not count a CA the runtime cannot use yet."""
        bundle = read_source(self.api, self.source, self.clock())
        pem = bundle.to_pem()
        runtime = resolve_runtime(self.root, self.runtime)
        report = install(
            self.root,
            self.registries,
            pem,
            runtime=runtime,
            certs_dir=self.certs_dir,
            containerd_config=self.containerd_config,
            state_file=self.state_file,
            in_place=True,
        )
        live = self._node()
        digest = registry_ca_digest(pem)
        waiting = (
            k3s_not_loaded(runtime, self.registries, lambda p: _read(self.root, p))
            if runtime in K3S_LIKE
            else []
        )
        if waiting:
            labels = (live.get("metadata") or {}).get("labels") or {}
            command = k3s_restart_command(runtime, server=CONTROL_PLANE_LABEL in labels)
            report.pending_restart = pending_restart_value(command, waiting, digest)
            self._annotate(live, {PENDING_ANNOTATION: report.pending_restart})
            if report.pending_restart != self._pending_said:
                log.warning(
                    "node %s: %s has not loaded registries.yaml for %s, so it does not "
                    "trust the CA yet; run on the node: %s",
                    self.node, runtime, ", ".join(sorted(map(str, waiting))), command,
                )  # fmt: skip
        else:
            wanted = {
                CA_ANNOTATION: digest,
                REGISTRIES_ANNOTATION: registries_value(self.registries),
            }
            self._annotate(live, wanted, drop=(PENDING_ANNOTATION,))
        self._pending_said = report.pending_restart
        self.last_good = time.monotonic()
        return report

    def _node(self) -> JsonObj:
        live = self.api.get("v1", "nodes", None, self.node)
        if live is None:
            raise NodeTrustError(
                f"node {self.node} does not exist (context '{self.api.context}')",
                hint="pass the pod's node: env NODE_NAME from spec.nodeName",
                reference="no-node",
            )
        return live

    def _annotate(self, live: JsonObj, wanted: dict[str, str], drop: Sequence[str] = ()) -> None:
        """Set ``wanted`` and remove ``drop`` on the node, in one JSON patch, only where
        they differ from ``live``."""
        annotations = (live.get("metadata") or {}).get("annotations")
        changed = {k: v for k, v in wanted.items() if (annotations or {}).get(k) != v}
        gone = sorted(k for k in drop if k in (annotations or {}))
        if not changed and not gone:
            return
        if annotations is None:
            ops = [{"op": "add", "path": "/metadata/annotations", "value": changed}]
        else:
            ops = [
                {"op": "add", "path": f"/metadata/annotations/{_pointer(k)}", "value": v}
                for k, v in sorted(changed.items())
            ]
            ops += [{"op": "remove", "path": f"/metadata/annotations/{_pointer(k)}"} for k in gone]
        self.api.json_patch("v1", "nodes", None, self.node, ops)

    def stale(self, max_age: float) -> str | None:
        """Why the agent is not ready: no good pass yet, or the last one older than
        ``max_age`` seconds; None when it is fresh."""
        if self.last_good is None:
            return "no sync pass has succeeded yet"
        age = time.monotonic() - self.last_good
        if age > max_age:
            return f"the last good sync pass was {age:.0f} s ago (more than {max_age:.0f} s)"
        return None

    def serve_health(self, port: int, max_age: float) -> ThreadingHTTPServer:
        """``GET /readyz`` on ``port``: 200 while the last good pass is at most
        ``max_age`` seconds old, else 503 with the reason (in a thread of its own; the
        caller shuts the server down)."""
        agent = self

        class Health(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                why = agent.stale(max_age) if self.path == "/readyz" else "not found"
                code = 200 if why is None else (404 if why == "not found" else 503)
                body = (why or "ok").encode() + b"\n"
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:  # a probe every 10 s: no log line
                return

        server = ThreadingHTTPServer(("", port), Health)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def run(self, interval: float) -> None:
        """Until stopped: a bad source or an unwritable file is logged and retried, the
        files stay as they were (the last good bundle keeps the pulls working)."""
        while not self.stop.is_set():
            try:
                report = self.sync_once()
                if report.writes:
                    log.info("node %s: %d file(s) written", self.node, report.writes)
            except AirtrustError as exc:
                log.error("node %s: %s", self.node, exc.one_line())
            self.stop.wait(interval)


def _pointer(key: str) -> str:
    """An annotation key as a JSON pointer segment (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


def agent_record(runtime: str | None, certs_dir: str | None, state_file: str | None) -> str | None:
    """Where the agent keeps its record (a node path): as given, else in a folder its pod
    mounts: airtrust's own for k3s/RKE2, the runtime's ``certs_dir`` for the others."""
    if state_file is not None:
        return state_file
    if runtime in K3S_LIKE:
        return K3S_RECORD
    return f"{certs_dir.rstrip('/')}/.airtrust-node-trust.json" if certs_dir else None


def open_agent(
    source: str,
    node: str,
    root: Path,
    registries: Sequence[str],
    *,
    runtime: str | None = None,
    certs_dir: str | None = None,
    containerd_config: str | None = None,
    state_file: str | None = None,
    in_cluster: bool = False,
    kubeconfig: Path | None = None,
    context: str = "",
) -> NodeAgent:
    """The agent as ``node sync`` runs it; its record goes beside the runtime's files
    when only that folder is mounted (``certs_dir``), for k3s/RKE2 into airtrust's
    folder (``K3S_RECORD``), since their folder is not mounted."""
    from airtrust.plan.node_trust import parse_registry
    from airtrust.profiles import load_profile

    parsed = [parse_registry(r) for r in registries]
    where = Source.parse(source, load_profile().ca_secret.key)
    record = agent_record(runtime, certs_dir, state_file)
    api = KubeAPI.in_cluster() if in_cluster else KubeAPI.connect(context, kubeconfig=kubeconfig)
    return NodeAgent(
        api,
        where,
        node,
        root,
        parsed,
        runtime=Runtime(runtime) if runtime else None,
        certs_dir=certs_dir,
        containerd_config=containerd_config,
        state_file=record,
    )


@dataclass(frozen=True)
class OpenShiftCAs:
    """On OpenShift no agent runs: the Machine Config Operator gives the nodes the
    ConfigMap ``image.config.openshift.io/cluster`` names (``configmap``, None when it
    names none), whose ``data`` holds a CA bundle per registry key (``host..port``)."""

    configmap: str | None
    data: dict[str, str]


@dataclass(frozen=True)
class AgentNodes:
    """One context whose nodes airtrust makes trust the registries: its settings and its
    Nodes (by name), or why they could not be listed. On OpenShift (``openshift`` set)
    the nodes are not listed: what they are given is that ConfigMap."""

    context: str
    settings: NodeTrustSettings
    nodes: list[JsonObj]
    unreadable: str = ""
    openshift: OpenShiftCAs | None = None

    @staticmethod
    def annotations(node: JsonObj) -> dict[str, str]:
        raw = (node.get("metadata") or {}).get("annotations") or {}
        return {str(k): str(v) for k, v in raw.items()}

    @staticmethod
    def held(node: JsonObj) -> str | None:
        """The digest of the bundle the node's agent reports its runtime holds."""
        return AgentNodes.annotations(node).get(CA_ANNOTATION)


def agent_nodes(session: Session) -> list[AgentNodes]:
    """Per context with node trust enabled (``registries:`` and ``node_trust:``), its
    Nodes, or on OpenShift (decided once per context, as apply decides it) the registry
    CAs ConfigMap: what doctor's node-registry check and ``rotate start``/``finish`` all
    judge."""
    out = []
    for context, api in sorted(session.apis.items()):
        settings = session.config.node_trust_for(context)
        if not settings.enabled:
            continue
        entry = cluster_entry(session.config, context)
        try:
            setting = entry.openshift if entry is not None else "auto"
            if is_openshift(setting, session.profile, api.api_groups):
                out.append(AgentNodes(context, settings, [], openshift=_openshift_cas(api)))
                continue
            nodes = list(api.list_objects("v1", "nodes"))
        except AirtrustError as exc:
            out.append(AgentNodes(context, settings, [], exc.message))
            continue
        nodes.sort(key=lambda n: str(n["metadata"]["name"]))
        out.append(AgentNodes(context, settings, nodes))
    return out


def _openshift_cas(api: KubeAPI) -> OpenShiftCAs:
    name = trusted_ca_name(api.get(CONFIG_API, "images", None, "cluster"))
    live = api.get("v1", "configmaps", CONFIG_NAMESPACE, name) if name else None
    data = {str(k): str(v) for k, v in ((live or {}).get("data") or {}).items()}
    return OpenShiftCAs(name, data)
