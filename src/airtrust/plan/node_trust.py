"""What a node's container runtime must hold to trust the local registry, per runtime.

Pure: given the runtime, the registries, the bundle and what the files hold today, the
files as they must be. Each format is the runtime's own, and a file someone else wrote
is edited, never replaced: in containerd's ``hosts.toml`` only the ``ca`` of the
matching host changes (mirrors, capabilities and other hosts stay), in k3s/RKE2's
``registries.yaml`` only ``configs.<host>.tls.ca_file``. Every edit is re-read and
compared with the original before it is offered, so a change outside those keys is a
bug caught here, not a broken node.

Paths are the node's own (absolute, as the runtime reads them); the use case puts
them under the root it was given (``/`` on a node, ``/host`` in the agent's pod).

k3s and RKE2 read ``registries.yaml`` only when they start, so for them a file written
is not yet a CA trusted: :func:`k3s_not_loaded` judges from what they render into
containerd's folder on start whether the running service has loaded it, and until
then the node agent says :data:`PENDING_ANNOTATION` instead of :data:`CA_ANNOTATION`.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import json
import re
import tomllib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import yaml

from airtrust.errors import NodeTrustError

__all__ = [
    "BACKUP_SUFFIX",
    "CA_ANNOTATION",
    "CA_FILE",
    "CONTAINERD2_DEFAULT_CONFIG_PATH",
    "CONTAINERD_CONFIG",
    "DEFAULT_CERTS_DIRS",
    "K3S_CA_DIR",
    "K3S_GENERATED",
    "K3S_LIKE",
    "K3S_RECORD",
    "PENDING_ANNOTATION",
    "REGISTRIES_ANNOTATION",
    "REGISTRIES_FILE",
    "FileChange",
    "Registry",
    "Runtime",
    "containerd_certs_dir",
    "containerd_hosts_toml",
    "detect_runtime",
    "k3s_ca_files",
    "k3s_not_loaded",
    "k3s_registries_yaml",
    "k3s_restart_command",
    "node_files",
    "node_lacks",
    "parse_registry",
    "pending_restart_command",
    "pending_restart_value",
    "registries_held",
    "registries_value",
    "registry_ca_digest",
]

CA_FILE = "airtrust-ca.crt"
#: on the Node: the sha256 of the bundle its runtime trusts, so doctor and
#: ``rotate finish`` can read what each node holds without exec
CA_ANNOTATION = "airtrust.io/registry-ca-sha256"
#: on the Node: the registries (``host[:port]``, sorted, comma-separated) the agent gave
#: that bundle to, so a registry added to airtrust.yaml but not to the agent is seen
REGISTRIES_ANNOTATION = "airtrust.io/registry-ca-registries"
#: on the Node, k3s/RKE2 only: the bundle is on disk but the running service has not
#: loaded registries.yaml yet (it reads it only at start); the value starts with the
#: restart command (:func:`pending_restart_value`). While it is set the node does NOT
#: hold the bundle: the agent leaves :data:`CA_ANNOTATION` alone until it is loaded.
PENDING_ANNOTATION = "airtrust.io/registry-ca-pending-restart"
#: a file someone else wrote, as it was before airtrust first edited it
BACKUP_SUFFIX = ".airtrust-backup"


def registry_ca_digest(bundle_pem: bytes) -> str:
    """What the agent writes into :data:`CA_ANNOTATION` for a bundle (``Bundle.to_pem()``,
    which sorts and dedupes, so the same CAs give the same digest whoever computes it):
    the one function the agent, doctor and ``rotate finish`` share."""
    return hashlib.sha256(bundle_pem).hexdigest()


def registries_value(registries: Sequence[Registry]) -> str:
    """What the agent writes into :data:`REGISTRIES_ANNOTATION`."""
    return ",".join(sorted({str(r) for r in registries}))


def registries_held(annotations: Mapping[str, str]) -> frozenset[str]:
    """The registries a node's agent says it covers (none when it says nothing)."""
    value = annotations.get(REGISTRIES_ANNOTATION) or ""
    return frozenset(r for r in value.split(",") if r)


def node_lacks(
    annotations: Mapping[str, str], digests: Collection[str], registries: Sequence[Registry]
) -> str | None:
    """Why a node's runtime does not hold one of ``digests`` (bundle digests, see
    :func:`registry_ca_digest`) for every one of ``registries``, as its agent reports it;
    None when it does. A node without the annotation holds nothing airtrust gave it."""
    pending = annotations.get(PENDING_ANNOTATION)
    if pending:
        return f"its runtime has not loaded the bundle yet ({PENDING_ANNOTATION}: {pending})"
    held = annotations.get(CA_ANNOTATION)
    if held is None:
        return f"no {CA_ANNOTATION} annotation (no airtrust agent ran there)"
    if held not in digests:
        return f"holds bundle sha256 {held[:12]}…"
    missing = sorted({str(r) for r in registries} - registries_held(annotations))
    if missing:
        return f"its agent does not cover {', '.join(missing)} ({REGISTRIES_ANNOTATION})"
    return None


class Runtime(enum.StrEnum):
    CONTAINERD = "containerd"
    CRIO = "crio"
    DOCKER = "docker"
    K3S = "k3s"
    RKE2 = "rke2"


#: where each runtime looks for per-registry trust, as installed by its packages
DEFAULT_CERTS_DIRS: Mapping[Runtime, str] = {
    Runtime.CONTAINERD: "/etc/containerd/certs.d",
    Runtime.CRIO: "/etc/containers/certs.d",
    Runtime.DOCKER: "/etc/docker/certs.d",
    Runtime.K3S: "/etc/rancher/k3s",
    Runtime.RKE2: "/etc/rancher/rke2",
}
CONTAINERD_CONFIG = "/etc/containerd/config.toml"
# What a root holds, in the order a node with several is judged: k3s and RKE2 bundle
# their own containerd, so they come before it.
_MARKERS: tuple[tuple[Runtime, str], ...] = (
    (Runtime.K3S, "etc/rancher/k3s"),
    (Runtime.RKE2, "etc/rancher/rke2"),
    (Runtime.CONTAINERD, "etc/containerd"),
    (Runtime.CRIO, "etc/crio"),
    (Runtime.DOCKER, "etc/docker"),
)
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")


@dataclass(frozen=True, order=True)
class Registry:
    """A registry as runtimes name it: host and optional port, nothing else."""

    host: str
    port: int | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" if self.port else host

    @property
    def openshift_key(self) -> str:
        """``image.config.openshift.io``'s ConfigMap key: ``host..port`` (a key cannot hold
        a colon)."""
        return f"{self.host}..{self.port}" if self.port else self.host


def parse_registry(text: str) -> Registry:
    """``host[:port]``; a scheme, a path or anything else is refused in one line."""
    given = text.strip()
    fix = f"give the registry as HOST[:PORT], e.g. {_suggest(given)}"
    if "://" in given:
        raise NodeTrustError(f"registry {text!r} has a scheme", hint=fix, reference="bad-registry")
    if "/" in given or "?" in given or "#" in given or "@" in given:
        raise NodeTrustError(f"registry {text!r} has a path", hint=fix, reference="bad-registry")
    host, port = given, None
    if given.startswith("["):
        host, _, rest = given[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise NodeTrustError(
                    f"registry {text!r} is not HOST[:PORT]", hint=fix, reference="bad-registry"
                )
            port = _port(text, rest[1:], fix)
    elif given.count(":") == 1:
        host, raw = given.split(":")
        port = _port(text, raw, fix)
    if not host or not (_HOST.match(host) or _is_ip(host)):
        raise NodeTrustError(
            f"registry {text!r} is not HOST[:PORT]", hint=fix, reference="bad-registry"
        )
    return Registry(host.lower(), port)


def _port(text: str, raw: str, fix: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise NodeTrustError(
            f"registry {text!r}: port {raw!r} is not 1-65535", hint=fix, reference="bad-registry"
        )
    return int(raw)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _suggest(given: str) -> str:
    rest = given.split("://", 1)[-1]
    return rest.split("/", 1)[0] or "registry.local:5000"


def detect_runtime(exists: Callable[[str], bool]) -> Runtime:
    """The runtime a root holds (``exists`` answers for paths relative to it)."""
    for runtime, marker in _MARKERS:
        if exists(marker):
            return runtime
    raise NodeTrustError(
        "no container runtime found under the root (looked for "
        + ", ".join(f"/{m}" for _, m in _MARKERS)
        + ")",
        hint="give --root the node's root filesystem, or name the runtime with --runtime",
        reference="no-runtime",
    )


# --- containerd ---------------------------------------------------------------------------


#: containerd 2.x's CRI images plugin reads this ``config_path`` when its config sets
#: none (``containerd config default`` prints it); 1.x reads no hosts.toml then
CONTAINERD2_DEFAULT_CONFIG_PATH = "/etc/containerd/certs.d:/etc/docker/certs.d"


def containerd_certs_dir(config_text: str, config_path: str) -> str:
    """Where containerd reads ``hosts.toml`` (its ``config_path``), or an error with the
    exact lines to add: airtrust never edits containerd's config nor restarts it.

    The section follows the config's ``version``: 1 (``[plugins.cri]``, containerd 1.x's
    default when no version is given), 2 (``plugins."io.containerd.grpc.v1.cri"``) and 3
    (containerd 2.x, ``plugins."io.containerd.cri.v1.images"``, whose default
    ``config_path`` applies when the file sets none)."""
    try:
        config = tomllib.loads(config_text)
    except tomllib.TOMLDecodeError as exc:
        raise NodeTrustError(
            f"{config_path} is not TOML: {exc}",
            hint="fix the file; containerd would not start with it either",
            reference="bad-containerd-config",
        ) from None
    version = int(config.get("version", 1))
    plugins = config.get("plugins") or {}
    plugin = {3: "io.containerd.cri.v1.images", 2: "io.containerd.grpc.v1.cri"}.get(
        min(version, 3), "cri"
    )
    section = f"plugins.{plugin}.registry" if plugin == "cri" else f'plugins."{plugin}".registry'
    registry = (plugins.get(plugin) or {}).get("registry") or {}
    path = registry.get("config_path")
    if path is None and version >= 3:
        path = CONTAINERD2_DEFAULT_CONFIG_PATH
    if isinstance(path, str) and path:
        # containerd takes a list separated by ':'; the first is where files go.
        return path.split(":")[0]
    header = f"[{section}]"
    key = f'config_path = "{DEFAULT_CERTS_DIRS[Runtime.CONTAINERD]}"'
    error = NodeTrustError(
        f"{config_path} (containerd, config version {version}) sets no registry config_path, "
        "so containerd reads no hosts.toml",
        hint=f"add these two lines to {config_path} (node install prints them as they are "
        f"pasted), then restart containerd once: {header} / {key}",
        reference="containerd-no-config-path",
    )
    # The lines as TOML, one per line (a PEP 678 note): node install prints them on
    # stdout, since the error itself is one line on stderr.
    error.add_note(f"{header}\n  {key}")
    raise error


def containerd_hosts_toml(existing: str | None, registry: Registry, ca_file: str) -> str:
    """``hosts.toml`` for ``registry`` with ``ca_file`` trusted; an existing file keeps
    everything but the matching host's ``ca`` (to which ``ca_file`` is added)."""
    url = f"https://{registry}"
    if existing is None or not existing.strip():
        return (
            f'server = "{url}"\n\n[host."{url}"]\n'
            f'  capabilities = ["pull", "resolve"]\n  ca = "{ca_file}"\n'
        )
    before = _toml(existing)
    hosts = before.get("host") or {}
    if url in hosts:
        text = _set_table_ca(existing, url, _with(hosts[url].get("ca"), ca_file))
    elif before.get("server") == url:
        # The registry is the file's server: its TLS settings are the top-level keys.
        text = _set_top_ca(existing, _with(before.get("ca"), ca_file))
    else:
        # A host of its own, after the ones already there (the mirrors stay first).
        text = existing.rstrip("\n") + (
            f'\n\n[host."{url}"]\n  capabilities = ["pull", "resolve"]\n  ca = "{ca_file}"\n'
        )
    after = _toml(text)
    _same_but_ca(before, after, url)
    return text


def _toml(text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise NodeTrustError(
            f"hosts.toml is not TOML: {exc}",
            hint="fix or move the file; containerd ignores it as it is",
            reference="bad-hosts-toml",
        ) from None


def _with(current: object, ca_file: str) -> str | list[str]:
    if current is None or current == ca_file:
        return ca_file
    if isinstance(current, str):
        values = [current]
    elif isinstance(current, list):
        values = [str(v) for v in current]
    else:
        values = []
    return values if ca_file in values else [*values, ca_file]


def _ca_line(value: str | list[str], indent: str) -> str:
    return f"{indent}ca = {json.dumps(value)}\n"


_KEY_CA = re.compile(r"^(\s*)ca\s*=")
_TABLE = re.compile(r"^\s*\[")


def _value_end(lines: list[str], start: int) -> int:
    """The line after a key's value (arrays may span lines)."""
    value = lines[start].split("=", 1)[1].strip()
    if not value.startswith("[") or value.count("[") <= value.count("]"):
        return start + 1
    depth = value.count("[") - value.count("]")
    i = start + 1
    while i < len(lines) and depth > 0:
        depth += lines[i].count("[") - lines[i].count("]")
        i += 1
    return i


def _set_in(lines: list[str], start: int, end: int, value: str | list[str], indent: str) -> str:
    for i in range(start, end):
        m = _KEY_CA.match(lines[i])
        if m:
            j = _value_end(lines, i)
            return "".join([*lines[:i], _ca_line(value, m.group(1)), *lines[j:]])
    return "".join([*lines[:end], _ca_line(value, indent), *lines[end:]])


def _set_table_ca(text: str, url: str, value: str | list[str]) -> str:
    lines = text.splitlines(keepends=True)
    header = re.compile(r'^\s*\[\s*host\s*\.\s*"' + re.escape(url) + r'"\s*\]')
    start = next(i for i, line in enumerate(lines) if header.match(line))
    end = next((i for i in range(start + 1, len(lines)) if _TABLE.match(lines[i])), len(lines))
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1  # new keys go after the table's last key, not after blank lines
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    return _set_in(lines, start + 1, end, value, "  ")


def _set_top_ca(text: str, value: str | list[str]) -> str:
    lines = text.splitlines(keepends=True)
    end = next((i for i, line in enumerate(lines) if _TABLE.match(line)), len(lines))
    for i in range(end):
        if _KEY_CA.match(lines[i]):
            return _set_in(lines, 0, end, value, "")
    server = next(i for i in range(end) if lines[i].lstrip().startswith("server"))
    return "".join([*lines[: server + 1], _ca_line(value, ""), *lines[server + 1 :]])


def _same_but_ca(before: dict[str, Any], after: dict[str, Any], url: str) -> None:
    def strip(doc: dict[str, Any]) -> dict[str, Any]:
        out = json.loads(json.dumps(doc))
        out.pop("ca", None)
        (out.get("host") or {}).get(url, {}).pop("ca", None)
        if url in (out.get("host") or {}) and url not in (before.get("host") or {}):
            out["host"].pop(url)
        return dict(out)

    if strip(before) != strip(after):
        raise NodeTrustError(  # a bug in the edit above, never the user's input
            "editing hosts.toml would change more than the registry's ca; nothing written",
            hint="report this with the file; set the ca line by hand meanwhile",
            reference="hosts-toml-edit",
        )


# --- k3s / RKE2 ---------------------------------------------------------------------------

K3S_LIKE = frozenset({Runtime.K3S, Runtime.RKE2})
REGISTRIES_FILE = "registries.yaml"
#: k3s/RKE2: airtrust's own folder on the node, for the CA files ``registries.yaml``
#: names and (as the node agent) its record and backups. Not ``/etc/rancher/<runtime>``:
#: that folder also holds ``k3s.yaml``/``rke2.yaml`` (the cluster-admin kubeconfig) on a
#: server, so the agent's pod mounts only ``registries.yaml`` from it, and this folder
#: beside ``node install``'s record (``/var/lib/airtrust``) instead of a folder inside
#: it, which k3s's uninstall script would delete with everything in it.
K3S_CA_DIR = "/var/lib/airtrust/registry-ca"
#: the node agent's record (``node install`` on a host root keeps its usual one)
K3S_RECORD = f"{K3S_CA_DIR}/node-trust.json"
#: what k3s/RKE2 render on every start from registries.yaml (``<data-dir>/agent/etc/
#: containerd``; k3s pkg/agent/config ``Containerd.Config`` and ``Containerd.Registry``):
#: ``config.toml``, and since k3s 1.26.13/1.27.10/1.28.6/1.29.1 ``certs.d/<host>/
#: hosts.toml`` with ``ca = [...]`` for a registry with TLS settings
K3S_GENERATED: Mapping[Runtime, str] = {
    Runtime.K3S: "/var/lib/rancher/k3s/agent/etc/containerd",
    Runtime.RKE2: "/var/lib/rancher/rke2/agent/etc/containerd",
}
_SERVICES: Mapping[Runtime, tuple[str, str]] = {
    Runtime.K3S: ("k3s", "k3s-agent"),
    Runtime.RKE2: ("rke2-server", "rke2-agent"),
}


def k3s_ca_files(registries: Sequence[Registry]) -> dict[Registry, str]:
    """The CA file ``registries.yaml`` names per registry, in :data:`K3S_CA_DIR`."""
    return {r: f"{K3S_CA_DIR}/{str(r).replace(':', '_')}-ca.crt" for r in registries}


def k3s_restart_command(runtime: Runtime, *, server: bool) -> str:
    """The one command that makes k3s/RKE2 load registries.yaml on this node: the server's
    service on a server (a control-plane node), the agent's elsewhere."""
    services = _SERVICES[runtime]
    return f"systemctl restart {services[0] if server else services[1]}"


def pending_restart_value(command: str, registries: Sequence[Registry], digest: str) -> str:
    """What the agent writes into :data:`PENDING_ANNOTATION`: the command first (doctor's
    fix, :func:`pending_restart_command`), then what it waits for."""
    names = ", ".join(sorted({str(r) for r in registries}))
    return f"{command} (to load registries.yaml for {names}; bundle sha256 {digest[:12]}…)"


def pending_restart_command(value: str) -> str:
    """The restart command a :data:`PENDING_ANNOTATION` value starts with."""
    return value.split(" (", 1)[0]


def k3s_not_loaded(
    runtime: Runtime, registries: Sequence[Registry], read: Callable[[str], bytes | None]
) -> list[Registry]:
    """The registries whose CA file (:func:`k3s_ca_files`) the running k3s/RKE2 has not
    loaded, judged from what it rendered into :data:`K3S_GENERATED` when it last
    started: the ``hosts.toml`` of the registry's ``certs.d`` folder (``host:port``, or
    ``host_port_`` as Windows names it) naming the file in a ``ca`` at the top or in a
    ``[host."…"]`` table, or (k3s before certs.d) ``config.toml``'s
    ``registry.configs."<host>".tls.ca_file``. ``read`` gives a node path's bytes.

    Only the file's name matters: containerd reads the CA file itself on each pull, so a
    new bundle in the same file (a rotation) needs no restart once the name is loaded."""
    generated = K3S_GENERATED[runtime]
    config = _toml_or_empty(read(f"{generated}/config.toml"))
    out = []
    for registry, ca_file in k3s_ca_files(registries).items():
        name = str(registry)
        folders = [name]
        if registry.port:
            folders.append(f"{name.rsplit(':', 1)[0]}_{registry.port}_")
        docs = [_toml_or_empty(read(f"{generated}/certs.d/{f}/hosts.toml")) for f in folders]
        named = [c for doc in docs for c in _hosts_cas(doc)] + _config_cas(config, name)
        if ca_file not in named:
            out.append(registry)
    return out


def _toml_or_empty(raw: bytes | None) -> dict[str, Any]:
    """A file k3s renders; absent or half-written (it is rewritten on start) is nothing."""
    if raw is None:
        return {}
    try:
        return tomllib.loads(raw.decode(errors="replace"))
    except tomllib.TOMLDecodeError:
        return {}


def _cas(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value] if isinstance(value, list) else []


def _hosts_cas(doc: Mapping[str, Any]) -> list[str]:
    hosts = doc.get("host")
    tables = list(hosts.values()) if isinstance(hosts, dict) else []
    return _cas(doc.get("ca")) + [
        c for t in tables if isinstance(t, dict) for c in _cas(t.get("ca"))
    ]


def _config_cas(config: Mapping[str, Any], host: str) -> list[str]:
    plugins = config.get("plugins")
    out: list[str] = []
    for plugin in plugins.values() if isinstance(plugins, dict) else []:
        try:
            out += _cas(plugin["registry"]["configs"][host]["tls"]["ca_file"])
        except (KeyError, TypeError):
            continue
    return out


def k3s_registries_yaml(existing: str | None, cas: Mapping[Registry, str]) -> str:
    """``registries.yaml`` with ``configs."<host:port>".tls.ca_file`` set for each registry;
    everything else in the file kept."""
    try:
        doc = yaml.safe_load(existing) if existing else {}
    except yaml.YAMLError as exc:
        raise NodeTrustError(
            f"registries.yaml is not YAML: {exc}".splitlines()[0],
            hint="fix the file; k3s/RKE2 would not read it either",
            reference="bad-registries-yaml",
        ) from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise NodeTrustError(
            "registries.yaml does not hold a mapping",
            hint="fix the file; k3s/RKE2 would not read it either",
            reference="bad-registries-yaml",
        )
    configs = doc.setdefault("configs", {}) or {}
    doc["configs"] = configs
    for registry, ca_file in sorted(cas.items(), key=lambda item: str(item[0])):
        entry = configs.setdefault(str(registry), {}) or {}
        configs[str(registry)] = entry
        tls = entry.setdefault("tls", {}) or {}
        entry["tls"] = tls
        tls["ca_file"] = ca_file
    return yaml.safe_dump(doc, sort_keys=False)


# --- every runtime ------------------------------------------------------------------------


@dataclass(frozen=True)
class FileChange:
    """One file as it must be on the node (``path`` absolute, as the runtime reads it)."""

    path: str
    content: bytes
    why: str
    #: where the file as someone else wrote it is kept before airtrust first edits it
    #: (None: beside it, with :data:`BACKUP_SUFFIX`)
    backup: str | None = None
    #: the node agent's pod mounts this file on its own (a file hostPath): there it can
    #: only be rewritten in place, a rename would leave the container the old inode
    mounted_alone: bool = False


def node_files(
    runtime: Runtime,
    registries: Sequence[Registry],
    bundle_pem: bytes,
    read: Callable[[str], bytes | None],
    *,
    certs_dir: str | None = None,
    written: Mapping[str, bytes] | None = None,
) -> tuple[list[FileChange], str | None]:
    """The files ``runtime`` needs to trust ``bundle_pem`` for ``registries``, and the
    restart it needs for them, if any (k3s and RKE2 read registries.yaml at start only).
    ``read`` gives a node path's current bytes (None when absent); ``written`` what
    airtrust last wrote to a path, so a CA it put there before (the old one, after a
    rotation) is not taken for someone else's."""
    written = written or {}
    if not registries:
        raise NodeTrustError(
            "no registry given",
            hint="name each registry the nodes pull from: --registry HOST[:PORT]",
            reference="no-registry",
        )
    base = PurePosixPath(certs_dir or DEFAULT_CERTS_DIRS[runtime])
    out: list[FileChange] = []
    if runtime is Runtime.CONTAINERD:
        for registry in registries:
            folder = base / str(registry)
            ca = str(folder / CA_FILE)
            out.append(FileChange(ca, bundle_pem, f"the CA {registry} is trusted with"))
            current = read(str(folder / "hosts.toml"))
            text = containerd_hosts_toml(
                current.decode() if current is not None else None, registry, ca
            )
            out.append(
                FileChange(
                    str(folder / "hosts.toml"),
                    text.encode(),
                    f"containerd's ca for https://{registry}",
                )
            )
        return out, None
    if runtime in (Runtime.CRIO, Runtime.DOCKER):
        for registry in registries:
            path = str(base / str(registry) / "ca.crt")
            merged = _merged_pem(read(path), written.get(path), bundle_pem)
            out.append(FileChange(path, merged, f"{runtime} trusts these CAs for {registry}"))
        return out, None
    cas = k3s_ca_files(registries)
    for registry, path in sorted(cas.items(), key=lambda item: str(item[0])):
        out.append(FileChange(path, bundle_pem, f"the CA {registry} is trusted with"))
    # Last: registries.yaml names the CA files, which must be there first.
    config = str(base / REGISTRIES_FILE)
    current = read(config)
    text = k3s_registries_yaml(current.decode() if current is not None else None, cas)
    out.append(
        FileChange(
            config,
            text.encode(),
            f"{runtime}'s tls.ca_file per registry",
            backup=f"{K3S_CA_DIR}/{REGISTRIES_FILE}{BACKUP_SUFFIX}",
            mounted_alone=True,
        )
    )
    server = k3s_restart_command(runtime, server=True)
    agent = k3s_restart_command(runtime, server=False).rsplit(" ", 1)[1]
    return (
        out,
        f"{server} (on an agent node: {agent}): {runtime} reads registries.yaml only at start",
    )


_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\s*", re.S)


def _merged_pem(current: bytes | None, before: bytes | None, bundle_pem: bytes) -> bytes:
    """A ``ca.crt`` someone else wrote keeps their certificates; airtrust's follow (what
    airtrust wrote ``before`` is its own, dropped when the bundle no longer has it)."""
    if current is None:
        return bundle_pem
    ours = {m.group(0).strip() for m in _PEM.finditer(bundle_pem + (before or b""))}
    kept = [m.group(0).strip() for m in _PEM.finditer(current) if m.group(0).strip() not in ours]
    return b"".join(block + b"\n" for block in kept) + bundle_pem
