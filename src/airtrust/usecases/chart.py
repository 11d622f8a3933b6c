"""``chart values``: the Helm chart's values from the ``airtrust.yaml`` a user already has.

The chart (``charts/airtrust``) is hand-written Helm templates that give, for the same
settings, exactly the objects ``airtrust render --controller / --inject --service /
--node-trust`` writes (tests/integration/test_chart.py compares them object by
object). This module is the bridge from the config to those settings, so that a
platform team never retypes its scope into a values file: the CA (the config's
``ca.bundle``, validated and canonical, public certificates only: it becomes the
webhook's ``caBundle``), the Run:ai version, the context's roles and OpenShift
setting, the workload namespaces and selector, the same ones ``render --controller
-c`` reads through :meth:`~airtrust.plan.topology.SyncScope.from_config`.

The values file holds no key and no token, so it is written 0644, all or nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from airtrust.config import Config
from airtrust.errors import InputError
from airtrust.files import OutputSet
from airtrust.plan.model import FailurePolicy
from airtrust.plan.node_trust import Runtime, parse_registry
from airtrust.plan.topology import SyncScope
from airtrust.profiles import Profile
from airtrust.usecases.session import Session

__all__ = ["ChartSettings", "chart_values", "write_chart_values"]


@dataclass(frozen=True)
class ChartSettings:
    """What the config does not say: the image, which parts, the node trust registries."""

    image: str | None = None
    context: str | None = None
    webhook: bool = False
    failure_policy: FailurePolicy = FailurePolicy.IGNORE
    registries: tuple[str, ...] = ()
    runtime: str = "containerd"
    controller: bool = True
    #: the profile's Run:ai project namespaces instead of the config's selector
    runai_projects: bool = False


def _image(ref: str) -> dict[str, str]:
    """``REPO[:TAG]`` as the chart's image.repository and image.tag (a ``:`` after the
    last ``/`` is the tag; one before it is a registry port). A digest is refused: the
    chart names images by tag."""
    if "@" in ref:
        raise InputError(
            f"--image {ref}: the chart takes REPOSITORY[:TAG], not a digest",
            hint="give the tag the image was pushed with, e.g. reg.local/airtrust:0.1.0",
        )
    slash = ref.rfind("/")
    repository, sep, tag = ref.rpartition(":") if ref.rfind(":") > slash else (ref, "", "")
    if not repository or (sep and not tag):
        raise InputError(f"--image {ref} is not REPOSITORY[:TAG]", hint="e.g. reg.local/airtrust")
    return {"repository": repository, "tag": tag}


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the PEM bundle) as literal blocks: a reader sees the PEM."""


def _literal(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _literal)


def chart_values(
    config: Config, profile: Profile, bundle_pem: bytes, settings: ChartSettings
) -> dict[str, object]:
    """The chart's values for ``config`` (pure). Only what the config or ``settings``
    decide is written; everything else keeps the chart's defaults."""
    if settings.runtime not in set(Runtime):
        raise InputError(
            f"--runtime {settings.runtime} is not one of {', '.join(Runtime)}",
            hint="the node's container runtime, e.g. --runtime containerd",
        )
    scope = SyncScope.from_config(config, profile, settings.context)
    if settings.runai_projects and scope.selector:
        raise InputError(
            f"--runai-projects and the config's workloads.selector ({scope.selector}) "
            "exclude each other",
            hint="drop workloads.selector from airtrust.yaml or --runai-projects",
        )
    registries = [str(parse_registry(r)) for r in settings.registries]
    values: dict[str, object] = {
        "ca": {"bundle": bundle_pem.decode()},
        "platform": {"version": scope.version, "openshift": scope.openshift},
        "scope": {
            "namespaces": list(scope.namespaces),
            "selector": scope.selector or "",
            "runaiProjects": settings.runai_projects,
        },
        "controller": {"enabled": settings.controller, "roles": [str(r) for r in scope.roles]},
        "webhook": {"enabled": settings.webhook, "failurePolicy": str(settings.failure_policy)},
        "nodeAgent": {
            "enabled": bool(registries),
            "registries": registries,
            "runtime": settings.runtime,
        },
    }
    if settings.image:
        values["image"] = _image(settings.image)
    return values


def write_chart_values(
    session: Session, out: Path, settings: ChartSettings, *, force: bool = False
) -> Path:
    """The values file from the session's bundle: the config's, validated as of the
    session's clock (a key, a non-CA or an expired CA is refused before anything is
    written), or old + new while a rotation recorded in the cluster is in progress, so
    that a ``helm upgrade`` then carries the new CA to the webhook's caBundle too."""
    values = chart_values(session.config, session.profile, session.bundle.to_pem(), settings)
    header = (
        "# airtrust chart values, written by `airtrust chart values` from the config.\n"
        "# helm install airtrust oci://REG/charts/airtrust --version V -n NS -f THIS_FILE\n"
    )
    outputs = OutputSet(force=force)
    body = yaml.dump(values, Dumper=_Dumper, sort_keys=True)
    outputs.add(out, (header + body).encode())
    (written,) = outputs.commit()
    return written
