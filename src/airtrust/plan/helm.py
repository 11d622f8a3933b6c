"""Helm steps that enable the custom CA: which releases, which values, which command (pure).

What is deployed is read by the Kubernetes adapter (:mod:`airtrust.kube.helm`,
from the release Secrets); here it is only compared with what the profile
asks for and turned into the command an admin runs.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from airtrust.config import Config
from airtrust.plan.topology import roles_by_context
from airtrust.profiles import Profile

__all__ = [
    "HelmCommand",
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
    #: what the user supplied (``helm get values``); may hold secrets, never printed
    user_values: dict[str, Any] = field(default_factory=dict, repr=False)


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
class HelmCommand:
    """One command of a Helm step; ``stdout_to`` redirects its output to a file."""

    argv: tuple[str, ...]
    stdout_to: str | None = None

    def shell(self) -> str:
        text = shlex.join(self.argv)
        return f"{text} > {shlex.quote(self.stdout_to)}" if self.stdout_to else text


@dataclass(frozen=True)
class HelmStep:
    """What one release needs for the custom CA, and the commands that never lose values.

    ``--set`` alone resets a release to the chart's defaults; ``--reuse-values`` with a
    *new* chart carries old values over the new chart's defaults. So: the same chart
    version is upgraded with ``--reuse-values``; another chart or version goes through
    ``helm get values`` into a file passed with ``-f`` (the documented upgrade path).
    """

    context: str
    role: str
    release: str
    namespace: str
    #: the chart as the docs name it (REPO/CHART), for the installed chart's name
    chart: str
    values: dict[str, str]
    installed: str | None  # "chart-version (revision N, status)" when deployed
    enabled: bool  # every value already in effect
    kubeconfig: str | None
    #: the deployed chart version (pinned in every upgrade), or None
    chart_version: str | None = None
    #: for an install: the version constraint the docs use (~MAJOR.MINOR.0)
    install_version: str = ""
    #: values an install needs from the user
    install_values: tuple[str, ...] = ()
    live: Release | None = field(default=None, repr=False, compare=False)

    def _target(self) -> list[str]:
        args = ["--namespace", self.namespace, "--kube-context", self.context]
        return args + (["--kubeconfig", self.kubeconfig] if self.kubeconfig else [])

    def _sets(self) -> list[str]:
        return [a for k, v in sorted(self.values.items()) for a in ("--set", f"{k}={v}")]

    def commands(
        self,
        chart: str | None = None,
        chart_version: str | None = None,
        *,
        saved: str | None = None,
        values_file: str | None = None,
    ) -> list[HelmCommand]:
        """The commands, for the repository chart or ``chart`` (an archive whose version
        is ``chart_version``). An install reads the values only the user has from
        ``values_file`` (default ``RELEASE.values.yaml``, which ``render`` writes)."""
        if self.installed is None:
            source = [chart] if chart else [self.chart, "--version", self.install_version]
            argv = ["helm", "upgrade", "--install", self.release, *source, *self._target()]
            values = ["-f", values_file or self.values_file]
            return [HelmCommand((*argv, "--create-namespace", *values, *self._sets()))]
        same = chart is None or chart_version == self.chart_version
        # A chart archive carries its version; a repository chart is pinned to the live one.
        source = [chart] if chart else [self.chart, "--version", self.chart_version or ""]
        if same:
            argv = ["helm", "upgrade", self.release, *source, *self._target(), "--reuse-values"]
            return [HelmCommand((*argv, *self._sets()))]
        saved = saved or f"{self.release}.values.yaml"
        get = ("helm", "get", "values", self.release, *self._target(), "-o", "yaml")
        argv = ["helm", "upgrade", self.release, *source, *self._target(), "-f", saved]
        return [HelmCommand(get, stdout_to=saved), HelmCommand((*argv, *self._sets()))]

    def command(
        self,
        chart: str | None = None,
        chart_version: str | None = None,
        *,
        values_file: str | None = None,
    ) -> str:
        """The commands as one shell line (``&&`` between them), to copy or to show."""
        commands = self.commands(chart, chart_version, values_file=values_file)
        return " && ".join(c.shell() for c in commands)

    @property
    def values_file(self) -> str:
        """The values file an install reads (``render`` writes it, per context)."""
        return f"{self.release}.values.yaml"

    @property
    def note(self) -> str:
        if self.installed is None and self.install_values:
            needed = ", ".join(self.install_values)
            return (
                f"not installed: put the values the install needs ({needed}) into "
                f"{self.values_file} (airtrust render writes it with the custom-CA values)"
            )
        return ""

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "live"}
        data["install_values"] = list(self.install_values)
        return {**data, "command": self.command(), "note": self.note}


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
            chart = release.reference(live.chart if live else release.chart_for(version))
            steps.append(
                HelmStep(
                    context=context,
                    role=role,
                    release=release.release,
                    namespace=release.namespace,
                    chart=chart,
                    values=values,
                    installed=(
                        f"{live.chart}-{live.chart_version} (revision "
                        f"{live.revision}, {live.status})"
                    )
                    if live
                    else None,
                    enabled=live is not None and in_effect(live.values, values),
                    kubeconfig=kubeconfig,
                    chart_version=live.chart_version if live else None,
                    install_version=f"~{version}.0",
                    install_values=release.install_values,
                    live=live,
                )
            )
    return steps
