"""Observe the clusters, plan, check permissions, apply: the one-shot reconcile.

This is where the pure core (pki, plan) meets the Kubernetes adapter. Contexts
are worked in parallel and so are the objects inside one context (namespaces
first); a failure is recorded per object and never stops the others, so a
re-run converges.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import yaml
from cryptography import x509

from airtrust.config import Cluster, Config
from airtrust.errors import AirtrustError, ConfigError
from airtrust.files import OutputSet, read_input
from airtrust.kube.api import KubeAPI, PermissionDenied
from airtrust.pki import keys
from airtrust.pki.bundle import Bundle, fingerprint, parse_bundle, read_certificates
from airtrust.pki.verify import verify_server
from airtrust.plan.desired import (
    CLUSTER,
    CONTROL_PLANE,
    ClusterFacts,
    TLSMaterial,
    build_desired,
)
from airtrust.plan.diff import diff
from airtrust.plan.model import BACKUP_OF, MANAGED_BY, Action, Change, Desired, JsonObj, Plan
from airtrust.profiles import Profile, load_profile

log = logging.getLogger(__name__)
WORKERS = 16
RENEW_BEFORE = dt.timedelta(days=30)
Progress = Callable[[str], None]
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Session:
    """Config, profile and one API connection per context."""

    config: Config
    profile: Profile
    version: str
    apis: dict[str, KubeAPI]
    bundle: Bundle
    control_plane_tls: TLSMaterial | None
    now: dt.datetime
    #: CAs a reused TLS certificate must chain to (a rotation narrows this to the new CA).
    tls_anchors: tuple[x509.Certificate, ...] | None = None
    #: live objects by (context, kind, namespace, name), filled by observe()
    live: dict[tuple[str, str, str | None, str], JsonObj | None] = field(default_factory=dict)

    def close(self) -> None:
        for api in self.apis.values():
            api.close()


def load_tls(cert: Path, key: Path, anchors: Sequence[object], now: dt.datetime) -> TLSMaterial:
    chain_pem = read_input(str(cert))
    key_pem = read_input(str(key))
    chain = [a.certificate for a in read_certificates(chain_pem, str(cert))]
    private = keys.key_from_pem(key_pem, source=str(key))
    if not keys.public_key_matches(private, chain[0].public_key()):
        raise ConfigError(f"{key} does not belong to {cert}", hint="give the matching key")
    verify_server(chain[0], anchors=anchors, intermediates=chain[1:], now=now)  # type: ignore[arg-type]
    return TLSMaterial(chain_pem, key_pem, fingerprint(chain[0]))


def open_session(
    config: Config,
    *,
    now: dt.datetime,
    kubeconfig: Path | None = None,
    connect: bool = True,
) -> Session:
    profile = load_profile(config.profile)
    version = config.version or profile.default_version
    bundle = parse_bundle([(str(p), read_input(str(p))) for p in config.ca.bundle], now=now)
    tls = None
    if config.tls is not None:
        tls = load_tls(config.tls.cert, config.tls.key, bundle.certificates, now)
    apis: dict[str, KubeAPI] = {}
    if connect:
        for context in config.contexts():
            apis[context] = KubeAPI.connect(context, kubeconfig=kubeconfig or config.kubeconfig)
    return Session(config, profile, version, apis, bundle, tls, now)


def _roles(config: Config) -> dict[str, set[str]]:
    roles: dict[str, set[str]] = {}
    if config.control_plane is not None:
        roles.setdefault(config.control_plane.context, set()).add(CONTROL_PLANE)
    for cluster in config.clusters:
        roles.setdefault(cluster.context, set()).add(CLUSTER)
    return roles


def _cluster_entry(config: Config, context: str) -> Cluster | None:
    return next((c for c in config.clusters if c.context == context), None)


# --- permissions -----------------------------------------------------------------------


@dataclass(frozen=True)
class Need:
    verb: str
    resource: str
    namespace: str | None = None
    group: str = ""

    def __str__(self) -> str:
        where = f" in {self.namespace}" if self.namespace else " (cluster-wide)"
        res = f"{self.resource}.{self.group}" if self.group else self.resource
        return f"{self.verb} {res}{where}"


def check_permissions(api: KubeAPI, needs: Iterable[Need]) -> list[Need]:
    """The needs this context's user lacks; cluster-wide grants answer many at once."""
    unique = sorted(set(needs), key=str)
    wide: dict[tuple[str, str, str], bool] = {}
    missing = []
    for need in unique:
        key = (need.verb, need.resource, need.group)
        if key not in wide:
            wide[key] = api.can_i(need.verb, need.resource, group=need.group)
        if wide[key]:
            continue
        if need.namespace is None or not api.can_i(
            need.verb, need.resource, group=need.group, namespace=need.namespace
        ):
            missing.append(need)
    return missing


def _raise_missing(missing: dict[str, list[Need]]) -> None:
    parts = [
        f"context '{ctx}': " + "; ".join(map(str, needs)) for ctx, needs in missing.items() if needs
    ]
    if parts:
        raise PermissionDenied(
            "missing permissions, nothing was changed: " + " | ".join(parts),
            hint="grant them to the user of each context (a Role/ClusterRole and binding), "
            "then rerun",
        )


def _read_needs(session: Session, context: str, namespaces: Iterable[str]) -> list[Need]:
    needs = [Need("get", "namespaces"), Need("list", "namespaces")]
    needs += [Need("get", "secrets", ns) for ns in namespaces]
    cc = session.profile.cluster_config
    roles = _roles(session.config).get(context, set())
    if cc is not None and CLUSTER in roles and session.config.images.references:
        needs.append(Need("get", cc.plural, cc.namespace, cc.group))
    # The rotation record (controller/rotation.py) lives beside the control plane.
    if CONTROL_PLANE in roles:
        needs.append(Need("get", "configmaps", session.profile.tls_secret.namespace))
    return needs


def _possible_write_needs(namespaces: Iterable[str]) -> list[Need]:
    """Everything apply may write, listed when reads already fail (plan is impossible)."""
    needs = [Need("create", "namespaces")]
    for ns in namespaces:
        needs += [Need("create", "secrets", ns), Need("patch", "secrets", ns)]
    return needs


def write_needs(change: Change, backup_mode: str, profile: Profile) -> list[Need]:
    d = change.desired
    if d.kind == "Namespace":
        return [Need("create", "namespaces")] if change.action is Action.CREATE else []
    if d.manifest is None:
        cc = profile.cluster_config
        if cc is None or change.action is not Action.UPDATE:
            return []
        return [Need("patch", cc.plural, d.namespace, cc.group)]
    needs = []
    if change.action is Action.CREATE:
        needs += [Need("create", "secrets", d.namespace), Need("patch", "secrets", d.namespace)]
    elif change.action is Action.UPDATE:
        needs.append(Need("patch", "secrets", d.namespace))
        if change.overwrites_foreign_data and backup_mode == "secret":
            needs.append(Need("create", "secrets", d.namespace))
    return needs


# --- observe ---------------------------------------------------------------------------


def _target_namespaces(
    session: Session, context: str, openshift: bool, workloads: Sequence[str]
) -> list[str]:
    roles = _roles(session.config).get(context, set())
    out = {t.namespace for r in roles for t in session.profile.ca_targets(r, openshift=openshift)}
    if CONTROL_PLANE in roles:
        out.add(session.profile.tls_secret.namespace)
    out.update(workloads)
    for spec in session.profile.cluster_tls:
        out.add(spec.namespace)
    return sorted(out)


def _facts(session: Session, context: str) -> ClusterFacts:
    api = session.apis[context]
    config = session.config
    roles = _roles(config).get(context, set())
    entry = _cluster_entry(config, context)
    setting = entry.openshift if entry is not None else "auto"
    if setting == "auto":
        group = session.profile.openshift.detect_group if session.profile.openshift else None
        openshift = group is not None and group in api.api_groups()
    else:
        openshift = setting == "true"
    workloads: list[str] = list(config.workloads.namespaces) if CLUSTER in roles else []
    targets = _target_namespaces(session, context, openshift, workloads)
    missing = check_permissions(api, _read_needs(session, context, targets))
    if missing:
        _raise_missing({context: missing + check_permissions(api, _possible_write_needs(targets))})
    if CLUSTER in roles and config.workloads.selector:
        workloads += api.namespaces(config.workloads.selector)
    cluster_config = None
    cc = session.profile.cluster_config
    if CLUSTER in roles and cc is not None and config.images.references:
        cluster_config = api.get(f"{cc.group}/{cc.version}", cc.plural, cc.namespace, cc.name)
    cluster_tls = (
        _cluster_tls(session, api, entry) if entry is not None and CLUSTER in roles else {}
    )
    return ClusterFacts(
        context,
        frozenset(roles),
        openshift,
        tuple(sorted(set(workloads))),
        cluster_tls,
        cluster_config,
    )


def _cluster_tls(
    session: Session, api: KubeAPI, entry: Cluster
) -> dict[tuple[str, str], TLSMaterial]:
    """Reuse each live cluster TLS secret that still fits, else issue a new one."""
    if entry.domain is None:
        return {}
    out = {}
    for spec in session.profile.cluster_tls_for(session.version):
        if "{inference_domain}" in "".join(spec.names) and entry.inference_domain is None:
            continue
        hosts = [
            n.format(cluster_domain=entry.domain, inference_domain=entry.inference_domain)
            for n in spec.names
        ]
        live = api.get("v1", "secrets", spec.namespace, spec.name)
        material = _reusable(live, hosts, session) if live is not None else None
        if material is None:
            material = _issue(
                session,
                hosts,
                f"clusters[{entry.context}].domain",
                f"context '{entry.context}': secret {spec.namespace}/{spec.name}",
            )
        out[(spec.namespace, spec.name)] = material
    return out


def _reusable(live: JsonObj, hosts: list[str], session: Session) -> TLSMaterial | None:
    import base64

    try:
        data = live.get("data") or {}
        chain_pem = base64.b64decode(data["tls.crt"])
        key_pem = base64.b64decode(data["tls.key"])
        chain = [a.certificate for a in read_certificates(chain_pem, "live")]
        private = keys.key_from_pem(key_pem, source="live")
        if not keys.public_key_matches(private, chain[0].public_key()):
            return None
        for host in hosts:
            verify_server(
                chain[0],
                anchors=session.tls_anchors or session.bundle.certificates,
                intermediates=chain[1:],
                hostname=host.replace("*", "x", 1),
                now=session.now,
            )
        if chain[0].not_valid_after_utc - session.now < RENEW_BEFORE:
            return None
        return TLSMaterial(chain_pem, key_pem, fingerprint(chain[0]))
    except (AirtrustError, KeyError, ValueError):
        return None


def _issue(session: Session, hosts: list[str], key_name: str, secret: str) -> TLSMaterial:
    from airtrust.pki import authority
    from airtrust.workspace import chain_pem, load_authority

    if session.config.issue_from is None:
        raise ConfigError(
            f"{key_name} asks for cluster TLS certificates but issue_from is not set",
            hint="set issue_from to the CA folder that should issue them",
        )
    ca = load_authority(session.config.issue_from)
    key = keys.generate_key(keys.DEFAULT_KEY_TYPE)
    issued = authority.issue_server(
        authority.ServerSpec(hosts[0], tuple(hosts[1:])),
        key.public_key(),
        issuer_chain=ca.chain,
        issuer_key=ca.key,
        now=session.now,
    )
    try:
        # A certificate the distributed bundle does not trust would break every client:
        # typically issue_from still names the CA a finished rotation removed.
        verify_server(
            issued.certificate,
            anchors=session.tls_anchors or session.bundle.certificates,
            intermediates=list(ca.intermediates()),
            hostname=hosts[0].replace("*", "x", 1),
            now=session.now,
        )
    except AirtrustError:
        raise ConfigError(
            f"{secret} would be issued by issue_from ({session.config.issue_from}), a CA the "
            "distributed bundle does not trust",
            hint="point issue_from at the CA folder whose certificate is in the bundle "
            "(after a CA rotation: the new CA's folder)",
        ) from None
    return TLSMaterial(
        chain_pem((issued.certificate, *ca.intermediates())),
        keys.key_to_pem(key),
        fingerprint(issued.certificate),
    )


def _parallel(items: Sequence[T], fn: Callable[[T], R], workers: int = WORKERS) -> list[R]:
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(fn, items))


def _observe_live(session: Session, desired: Sequence[Desired]) -> None:
    """GET every desired object once (secrets of one name listed cluster-wide when allowed)."""
    by_context: dict[str, list[Desired]] = {}
    for d in desired:
        by_context.setdefault(d.context, []).append(d)

    def observe_context(context: str) -> None:
        api = session.apis[context]
        items = by_context[context]
        existing = set(api.namespaces())
        # One cluster-wide list per secret name instead of a GET per namespace, when allowed.
        list_wide = api.can_i("list", "secrets")
        listed: dict[tuple[str, str], JsonObj] = {}
        if list_wide:
            for name in sorted({d.name for d in items if d.kind == "Secret"}):
                for obj in api.list_objects(
                    "v1", "secrets", field_selector=f"metadata.name={name}"
                ):
                    listed[(obj["metadata"]["namespace"], name)] = obj

        def fetch(item: Desired) -> None:
            key = (item.context, item.kind, item.namespace, item.name)
            if item.kind == "Namespace":
                session.live[key] = (
                    {"metadata": {"name": item.name}} if item.name in existing else None
                )
            elif item.kind == "Secret" and list_wide:
                session.live[key] = listed.get((item.namespace or "", item.name))
            elif item.kind == "Secret":
                if item.namespace not in existing:
                    session.live[key] = None
                else:
                    session.live[key] = api.get("v1", "secrets", item.namespace, item.name)
            else:
                cc = session.profile.cluster_config
                assert cc is not None
                session.live[key] = api.get(
                    f"{cc.group}/{cc.version}", cc.plural, item.namespace, item.name
                )

        _parallel(items, fetch)

    _parallel(list(by_context), observe_context)


def gather_facts(session: Session) -> list[ClusterFacts]:
    return _parallel(list(session.apis), lambda c: _facts(session, c))


def offline_facts(session: Session) -> list[ClusterFacts]:
    """Facts without reading any cluster: openshift 'auto' counts as no, no selector."""
    facts = []
    for context, roles in _roles(session.config).items():
        entry = _cluster_entry(session.config, context)
        workloads = session.config.workloads.namespaces if CLUSTER in roles else ()
        facts.append(
            ClusterFacts(
                context,
                frozenset(roles),
                entry is not None and entry.openshift == "true",
                tuple(sorted(workloads)),
            )
        )
    return facts


def desired_objects(session: Session, facts: Sequence[ClusterFacts]) -> list[Desired]:
    return build_desired(
        session.config,
        session.profile,
        session.version,
        bundle_pem=session.bundle.to_pem(),
        bundle_digest=session.bundle.digest,
        control_plane_tls=session.control_plane_tls,
        facts=facts,
    )


def make_plan(session: Session) -> Plan:
    facts = gather_facts(session)
    warnings = []
    cc = session.profile.cluster_config
    wants_patch = session.config.images.strategy == "patch" and session.config.images.references
    for fact in facts:
        if CLUSTER in fact.roles and cc is not None and wants_patch and fact.cluster_config is None:
            warnings.append(
                f"context '{fact.context}': no {cc.kind} {cc.namespace}/{cc.name}; "
                "sidecar image references not patched"
            )
    desired = desired_objects(session, facts)
    _observe_live(session, desired)
    changes = tuple(
        diff(d, session.live[(d.context, d.kind, d.namespace, d.name)]) for d in desired
    )
    return Plan(changes, tuple(warnings))


# --- apply -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    change: Change
    status: str  # applied, unchanged, failed, conflict
    message: str = ""
    backup: str | None = None


@dataclass(frozen=True)
class ApplyReport:
    outcomes: tuple[Outcome, ...]
    dry_run: bool

    @property
    def failed(self) -> tuple[Outcome, ...]:
        return tuple(o for o in self.outcomes if o.status in ("failed", "conflict"))

    @property
    def writes(self) -> int:
        return sum(1 for o in self.outcomes if o.status == "applied")


def preflight(session: Session, plan: Plan) -> None:
    missing = {}
    for context, api in session.apis.items():
        needs = [
            n
            for c in plan.for_context(context)
            for n in write_needs(c, session.config.backup.mode, session.profile)
        ]
        missing[context] = check_permissions(api, needs)
    _raise_missing(missing)


def _backup(session: Session, change: Change, *, dry_run: bool) -> str | None:
    d = change.desired
    live = session.live.get((d.context, d.kind, d.namespace, d.name))
    mode = session.config.backup.mode
    if live is None or mode == "none" or not change.overwrites_foreign_data:
        return None
    data = live.get("data") or {}
    digest = hashlib.sha256(yaml.safe_dump(data, sort_keys=True).encode()).hexdigest()[:10]
    name = f"{d.name}-backup-{digest}"
    if mode == "secret":
        manifest = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": name,
                "namespace": d.namespace,
                "labels": {MANAGED_BY[0]: MANAGED_BY[1], BACKUP_OF: d.name},
            },
            "type": live.get("type", "Opaque"),
            "data": data,
        }
        session.apis[d.context].create(manifest, dry_run=dry_run)
        return f"Secret {d.namespace}/{name}"
    path = session.config.backup.dir / d.context / (d.namespace or "_") / f"{name}.yaml"
    if not dry_run:
        outputs = OutputSet(force=True)
        outputs.add(
            path, yaml.safe_dump({"type": live.get("type"), "data": data}).encode(), secret=True
        )
        outputs.commit()
    return str(path)


def _apply_one(
    session: Session,
    change: Change,
    *,
    force: bool,
    dry_run: bool,
    pending_namespaces: frozenset[str] = frozenset(),
) -> Outcome:
    from airtrust.kube.api import Conflict

    d = change.desired
    api = session.apis[d.context]
    if change.action is Action.UNCHANGED:
        return Outcome(change, "unchanged")
    if dry_run and d.kind != "Namespace" and d.namespace in pending_namespaces:
        return Outcome(
            change,
            "skipped",
            f"namespace {d.namespace} would be created first; a server dry run "
            "cannot check objects inside it",
        )
    backup = None
    try:
        if d.kind == "Namespace":
            api.create(d.manifest or {}, dry_run=dry_run)
        elif d.manifest is None:
            cc = session.profile.cluster_config
            assert cc is not None
            ops: list[JsonObj] = []
            for pointer, old, new in d.patches:
                ops += [
                    {"op": "test", "path": pointer, "value": old},
                    {"op": "replace", "path": pointer, "value": new},
                ]
            api.json_patch(
                f"{cc.group}/{cc.version}", cc.plural, d.namespace, d.name, ops, dry_run=dry_run
            )
        else:
            # Back up foreign data before any attempt to overwrite it (idempotent: named by hash).
            backup = _backup(session, change, dry_run=dry_run)
            api.apply(d.manifest, force=force, dry_run=dry_run)
    except Conflict as exc:
        return Outcome(change, "conflict", exc.one_line(), backup)
    except AirtrustError as exc:
        return Outcome(change, "failed", exc.one_line(), backup)
    return Outcome(change, "applied", backup=backup)


def execute(
    session: Session,
    plan: Plan,
    *,
    force: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> ApplyReport:
    outcomes: list[Outcome] = []

    def run_context(context: str) -> list[Outcome]:
        changes = plan.for_context(context)
        namespaces = [c for c in changes if c.desired.kind == "Namespace"]
        rest = [c for c in changes if c.desired.kind != "Namespace"]
        done: list[Outcome] = []
        for group in (namespaces, rest):
            apply = functools.partial(
                _apply_one,
                session,
                force=force,
                dry_run=dry_run,
                pending_namespaces=frozenset(
                    c.desired.name for c in namespaces if c.action is Action.CREATE
                ),
            )
            for result in _parallel(group, apply):
                done.append(result)
                if progress and result.status != "unchanged":
                    progress(
                        f"{result.status} {result.change.context}: {result.change.desired.ref}"
                    )
        return done

    for result in _parallel(list(session.apis), run_context):
        outcomes.extend(result)
    return ApplyReport(tuple(outcomes), dry_run)
