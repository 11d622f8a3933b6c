"""``airtrust render``: everything apply would send, as files for GitOps.

The manifests are the very dictionaries ``apply`` sends (built by
:func:`~airtrust.plan.desired.build_desired`), serialised as YAML. Secrets
holding a private key (TLS) are written 0600; commit them only to an
encrypted store (sealed-secrets, SOPS).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from airtrust.controller.apply import desired_objects, gather_facts, offline_facts
from airtrust.controller.session import Session
from airtrust.errors import OutputExistsError
from airtrust.files import OutputSet
from airtrust.pki.tlssecret import TLS_TYPE
from airtrust.plan.desired import findings
from airtrust.plan.helm import helm_steps, nested_values
from airtrust.plan.manifests import kustomization, rendered_namespace
from airtrust.plan.model import Desired, JsonObj
from airtrust.plan.oidc import apiserver_flags, kubeconfig_user

__all__ = ["Rendered", "render", "write_manifests"]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-") or "x"


def _file_name(index: int, d: Desired) -> str:
    ns = f"{_slug(d.namespace)}-" if d.namespace else ""
    return f"{index:03d}-{d.kind.lower()}-{ns}{_slug(d.name)}.yaml"


def write_manifests(outputs: OutputSet, folder: Path, docs: Sequence[tuple[str, JsonObj]]) -> None:
    """Each (file name, manifest) into ``folder`` with a kustomization listing them;
    manifests that hold a private key are written 0600."""
    for name, doc in docs:
        holds_key = doc.get("type") == TLS_TYPE
        outputs.add(folder / name, yaml.safe_dump(doc, sort_keys=True).encode(), secret=holds_key)
    outputs.add(
        folder / "kustomization.yaml",
        yaml.safe_dump(kustomization([name for name, _ in docs])).encode(),
    )


@dataclass(frozen=True)
class Rendered:
    files: list[Path]
    #: what the user must act on (e.g. sidecar image fields not renderable offline)
    findings: list[str]


def render(
    session: Session,
    out: Path,
    *,
    force: bool = False,
    offline: bool = False,
    with_namespaces: bool = False,
) -> Rendered:
    """Write the manifests. Namespaces are left out (a GitOps prune of an app that lists
    them would delete them); ``with_namespaces`` adds the platform's own namespaces,
    marked so Argo CD and Flux never prune them. System namespaces are never written."""
    if out.exists() and any(out.iterdir()) and not force:
        raise OutputExistsError(f"{out} is not empty", hint="pass --force or choose another --out")
    facts = offline_facts(session.config) if offline else gather_facts(session)
    desired = desired_objects(session, facts)
    notes = findings(session.config, session.profile, facts)
    platform = set(session.profile.platform_namespaces) if with_namespaces else set()
    outputs = OutputSet(force=True)
    by_context: dict[str, list[Desired]] = {}
    for d in desired:
        by_context.setdefault(d.context, []).append(d)
    for context, items in sorted(by_context.items()):
        folder = out / _slug(context)
        docs: list[tuple[str, JsonObj]] = []
        patches = []
        for index, d in enumerate(items):
            if d.kind == "Namespace":
                if d.name in platform:
                    docs.append((_file_name(index, d), rendered_namespace(d.name)))
            elif d.manifest is not None:
                docs.append((_file_name(index, d), d.manifest))
            elif d.patches:
                patches.append(
                    {
                        "target": {"kind": d.kind, "namespace": d.namespace, "name": d.name},
                        "patch": [op for patch in d.patches for op in patch.ops()],
                    }
                )
        write_manifests(outputs, folder, docs)
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
    for step in helm_steps(session.config, session.profile, session.version, {}):
        values_file = out / "helm" / _slug(step.context) / f"{step.release}.values.yaml"
        outputs.add(values_file, yaml.safe_dump(nested_values(step.values)).encode())
        commands.append(step.command())
    outputs.add(out / "helm" / "commands.sh", ("\n".join(commands) + "\n").encode())
    oidc = session.profile.cluster_oidc
    if oidc is not None and session.config.clusters:
        # Researcher authentication: what each cluster's apiserver and kubeconfig need.
        flags = apiserver_flags(oidc, session.config.domain)
        outputs.add(
            out / "oidc" / "kube-apiserver-flags.txt",
            (
                f"# kube-apiserver flags: trust {session.config.domain}'s identity provider.\n"
                f"# Copy the CA bundle to {oidc.ca_file} on every control-plane node first.\n"
                + "\n".join(flags)
                + "\n"
            ).encode(),
        )
        outputs.add(out / "oidc" / "ca-bundle.pem", session.bundle.to_pem())
        user = kubeconfig_user(oidc, session.config.domain, session.bundle.to_pem())
        outputs.add(
            out / "oidc" / "kubeconfig-user.yaml", yaml.safe_dump(user, sort_keys=True).encode()
        )
    return Rendered(outputs.commit(), notes)
