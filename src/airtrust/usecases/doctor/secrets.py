"""``ca-secret`` and ``tls-secret``: what the clusters hold, judged against the bundle."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography import x509

from airtrust.errors import AirtrustError
from airtrust.pki.bundle import read_certificates
from airtrust.pki.tlssecret import judge_tls_secret
from airtrust.plan.desired import ClusterFacts
from airtrust.plan.topology import (
    CLUSTER,
    CONTROL_PLANE,
    ca_secret_targets,
    cluster_entry,
    cluster_tls_specs,
    tls_secret_name,
)
from airtrust.usecases.doctor.model import APPLY_FIX, Check, Status, seen
from airtrust.usecases.session import Session

__all__ = ["check_ca_secrets", "check_tls_secrets", "judge_ca_secret", "tls_secret_check"]


def judge_ca_secret(
    live: Mapping[str, Any] | None,
    key: str,
    want: set[str],
    labels: Mapping[str, str],
    target: str,
) -> tuple[Status, str, str]:
    """(status, evidence, fix) for one CA secret: the first problem, or ok."""
    take_over = APPLY_FIX + " --force-conflicts"
    if live is None:
        return Status.FAIL, "missing", APPLY_FIX
    raw = (live.get("data") or {}).get(key)
    if raw is None:
        return Status.FAIL, f"no key {key}", take_over
    data = base64.b64decode(raw)
    if b"PRIVATE KEY" in data:
        return (
            Status.FAIL,
            "holds a PRIVATE KEY block: a CA secret must hold certificates only",
            take_over,
        )
    try:
        have = {a.fingerprint for a in read_certificates(data, target)}
    except AirtrustError as exc:
        return Status.FAIL, exc.message, take_over
    if have != want:
        missing = ", ".join(fp[:12] for fp in sorted(want - have)) or "none"
        extra = ", ".join(fp[:12] for fp in sorted(have - want)) or "none"
        return (
            Status.FAIL,
            f"different CA certificates (missing {missing}; extra {extra})",
            take_over,
        )
    have_labels = live.get("metadata", {}).get("labels") or {}
    absent = [f"{k}={v}" for k, v in labels.items() if have_labels.get(k) != v]
    if absent:
        return Status.FAIL, f"labels missing: {', '.join(absent)}", APPLY_FIX
    return Status.OK, f"{len(have)} CA(s), same fingerprints as the bundle", ""


def check_ca_secrets(session: Session, facts: Mapping[str, ClusterFacts]) -> list[Check]:
    profile = session.profile
    want = set(session.bundle.fingerprints)
    name = profile.ca_secret.name
    out = []
    for context, fact in facts.items():
        targets = ca_secret_targets(
            profile,
            session.version,
            fact.roles,
            openshift=fact.openshift,
            workloads=fact.workload_namespaces,
        )
        for t in targets:
            target = f"{t.namespace}/{name}"
            live = session.apis[context].get("v1", "secrets", t.namespace, name)
            status, evidence, fix = judge_ca_secret(
                live, profile.ca_secret.key, want, t.labels, target
            )
            out.append(Check("ca-secret", context, target, status, evidence, fix))
    return out


def tls_secret_check(
    context: str,
    target: str,
    live: Mapping[str, Any] | None,
    hosts: Sequence[str],
    anchors: Sequence[x509.Certificate],
    now: dt.datetime,
    warn_days: int,
    fix: str,
) -> Check:
    verdict = judge_tls_secret(
        live, hosts=hosts, anchors=anchors, now=now, window=dt.timedelta(days=warn_days)
    )
    certs = seen(verdict.pair.chain, f"secret {target}", context) if verdict.pair else ()
    if not verdict.sound:
        status, evidence = Status.FAIL, verdict.detail
    elif verdict.outlives_ca:
        status, evidence = Status.WARN, verdict.detail + "; outlives its CA"
    elif verdict.expiring:
        status, evidence = Status.WARN, verdict.detail
    else:
        status, evidence, fix = Status.OK, verdict.detail, ""
    return Check("tls-secret", context, target, status, evidence, fix, certs)


def check_tls_secrets(
    session: Session, facts: Mapping[str, ClusterFacts], warn_days: int
) -> list[Check]:
    out = []
    config, profile = session.config, session.profile
    anchors = session.bundle.certificates
    for context, fact in facts.items():
        api = session.apis[context]
        if CONTROL_PLANE in fact.roles and not fact.openshift and config.tls is not None:
            name = tls_secret_name(config, profile)
            ns = profile.tls_secret.namespace
            fix = (
                f"airtrust cert issue --ca-dir CA_DIR --domain {config.domain} --out DIR; "
                "point tls: in airtrust.yaml at it; airtrust apply -c airtrust.yaml"
            )
            out.append(
                tls_secret_check(
                    context,
                    f"{ns}/{name}",
                    api.get("v1", "secrets", ns, name),
                    [config.domain],
                    anchors,
                    session.now,
                    warn_days,
                    fix,
                )
            )
        if CLUSTER not in fact.roles:
            continue
        for spec in cluster_tls_specs(profile, session.version, cluster_entry(config, context)):
            out.append(
                tls_secret_check(
                    context,
                    spec.ref,
                    api.get("v1", "secrets", spec.namespace, spec.name),
                    spec.hosts,
                    anchors,
                    session.now,
                    warn_days,
                    "airtrust apply -c airtrust.yaml (reissues it)",
                )
            )
    return out
