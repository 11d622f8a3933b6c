"""Helm steps that enable the custom CA: which releases, which values, which command (pure).

What is deployed is read by the Kubernetes adapter (:mod:`airtrust.kube.helm`,
from the release Secrets); here it is only compared with what the profile
asks for and turned into the command an admin runs.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from airtrust.config import Config
from airtrust.plan.topology import roles_by_context
from airtrust.profiles import Profile

__all__ = [
    "HelmStep",
    "Release",
    "helm_steps",
    "in_effect",
    "is_true",
    "lookup",
    "merge_values",
    "nested_values",
]


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    revision: int
    status: str
    chart: str
    chart_version: str
    values: dict[str, Any]  # effective: chart defaults overlaid with user values


def merge_values(defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's coalescing: nested maps merge, anything else is replaced; null deletes."""
    out = dict(defaults)
    for key, value in overrides.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_values(out[key], value)
        else:
            out[key] = value
    return out


def lookup(values: Mapping[str, Any], dotted: str) -> Any:
    current: Any = values
    for part in dotted.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return None
        current = current[part]
    return current


def is_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def nested_values(flat: Mapping[str, str]) -> dict[str, Any]:
    """{'global.customCA.enabled': 'true'} -> nested YAML-ready values (booleans typed)."""
    out: dict[str, Any] = {}
    for dotted, value in sorted(flat.items()):
        node = out
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        typed: Any = {"true": True, "false": False}.get(value, value)
        node[parts[-1]] = typed
    return out


@dataclass(frozen=True)
class HelmStep:
    context: str
    role: str
    release: str
    namespace: str
    chart: str
    values: dict[str, str]
    installed: str | None  # "chart-version (revision N)" when deployed
    enabled: bool  # every value already in effect
    kubeconfig: str | None

    def command(self, chart_ref: str | None = None) -> str:
        parts = [
            "helm",
            "upgrade",
            "--install",
            self.release,
            chart_ref or self.chart,
            "--namespace",
            self.namespace,
            "--create-namespace",
            "--kube-context",
            self.context,
        ]
        if self.kubeconfig:
            parts += ["--kubeconfig", self.kubeconfig]
        parts.append("--reuse-values")
        for key, value in sorted(self.values.items()):
            parts += ["--set", f"{key}={value}"]
        return shlex.join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "command": self.command()}


def in_effect(values: Mapping[str, Any], wanted: Mapping[str, str]) -> bool:
    for key, want in wanted.items():
        have = lookup(values, key)
        if want in ("true", "false"):
            if is_true(have) != (want == "true"):
                return False
        elif str(have) != want:
            return False
    return True


def helm_steps(
    config: Config,
    profile: Profile,
    version: str,
    deployed: Mapping[tuple[str, str], Release | None],
    *,
    kubeconfig: str | None = None,
) -> list[HelmStep]:
    """One step per (context, role) that has a release in the profile.

    ``deployed`` maps (context, release name) to what is installed, if anything.
    """
    sidecar_values = config.images.strategy == "helm-values"
    steps = []
    for context, roles in sorted(roles_by_context(config).items()):
        for role in sorted(roles):
            release = profile.release(role)
            if release is None:
                continue
            values = profile.helm_values(
                role,
                version,
                sidecar_values=sidecar_values,
                sidecar_secret=config.images.sidecar_ca_secret,
            )
            live = deployed.get((context, release.release))
            steps.append(
                HelmStep(
                    context=context,
                    role=role,
                    release=release.release,
                    namespace=release.namespace,
                    chart=release.chart,
                    values=values,
                    installed=(
                        f"{live.chart}-{live.chart_version} (revision "
                        f"{live.revision}, {live.status})"
                    )
                    if live
                    else None,
                    enabled=live is not None and in_effect(live.values, values),
                    kubeconfig=kubeconfig,
                )
            )
    return steps
