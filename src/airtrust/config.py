"""``airtrust.yaml``: what airtrust should make true on which clusters.

Validated with pydantic; every error names the offending key and the file.
Relative paths are relative to the config file, so a folder with the config,
the bundle and the certificates can be moved or committed as a whole.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from airtrust.errors import ConfigError, NodeTrustError
from airtrust.pki.inspect import EXPIRY_WARNING_DAYS
from airtrust.plan.node_trust import Registry, Runtime, parse_registry

__all__ = [
    "DEFAULT_FILE",
    "TEMPLATE",
    "Backup",
    "CASource",
    "Cluster",
    "ClusterConfigPaths",
    "Config",
    "ControlPlane",
    "Doctor",
    "Images",
    "NodeTrust",
    "NodeTrustSettings",
    "TLSSource",
    "Workloads",
    "config_text",
    "load_config",
    "parse_config",
]

DEFAULT_FILE = "airtrust.yaml"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CASource(_Model):
    bundle: tuple[Path, ...] = Field(min_length=1)


class TLSSource(_Model):
    cert: Path
    key: Path
    secret_name: str | None = None


def _registries(value: object) -> object:
    """``host[:port]`` each, normalised (``Reg.Local:5000`` and ``reg.local:5000`` are one
    registry to a runtime); a scheme or a path is refused in the one-line error."""
    if not isinstance(value, list | tuple):
        return value
    out: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise ValueError(f"registry {item!r} is not a string HOST[:PORT]")
        try:
            name = str(parse_registry(item))
        except NodeTrustError as exc:
            raise ValueError(exc.message) from None
        if name not in out:
            out.append(name)
    return tuple(out)


class NodeTrust(_Model):
    """How nodes' container runtimes trust the registries (``node install``/``node sync``,
    ``render --node-trust``); ``doctor``, ``rotate start`` (which waits for every node to
    hold old + new) and ``rotate finish`` judge the nodes only when it is enabled, since
    a cluster whose nodes are trusted by other means has no annotation to read."""

    enabled: bool = True
    runtime: Runtime = Runtime.CONTAINERD
    #: The runtime's per-registry folder on the nodes (default the runtime's own).
    certs_dir: str | None = None
    #: containerd's config on the nodes, read for its config_path (node install).
    containerd_config: str | None = None
    #: The CA the agent follows, KIND/NS/NAME[:KEY] (render --node-trust's --source).
    source: str | None = None
    #: Images ``doctor --probe`` pulls on every node (default: the patched sidecar
    #: images in images.references, the pulls that matter).
    probe_images: tuple[str, ...] = ()
    #: OpenShift: also the cluster proxy's trustedCA (user-ca-bundle); off by default,
    #: since a change there rolls every node.
    openshift_proxy_ca: bool = False

    @field_validator("certs_dir", "containerd_config")
    @classmethod
    def _node_path(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("/") or ".." in value.split("/")):
            raise ValueError(f"{value!r} is not an absolute path on the node")
        return value


@dataclass(frozen=True)
class NodeTrustSettings:
    """What one cluster's nodes must trust: the global registries plus the cluster's own,
    with the cluster's node_trust if it has one, else the global one."""

    registries: tuple[Registry, ...]
    node_trust: NodeTrust | None

    @property
    def enabled(self) -> bool:
        return self.node_trust is not None and self.node_trust.enabled and bool(self.registries)

    @property
    def runtime(self) -> Runtime | None:
        return self.node_trust.runtime if self.node_trust is not None else None

    @property
    def certs_dir(self) -> str | None:
        return self.node_trust.certs_dir if self.node_trust is not None else None

    @property
    def source(self) -> str | None:
        return self.node_trust.source if self.node_trust is not None else None

    @property
    def probe_images(self) -> tuple[str, ...]:
        return self.node_trust.probe_images if self.node_trust is not None else ()


class ControlPlane(_Model):
    context: str


class Cluster(_Model):
    context: str
    openshift: Literal["auto", "true", "false"] = "auto"
    domain: str | None = None
    inference_domain: str | None = None
    #: Where ``inject serve`` runs (render --inject --service NS/...): apply then issues
    #: its serving certificate (secret airtrust-inject-tls) and rotation renews it.
    inject_namespace: str | None = None
    #: Registries this cluster's nodes pull from, besides the global ``registries``.
    registries: tuple[str, ...] = ()
    #: This cluster's node trust, instead of the global one (another runtime, say).
    node_trust: NodeTrust | None = None

    _check_registries = field_validator("registries", mode="before")(_registries)

    @field_validator("openshift", mode="before")
    @classmethod
    def _bool_words(cls, value: object) -> object:
        return str(value).lower() if isinstance(value, bool) else value


class Workloads(_Model):
    namespaces: tuple[str, ...] = ()
    selector: str | None = None


class Backup(_Model):
    mode: Literal["secret", "file", "none"] = "secret"
    dir: Path = Path("backups")


class Images(_Model):
    strategy: Literal["patch", "helm-values"] = "patch"
    #: source repository -> patched image reference (written by ``image patch --sidecars``).
    references: dict[str, str] = {}
    #: How doctor reaches the registry that holds the sidecar images.
    registry_ca: Path | None = None
    insecure: bool = False
    #: helm-values only: keep the sidecars' CA in this separate secret (in the cluster
    #: namespace) instead of reusing the global one; airtrust writes it with the key the
    #: charts expect.
    sidecar_ca_secret: str | None = None


class Doctor(_Model):
    #: Warn when a CA or certificate expires within this many days.
    warn_days: int = EXPIRY_WARNING_DAYS
    #: Image for the in-cluster probe Job (must be pullable in the air gap and have sh,
    #: curl, grep and sha256sum: Debian, UBI and busybox-with-curl images do).
    probe_image: str | None = None
    #: Run the probe on the node's network (clusters without a pod network).
    probe_host_network: bool = False


class ClusterConfigPaths(_Model):
    #: The cluster-config fields that name the sidecar images, instead of searching: a list
    #: of JSON pointers (the fields must exist), or pointer -> sidecar role (s3, git), so a
    #: field that does not exist yet is added.
    image_paths: tuple[str, ...] | dict[str, str] = ()

    def pins(self) -> dict[str, str | None]:
        if isinstance(self.image_paths, dict):
            return dict(self.image_paths)
        return dict.fromkeys(self.image_paths)


class Config(_Model):
    profile: str = "runai"
    version: str | None = None
    domain: str
    ca: CASource
    tls: TLSSource | None = None
    kubeconfig: Path | None = None
    control_plane: ControlPlane | None = None
    clusters: tuple[Cluster, ...] = ()
    issue_from: Path | None = None
    workloads: Workloads = Workloads()
    backup: Backup = Backup()
    images: Images = Images()
    cluster_config: ClusterConfigPaths = ClusterConfigPaths()
    doctor: Doctor = Doctor()
    #: Registries every cluster's nodes pull from (HOST[:PORT]).
    registries: tuple[str, ...] = ()
    node_trust: NodeTrust | None = None

    _check_registries = field_validator("registries", mode="before")(_registries)

    def node_trust_for(self, context: str | None) -> NodeTrustSettings:
        """The node trust of ``context``; of every cluster together when None (one agent
        rendered for all)."""
        chosen = [c for c in self.clusters if context is None or c.context == context]
        names = list(self.registries)
        for cluster in chosen:
            names += [r for r in cluster.registries if r not in names]
        own = [c.node_trust for c in chosen if c.node_trust is not None]
        settings = own[0] if context is not None and own else self.node_trust
        return NodeTrustSettings(tuple(parse_registry(r) for r in names), settings)

    def contexts(self) -> list[str]:
        seen: dict[str, None] = {}
        if self.control_plane is not None:
            seen[self.control_plane.context] = None
        for cluster in self.clusters:
            seen.setdefault(cluster.context, None)
        return list(seen)


def _resolve(config: Config, base: Path) -> Config:
    def fix(p: Path | None) -> Path | None:
        return None if p is None else (p if p.is_absolute() else base / p)

    update: dict[str, object] = {
        "ca": CASource(bundle=tuple(fix(p) or p for p in config.ca.bundle)),
        "kubeconfig": fix(config.kubeconfig),
        "issue_from": fix(config.issue_from),
        "backup": Backup(mode=config.backup.mode, dir=fix(config.backup.dir) or Path()),
        "images": config.images.model_copy(update={"registry_ca": fix(config.images.registry_ca)}),
    }
    if config.tls is not None:
        update["tls"] = TLSSource(
            cert=fix(config.tls.cert) or config.tls.cert,
            key=fix(config.tls.key) or config.tls.key,
            secret_name=config.tls.secret_name,
        )
    return config.model_copy(update=update)


def parse_config(text: str, *, source: str, base: Path) -> Config:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(
            f"{source}{where} is not valid YAML", hint="fix the syntax (indentation, quotes)"
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} is not a mapping", hint="start from 'airtrust init'")
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "(top level)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(
            f"{source}: {key}: {first['msg']}{more}",
            hint=f"fix '{key}' in {source} (see the comments 'airtrust init' writes)",
        ) from None
    if config.control_plane is None and not config.clusters:
        raise ConfigError(
            f"{source} names no cluster",
            hint="set control_plane.context and/or clusters[].context",
        )
    return _resolve(config, base)


def load_config(path: Path) -> Config:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(
            f"{path} does not exist", hint="write one with 'airtrust init' or pass -c FILE"
        ) from None
    return parse_config(text, source=str(path), base=path.resolve().parent)


TEMPLATE = """\
# airtrust.yaml: what airtrust makes true on your clusters.
# Paths are relative to this file. Docs: airtrust --help, README.md.

# Platform profile and its version (selects version-dependent objects and labels).
profile: runai
version: "{version}"

# Control-plane FQDN (CN/SAN of the control plane's TLS certificate).
domain: {domain}

# The CA bundle distributed as {ca_secret}/{ca_key}: public certificates only.
# PEM, DER or PKCS#7 files; a quickstart folder's ca-bundle.pem fits.
ca:
  bundle:
    - {bundle}

# The control plane's TLS certificate (leaf + intermediates) and key, for the
# kubernetes.io/tls Secret {tls_secret}. Remove on OpenShift (router certificate).
tls:
  cert: {cert}
  key: {key}
  # secret_name: {tls_secret}   # if the chart's global.ingress.tlsSecretName differs

# kubeconfig to use (default: $KUBECONFIG, else ~/.kube/config).
{kubeconfig_line}

# Context of the control-plane cluster.
control_plane:
  context: {context}

# GPU clusters (any number). The control-plane context doubles as a cluster
# when it also runs the cluster operator.
clusters:
{clusters}
#  - context: gpu-2
#    openshift: auto            # auto | true | false
#    domain: gpu-2.example.com  # issue the cluster TLS secrets from issue_from
#    inference_domain: runai-inference.example.com

# CA folder used to issue cluster TLS certificates (cluster domain, wildcard, inference).
# issue_from: ./ca

# Extra namespaces whose workloads need the bundle (names or a label selector).
workloads:
  namespaces: []
  # selector: airtrust.io/ca=true

# Before overwriting data airtrust did not write: copy it to a Secret in the
# same namespace (secret), to a 0600 file under dir (file), or not at all (none).
backup:
  mode: secret
  dir: backups

# Git/S3 sidecars: patch = rebuilt images (airtrust image patch --sidecars);
# helm-values = the chart's customCAGit/customCAS3 values (newer versions only).
images:
  strategy: patch
  references: {{}}

# Pin the cluster-config fields that name the sidecar images, instead of letting
# airtrust find them: JSON pointer -> sidecar (s3 or git); a missing field is added.
#   image_paths: {{/spec/s3/image: s3, /spec/git/image: git}}
cluster_config:
  image_paths: []
"""


def config_text(
    *,
    domain: str,
    context: str,
    clusters: list[str],
    bundle: str,
    cert: str,
    key: str,
    version: str | None,
    kubeconfig: str | None = None,
) -> str:
    """The commented config, validated by parsing it back before anyone sees it."""
    from airtrust.pki.names import normalise_dns_name
    from airtrust.profiles import load_profile

    profile = load_profile()

    def quote(value: str) -> str:
        return shlex.quote(value) if value != shlex.quote(value) else value

    text = TEMPLATE.format(
        version=version or profile.default_version,
        domain=normalise_dns_name(domain),
        bundle=quote(bundle),
        cert=quote(cert),
        key=quote(key),
        context=quote(context),
        clusters="\n".join(f"  - context: {quote(c)}" for c in clusters),
        kubeconfig_line=f"kubeconfig: {quote(kubeconfig)}"
        if kubeconfig
        else "# kubeconfig: ~/.kube/config",
        ca_secret=profile.ca_secret.name,
        ca_key=profile.ca_secret.key,
        tls_secret=profile.tls_secret.name,
    )
    parse_config(text, source="generated config", base=Path.cwd())
    return text
