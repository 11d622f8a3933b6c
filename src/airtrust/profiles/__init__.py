"""Platform profiles: the names, namespaces and Helm values of one platform, as data.

A profile is the only place where a platform's objects are named, so
supporting another platform means adding a TOML file, not code paths. Facts
that changed between platform versions carry a ``since`` version; the
methods here answer "what applies to version X".
"""

from __future__ import annotations

import tomllib
from importlib import resources

from pydantic import BaseModel, ConfigDict, ValidationError

from airtrust.errors import ConfigError

__all__ = [
    "DEFAULT_PROFILE",
    "CASecret",
    "ChartRename",
    "ClusterConfig",
    "ClusterOIDC",
    "ClusterTLS",
    "HelmRelease",
    "OpenShift",
    "Profile",
    "SecretTarget",
    "Sidecar",
    "SidecarValues",
    "TLSSecret",
    "load_profile",
    "version_key",
]

DEFAULT_PROFILE = "runai"


def version_key(version: str) -> tuple[int, ...]:
    """'2.18' -> (2, 18); raises ConfigError for anything else."""
    try:
        return tuple(int(p) for p in version.strip().lstrip("v").split("."))
    except ValueError:
        raise ConfigError(
            f"'{version}' is not a version number", hint="give it as MAJOR.MINOR, e.g. 2.20"
        ) from None


def _applies(since: str | None, version: str) -> bool:
    return since is None or version_key(version) >= version_key(since)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretTarget(_Model):
    namespace: str
    role: str
    labels: dict[str, str] = {}
    labels_since: str | None = None
    openshift_only: bool = False

    def labels_for(self, version: str) -> dict[str, str]:
        return dict(self.labels) if _applies(self.labels_since, version) else {}


class CASecret(_Model):
    name: str
    key: str
    targets: tuple[SecretTarget, ...]


class TLSSecret(_Model):
    namespace: str
    name: str
    helm_value: str | None = None


class ClusterTLS(_Model):
    kind: str
    namespace: str
    name: str
    names: tuple[str, ...]
    since: str | None = None


class ChartRename(_Model):
    #: the chart had this name in versions before ``before``
    before: str
    chart: str


class HelmRelease(_Model):
    role: str
    chart: str
    release: str
    namespace: str
    set: dict[str, str] = {}
    #: the chart repository name the docs use (``helm repo add REPO URL``)
    repo: str = ""
    renamed: tuple[ChartRename, ...] = ()
    #: values an install needs from the user (URLs, ids, secrets the platform hands out)
    install_values: tuple[str, ...] = ()

    def chart_for(self, version: str) -> str:
        """The chart's name in ``version``."""
        for rename in sorted(self.renamed, key=lambda r: version_key(r.before)):
            if version_key(version) < version_key(rename.before):
                return rename.chart
        return self.chart

    def reference(self, chart: str) -> str:
        """``REPO/CHART`` as the docs write it."""
        return f"{self.repo}/{chart}" if self.repo else chart


class SidecarValues(_Model):
    since: str
    role: str
    set: dict[str, str]
    #: added only when the sidecars' CA is kept in a separate secret ({secret} = its name)
    secret_set: dict[str, str] = {}
    #: the key that separate secret must hold
    secret_key: str = ""


class ClusterConfig(_Model):
    group: str
    version: str
    kind: str
    plural: str
    namespace: str
    name: str


class Sidecar(_Model):
    role: str
    repository: str
    tag: str

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}"


class ClusterOIDC(_Model):
    issuer_path: str
    client_id: str
    flags: dict[str, str] = {}
    ca_file: str


class OpenShift(_Model):
    detect_group: str


class Profile(_Model):
    name: str
    description: str
    default_version: str
    ca_secret: CASecret
    tls_secret: TLSSecret
    cluster_tls: tuple[ClusterTLS, ...] = ()
    helm: tuple[HelmRelease, ...] = ()
    sidecar_ca_values: SidecarValues | None = None
    cluster_config: ClusterConfig | None = None
    sidecars: tuple[Sidecar, ...] = ()
    openshift: OpenShift | None = None
    #: Served by the control plane's identity provider; doctor checks it when present.
    oidc_discovery_path: str | None = None
    #: How cluster apiservers trust the control plane's identity provider, when they must.
    cluster_oidc: ClusterOIDC | None = None
    #: Namespaces the platform lives in (never system ones): render may emit them on request.
    platform_namespaces: tuple[str, ...] = ()
    #: The platform's workload namespaces, as a label selector (``inject --projects``).
    project_namespace_selector: str | None = None

    def ca_targets(self, role: str, *, openshift: bool) -> list[SecretTarget]:
        return [
            t
            for t in self.ca_secret.targets
            if t.role == role and (openshift or not t.openshift_only)
        ]

    def cluster_tls_for(self, version: str) -> list[ClusterTLS]:
        return [c for c in self.cluster_tls if _applies(c.since, version)]

    def sidecar_values_supported(self, version: str) -> bool:
        return self.sidecar_ca_values is not None and _applies(
            self.sidecar_ca_values.since, version
        )

    def helm_values(
        self,
        role: str,
        version: str,
        *,
        sidecar_values: bool,
        sidecar_secret: str | None = None,
    ) -> dict[str, str]:
        """The --set values a release of this role needs, flattened."""
        values: dict[str, str] = {}
        for release in self.helm:
            if release.role == role:
                values.update(release.set)
        extra = self.sidecar_ca_values
        if sidecar_values and extra is not None and extra.role == role:
            if not _applies(extra.since, version):
                raise ConfigError(
                    f"{self.name} {version} has no Git/S3 CA values "
                    f"(they arrived in {extra.since})",
                    hint="set images.strategy to 'patch' to rebuild the sidecar images instead",
                )
            values.update(extra.set)
            if sidecar_secret:
                for key, value in extra.secret_set.items():
                    values[key] = value.format(secret=sidecar_secret)
        return values

    def release(self, role: str) -> HelmRelease | None:
        return next((r for r in self.helm if r.role == role), None)


def load_profile(name: str = DEFAULT_PROFILE) -> Profile:
    try:
        text = resources.files(__package__).joinpath(f"{name}.toml").read_text()
    except FileNotFoundError as exc:
        raise ConfigError(f"no profile named '{name}'", hint="use profile: runai") from exc
    try:
        return Profile.model_validate(tomllib.loads(text))
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ConfigError(
            f"profile '{name}' is invalid: {exc}", hint="fix the profile file"
        ) from exc
