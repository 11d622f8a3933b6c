"""``airtrust render``: everything apply would send, as files for GitOps.

The manifests are the very dictionaries ``apply`` sends (built by
:func:`~airtrust.plan.desired.build_desired`), serialised as YAML. Secrets
holding a private key (TLS) are written 0600; commit them only to an
encrypted store (sealed-secrets, SOPS).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from airtrust.controller.helmsteps import HelmStep
from airtrust.controller.reconcile import (
    Session,
    _roles,
    desired_objects,
    gather_facts,
    offline_facts,
)
from airtrust.errors import OutputExistsError
from airtrust.files import OutputSet
from airtrust.kube.helm import nested_values
from airtrust.plan.model import Desired


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-") or "x"


def _file_name(index: int, d: Desired) -> str:
    ns = f"{_slug(d.namespace)}-" if d.namespace else ""
    return f"{index:03d}-{d.kind.lower()}-{ns}{_slug(d.name)}.yaml"


def render(
    session: Session, out: Path, *, force: bool = False, offline: bool = False
) -> list[Path]:
    if out.exists() and any(out.iterdir()) and not force:
        raise OutputExistsError(f"{out} is not empty", hint="pass --force or choose another --out")
    facts = offline_facts(session) if offline else gather_facts(session)
    desired = desired_objects(session, facts)
    outputs = OutputSet(force=True)
    by_context: dict[str, list[Desired]] = {}
    for d in desired:
        by_context.setdefault(d.context, []).append(d)
    for context, items in sorted(by_context.items()):
        folder = out / _slug(context)
        resources = []
        patches = []
        for index, d in enumerate(items):
            if d.manifest is None:
                if d.patches:
                    patches.append(
                        {
                            "target": {"kind": d.kind, "namespace": d.namespace, "name": d.name},
                            "patch": [
                                op
                                for p, old, new in d.patches
                                for op in (
                                    {"op": "test", "path": p, "value": old},
                                    {"op": "replace", "path": p, "value": new},
                                )
                            ],
                        }
                    )
                continue
            name = _file_name(index, d)
            resources.append(name)
            holds_key = d.manifest.get("type") == "kubernetes.io/tls"
            outputs.add(
                folder / name, yaml.safe_dump(d.manifest, sort_keys=True).encode(), secret=holds_key
            )
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": resources,
        }
        outputs.add(folder / "kustomization.yaml", yaml.safe_dump(kustomization).encode())
        if patches:
            outputs.add(
                folder / "image-patches.json",
                (json.dumps(patches, indent=2, sort_keys=True) + "\n").encode(),
            )
    commands = [
        "#!/bin/sh",
        "# Helm steps for the custom CA (written by airtrust render).",
        "set -e",
    ]
    sidecar_values = session.config.images.strategy == "helm-values"
    for context, roles in sorted(_roles(session.config).items()):
        for role in sorted(roles):
            release = session.profile.release(role)
            if release is None:
                continue
            values = session.profile.helm_values(
                role, session.version, sidecar_values=sidecar_values
            )
            step = HelmStep(
                context,
                role,
                release.release,
                release.namespace,
                release.chart,
                values,
                None,
                False,
                None,
            )
            values_file = out / "helm" / _slug(context) / f"{release.release}.values.yaml"
            outputs.add(values_file, yaml.safe_dump(nested_values(values)).encode())
            commands.append(step.command())
    outputs.add(out / "helm" / "commands.sh", ("\n".join(commands) + "\n").encode())
    return outputs.commit()
