"""Platform profiles: the names, namespaces and Helm values of one platform, as data.

A profile is the only place where a platform's objects are named, so
supporting another platform means adding a TOML file, not code paths.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from airtrust.errors import ConfigError

DEFAULT_PROFILE = "runai"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretTarget(_Model):
    namespace: str
    role: str
    labels: dict[str, str] = {}
    labels_since: str | None = None
    openshift_only: bool = False


class CASecret(_Model):
    name: str
    key: str
    targets: tuple[SecretTarget, ...]


class TLSSecret(_Model):
    namespace: str
    name: str
    helm_value: str | None = None


class HelmRelease(_Model):
    role: str
    chart: str
    release: str
    namespace: str
    set: dict[str, str] = {}


class Profile(_Model):
    name: str
    description: str
    ca_secret: CASecret
    tls_secret: TLSSecret
    helm: tuple[HelmRelease, ...] = ()

    def manual_steps(self, *, bundle: Path, cert: Path, key: Path) -> list[str]:
        """The documented kubectl/helm commands, for people who apply by hand."""
        steps = []
        for target in self.ca_secret.targets:
            if target.openshift_only:
                continue
            steps.append(
                f"kubectl create namespace {target.namespace} --dry-run=client -o yaml | "
                f"kubectl apply -f - && kubectl -n {target.namespace} create secret generic "
                f"{self.ca_secret.name} --from-file={self.ca_secret.key}={bundle}"
            )
        tls = self.tls_secret
        steps.append(
            f"kubectl -n {tls.namespace} create secret tls {tls.name} --cert={cert} --key={key}"
        )
        for release in self.helm:
            sets = " ".join(f"--set {k}={v}" for k, v in release.set.items())
            steps.append(
                f"helm upgrade --install {release.release} {release.chart} "
                f"-n {release.namespace} {sets}"
            )
        return steps


def load_profile(name: str = DEFAULT_PROFILE) -> Profile:
    try:
        text = resources.files(__package__).joinpath(f"{name}.toml").read_text()
    except FileNotFoundError as exc:
        raise ConfigError(f"no profile named '{name}'", hint="use --profile runai") from exc
    try:
        return Profile.model_validate(tomllib.loads(text))
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ConfigError(
            f"profile '{name}' is invalid: {exc}", hint="fix the profile file"
        ) from exc
