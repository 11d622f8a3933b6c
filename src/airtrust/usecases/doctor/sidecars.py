"""``sidecar-images``: every S3/Git sidecar the cluster configuration names trusts the CA,
read from the registry alone, and kept the base's user and entrypoint."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from airtrust.errors import AirtrustError
from airtrust.plan.desired import ClusterFacts
from airtrust.plan.imagepaths import references_to, walk_strings
from airtrust.plan.topology import CLUSTER
from airtrust.registry.append import BASE_LABEL, TrustReport, inspect_image
from airtrust.registry.client import RegistryClient
from airtrust.registry.reference import Reference, parse_reference
from airtrust.usecases.doctor.model import Check, Status, seen
from airtrust.usecases.session import Session

__all__ = ["check_sidecars"]

NAME = "sidecar-images"


def check_sidecars(session: Session, facts: Mapping[str, ClusterFacts]) -> list[Check]:
    cc = session.profile.cluster_config
    config = session.config
    if cc is None or config.images.strategy != "patch":
        return []
    out = []
    for context, fact in facts.items():
        if CLUSTER not in fact.roles:
            continue
        live = session.apis[context].get(
            f"{cc.group}/{cc.version}", cc.plural, cc.namespace, cc.name
        )
        target = f"{cc.kind} {cc.namespace}/{cc.name}"
        if live is None:
            out.append(
                Check(
                    NAME,
                    context,
                    target,
                    Status.SKIP,
                    "no cluster configuration object (cluster not installed yet)",
                )
            )
            continue
        found = [
            (p, v)
            for p, v in walk_strings(live.get("spec", {}), "/spec")
            if any(references_to(s.repository, v) for s in session.profile.sidecars)
        ]
        if not found:
            out.append(
                Check(
                    NAME,
                    context,
                    target,
                    Status.WARN,
                    "no S3/Git sidecar image reference found in the spec",
                    "pin the fields with cluster_config.image_paths in airtrust.yaml",
                )
            )
        for pointer, value in found:
            out.append(_judge_image(session, context, f"{target} {pointer}", value))
    return out


def _judge_image(session: Session, context: str, where: str, value: str) -> Check:
    images = session.config.images
    try:
        ref = parse_reference(value)
        with RegistryClient(
            ref.registry, ca_bundle=images.registry_ca, insecure=images.insecure
        ) as client:
            reports = inspect_image(client, ref, session.bundle.certificates)
            base_ok = _keeps_base_config(client, ref, reports)
    except AirtrustError as exc:
        return Check(NAME, context, where, Status.FAIL, f"{value}: {exc.message}", exc.hint)
    if not all(r.trusted for r in reports):
        return Check(
            NAME,
            context,
            where,
            Status.FAIL,
            f"{value} does not trust every CA of the bundle",
            "airtrust image patch --sidecars --registry REG --ca BUNDLE; put "
            "the printed references in images.references; airtrust apply",
        )
    if base_ok is False:
        return Check(
            NAME,
            context,
            where,
            Status.FAIL,
            f"{value} changed the base's user or entrypoint",
            "repatch from the original base with airtrust image patch",
        )
    users = ", ".join(sorted({r.user or "root" for r in reports}))
    return Check(
        NAME,
        context,
        where,
        Status.OK,
        f"{value}: trust store holds the CA(s); user {users}",
        certificates=seen(session.bundle.certificates, f"image {value}", context),
    )


def _keeps_base_config(
    client: RegistryClient, ref: Reference, reports: Sequence[TrustReport]
) -> bool | None:
    """Compare user and entrypoint with the base image named by airtrust's label."""

    def config_of(digest: str) -> dict[str, Any]:
        manifest = client.manifest(ref.repository, digest).json()
        config: dict[str, Any] = json.loads(
            client.blob(ref.repository, manifest["config"]["digest"])
        )
        return config

    for report in reports:
        config = config_of(report.digest)
        base = (config.get("config") or {}).get("Labels", {}).get(BASE_LABEL)
        if not base:
            return None
        try:
            base_config = config_of(base)
        except AirtrustError:
            return None
        mine, theirs = config.get("config") or {}, base_config.get("config") or {}
        if mine.get("User") != theirs.get("User") or mine.get("Entrypoint") != theirs.get(
            "Entrypoint"
        ):
            return False
    return True
