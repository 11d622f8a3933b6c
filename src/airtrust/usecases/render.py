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

from airtrust.errors import InputError, OutputExistsError, OutputNotAFolder
from airtrust.files import OutputSet
from airtrust.pki.tlssecret import TLS_TYPE
from airtrust.plan.desired import findings
from airtrust.plan.helm import helm_steps, nested_values
from airtrust.plan.inject import INJECT_NAME, INJECT_TLS_SECRET, webhook_hosts, webhook_url
from airtrust.plan.manifests import (
    controller_manifests,
    inject_disruption_budget,
    inject_manifests,
    kustomization,
    namespace_manifest,
    rendered_namespace,
    secret_manifest,
    webhook_configuration,
)
from airtrust.plan.model import Desired, FailurePolicy, JsonObj
from airtrust.plan.node_agent import node_agent_objects
from airtrust.plan.node_trust import Registry, Runtime
from airtrust.plan.oidc import apiserver_flags, kubeconfig_user
from airtrust.plan.source import Source, SourceKind
from airtrust.plan.topology import SyncScope
from airtrust.profiles import Profile
from airtrust.usecases.apply import desired_objects, gather_facts, offline_facts
from airtrust.usecases.session import Session

__all__ = [
    "InClusterRender",
    "InjectService",
    "Rendered",
    "controller_objects",
    "inject_objects",
    "inject_service",
    "node_agent_render",
    "render",
    "write_in_cluster",
    "write_manifests",
]


def _check_folder(out: Path, *, force: bool) -> None:
    """``--out`` names a folder: new, empty, or (with ``force``) one to write into."""
    if out.exists() and not out.is_dir():
        raise OutputNotAFolder(
            f"{out} is a file, not a folder", hint="give --out a folder (new or empty)"
        )
    if out.exists() and any(out.iterdir()) and not force:
        raise OutputExistsError(f"{out} is not empty", hint="pass --force or choose another --out")


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
    _check_folder(out, force=force)
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
        "# Helm steps for the custom CA (written by airtrust render). Values files are",
        "# beside this script; an install also needs the values each file names.",
        "set -e",
        'cd "$(dirname "$0")"',
    ]
    for step in helm_steps(session.config, session.profile, session.version, {}):
        relative = f"{_slug(step.context)}/{step.values_file}"
        header = f"# {step.release} on context {step.context}: written by airtrust render.\n"
        if step.install_values:
            header += (
                f"# An install also needs: {', '.join(step.install_values)} "
                "(from your platform's install page); add them below.\n"
            )
        body = yaml.safe_dump(nested_values(step.values))
        outputs.add(out / "helm" / relative, (header + body).encode())
        commands.append(step.command(values_file=relative))
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


# --- airtrust's own in-cluster parts (render --controller / --inject) -----------------


@dataclass(frozen=True)
class InClusterRender:
    """The objects of one in-cluster part, and what they need that is not among them.

    A folder applied to a fresh cluster must not fail on a missing namespace, so
    airtrust's own namespace is always part of it. Secrets holding a private key
    (the webhook's serving certificate) are never rendered: they are named, with
    the command that makes them, in ``requires``.
    """

    docs: list[JsonObj]
    requires: list[str]


def _own_namespace(name: str) -> JsonObj:
    ns = namespace_manifest(name)
    ns["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "airtrust"}
    return ns


def _source_objects(source: Source, ca_pem: bytes | None) -> tuple[list[JsonObj], list[str]]:
    """The CA source as an object when the CA is known (public certificates only),
    else the line that says how to create it."""
    if ca_pem is None:
        kind = "secret generic" if source.kind is SourceKind.SECRET else "configmap"
        return [], [
            f"{source.kind} {source.namespace}/{source.name} (the local CA): kubectl -n "
            f"{source.namespace} create {kind} {source.name} --from-file={source.key}=ca-bundle.pem"
        ]
    if source.kind is SourceKind.SECRET:
        doc = secret_manifest(
            source.namespace, source.name, secret_type="Opaque", data={source.key: ca_pem}
        )
    else:
        doc = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": source.name,
                "namespace": source.namespace,
                "labels": {"app.kubernetes.io/managed-by": "airtrust"},
            },
            "data": {source.key: ca_pem.decode()},
        }
    return [doc], []


def controller_objects(
    *, image: str, namespace: str, source: Source, scope: SyncScope, ca_pem: bytes | None
) -> InClusterRender:
    """``render --controller``: the sync controller, its namespace and (with the CA) its
    source."""
    namespaces = sorted({namespace, source.namespace})
    sources, requires = _source_objects(source, ca_pem)
    docs = [
        *map(_own_namespace, namespaces),
        *sources,
        *controller_manifests(image=image, namespace=namespace, source=source, scope=scope),
    ]
    return InClusterRender(docs, requires)


@dataclass(frozen=True)
class InjectService:
    """Where ``render --inject --service`` puts the webhook's server, and its CA source."""

    namespace: str
    name: str
    image: str
    source: Source
    #: the source is the CA secret ``airtrust apply`` keeps (and rotates) there
    kept_by_apply: bool


def inject_service(
    service: str, *, image: str | None, source: str | None, profile: Profile
) -> InjectService:
    """``--service NS/NAME``, ``--image`` and ``--source`` checked, and the source defaulted.

    By default the source is the CA secret apply writes in NS (``inject_namespace:
    NS``): a rotation rewrites it, and the webhook follows (its bundles and its
    caBundle). The webhook's pods mount the source, so it must be in NS, and the
    Service is the one render writes, so its name is fixed. Everything is checked
    before the CA is read or a file written."""
    ns, _, name = service.partition("/")
    if not ns or not name:
        raise InputError(
            f"--service {service} is not NS/NAME", hint="e.g. airtrust-system/airtrust-inject"
        )
    if name != INJECT_NAME:
        raise InputError(
            f"--service {service}: the Service render writes is named {INJECT_NAME}",
            hint=f"use --service {ns}/{INJECT_NAME}",
        )
    if not image:
        raise InputError(
            "--inject --service needs --image (the webhook's Deployment runs it)",
            hint="e.g. --image reg.local/airtrust:0.1",
        )
    ca_secret = profile.ca_secret
    text = source or f"secret/{ns}/{ca_secret.name}:{ca_secret.key}"
    parsed = Source.parse(text, ca_secret.key)
    if parsed.namespace != ns:
        raise InputError(
            f"--source {text} is not in {ns}, where the webhook's pods mount it",
            hint=f"e.g. --source secret/{ns}/local-ca",
        )
    return InjectService(ns, name, image, parsed, kept_by_apply=source is None)


def inject_objects(
    *,
    ca_pem: bytes,
    namespace_selector: str,
    failure_policy: FailurePolicy,
    timeout_seconds: int,
    url: str | None = None,
    service: tuple[str, str] | None = None,
    image: str | None = None,
    source: Source | None = None,
    configmap: str = "airtrust-ca-bundle",
    source_kept_by_apply: bool = False,
) -> InClusterRender:
    """``render --inject``: the webhook configuration; with ``service`` also the server
    (its namespace, the CA source, Deployment, Service, account, disruption budget) it
    points at. A source ``airtrust apply`` keeps (``source_kept_by_apply``: the CA
    secret of the webhook's namespace, which a rotation rewrites) is required, not
    rendered: two writers of one Secret would conflict at the first rotation.

    ``url`` is the server as the user names it: a bare ``https://HOST:PORT`` becomes
    its mutate path, and a URL that would never reach it is refused
    (:func:`~airtrust.plan.inject.webhook_url`) before anything is written."""
    if url is not None:
        url = webhook_url(url)
    docs: list[JsonObj] = []
    requires: list[str] = []
    if service is not None:
        assert image is not None and source is not None
        ns, _ = service
        sources: list[JsonObj] = []
        if source_kept_by_apply:
            requires = [
                f"{source.kind} {source.namespace}/{source.name} (the local CA the webhook "
                f"mounts; a rotation rewrites it): airtrust apply with inject_namespace: "
                f"{source.namespace} in airtrust.yaml"
            ]
        else:
            sources, requires = _source_objects(source, ca_pem)
        docs += [*map(_own_namespace, sorted({ns, source.namespace})), *sources]
        docs += inject_manifests(
            image=image, namespace=ns, source=source, namespace_selector=namespace_selector,
            configmap=configmap,
        )  # fmt: skip
        docs.append(inject_disruption_budget(ns))
        names = " ".join(f"--domain {n}" if i == 0 else f"--san {n}"
                         for i, n in enumerate(webhook_hosts(ns)))  # fmt: skip
        requires.append(
            f"secret {ns}/{INJECT_TLS_SECRET} (the webhook's serving certificate, from the "
            f"local CA): airtrust apply with inject_namespace: {ns} in airtrust.yaml, or "
            f"airtrust cert issue --ca-dir CA {names} --out tls && kubectl -n {ns} create "
            f"secret tls {INJECT_TLS_SECRET} --cert=tls/tls.crt --key=tls/tls.key"
        )
    docs.append(
        webhook_configuration(
            ca_bundle=ca_pem,
            namespace_selector=namespace_selector,
            # The plain value: a manifest is data (yaml.safe_dump refuses enum members).
            failure_policy=str(failure_policy),
            timeout_seconds=timeout_seconds,
            url=url,
            service=service,
        )
    )
    return InClusterRender(docs, requires)


def node_agent_render(
    *,
    image: str,
    source: Source,
    registries: Sequence[Registry],
    runtime: Runtime,
    certs_dir: str | None,
    ca_pem: bytes | None,
) -> InClusterRender:
    """``render --node-trust``: the node agent (``node sync`` as a DaemonSet), its
    namespace (the source's: its Role reads exactly that secret) and, with the CA, the
    source itself. The folder applies as is to a fresh cluster."""
    agent = node_agent_objects(
        image=image, source=source, registries=registries, runtime=runtime, certs_dir=certs_dir
    )
    sources, requires = _source_objects(source, ca_pem)
    return InClusterRender([_own_namespace(source.namespace), *sources, *agent], requires)


def write_in_cluster(out: Path, rendered: InClusterRender, *, force: bool) -> list[Path]:
    """Numbered manifests and their kustomization.yaml into ``out``; refuses a folder
    that holds anything unless ``force``."""
    _check_folder(out, force=force)
    outputs = OutputSet(force=True)
    write_manifests(
        outputs,
        out,
        [(f"{i:02d}-{doc['kind'].lower()}.yaml", doc) for i, doc in enumerate(rendered.docs)],
    )
    return outputs.commit()
