"""Observe the clusters, plan, check permissions, execute: the one apply sequence.

This is where the pure core (pki, plan) meets the Kubernetes adapter. Contexts
are worked in parallel and so are the objects inside one context (namespaces
first); a failure is recorded per object and never stops the others, so a
re-run converges. apply, quickstart and both rotation phases go through
:func:`run`, and nothing else writes planned objects.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from airtrust.config import Config
from airtrust.errors import AirtrustError, ConfigError, Conflict, StalePlan
from airtrust.files import OutputSet
from airtrust.kube.api import FIELD_MANAGER, PLURALS, KubeAPI
from airtrust.pki import keys
from airtrust.pki.bundle import fingerprint
from airtrust.pki.tlssecret import RENEW_BEFORE, TLSMaterial, judge_tls_secret
from airtrust.pki.verify import verify_server
from airtrust.plan.desired import ClusterFacts, build_desired, findings
from airtrust.plan.diff import diff
from airtrust.plan.manifests import backup_name, backup_secret
from airtrust.plan.model import Action, Change, Desired, JsonObj, Plan, SavedPlan
from airtrust.plan.openshift_trust import CONFIG_API
from airtrust.plan.rbac import Need, denied, possible_write_needs, read_needs, write_needs
from airtrust.plan.topology import (
    CLUSTER,
    ClusterTLSSpec,
    cluster_entry,
    cluster_tls_specs,
    hostname_probe,
    is_openshift,
    roles_by_context,
    target_namespaces,
    workload_namespaces,
)
from airtrust.usecases.parallel import parallel
from airtrust.usecases.session import Session

__all__ = [
    "ApplyReport",
    "Outcome",
    "OutcomeStatus",
    "check_permissions",
    "desired_objects",
    "execute",
    "gather_facts",
    "make_plan",
    "offline_facts",
    "preflight",
    "run",
    "run_saved",
]

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


# --- permissions -----------------------------------------------------------------------


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


def preflight(session: Session, plan: Plan) -> None:
    """Raise PermissionDenied listing every right any context lacks for ``plan``."""
    missing = {}
    for context, api in session.apis.items():
        needs = [
            n
            for c in plan.for_context(context)
            for n in write_needs(c, session.config.backup.mode, session.profile)
        ]
        missing[context] = check_permissions(api, needs)
    error = denied(missing)
    if error is not None:
        raise error


# --- observe ---------------------------------------------------------------------------


def _openshift(session: Session, context: str) -> bool:
    entry = cluster_entry(session.config, context)
    setting = entry.openshift if entry is not None else "auto"
    return is_openshift(setting, session.profile, session.apis[context].api_groups)


def _facts(session: Session, context: str) -> ClusterFacts:
    api = session.apis[context]
    config, profile = session.config, session.profile
    roles = roles_by_context(config).get(context, frozenset())
    openshift = _openshift(session, context)
    workloads = workload_namespaces(config, context)
    namespaces = target_namespaces(
        config, profile, session.version, context, openshift=openshift, workloads=workloads
    )
    missing = check_permissions(api, read_needs(config, profile, context, namespaces))
    if missing:
        error = denied(
            {context: missing + check_permissions(api, possible_write_needs(namespaces))}
        )
        assert error is not None
        raise error
    if CLUSTER in roles and config.workloads.selector:
        workloads += api.namespaces(config.workloads.selector)
    cluster_config = None
    cc = profile.cluster_config
    if CLUSTER in roles and cc is not None and config.images.references:
        cluster_config = api.get(f"{cc.group}/{cc.version}", cc.plural, cc.namespace, cc.name)
    cluster_tls: dict[tuple[str, str], TLSMaterial] = {}
    if CLUSTER in roles:
        entry = cluster_entry(config, context)
        for spec in cluster_tls_specs(profile, session.version, entry):
            live = api.get("v1", "secrets", spec.namespace, spec.name)
            cluster_tls[(spec.namespace, spec.name)] = _reuse_or_issue(session, context, spec, live)
    image_config = None
    if openshift and config.node_trust_for(context).enabled:
        image_config = api.get(CONFIG_API, "images", None, "cluster")
    return ClusterFacts(
        context,
        roles,
        openshift,
        tuple(sorted(set(workloads))),
        cluster_tls,
        cluster_config,
        image_config=image_config,
    )


def _reuse_or_issue(
    session: Session, context: str, spec: ClusterTLSSpec, live: JsonObj | None
) -> TLSMaterial:
    """Keep a live cluster TLS secret while it still fits, else issue a new one."""
    verdict = judge_tls_secret(
        live, hosts=spec.hosts, anchors=session.reuse_anchors, now=session.now, window=RENEW_BEFORE
    )
    if verdict.sound and not verdict.expiring and verdict.pair is not None:
        return verdict.pair.material
    return _issue(session, list(spec.hosts), context, spec)


def _issue(session: Session, hosts: list[str], context: str, spec: ClusterTLSSpec) -> TLSMaterial:
    from airtrust.pki import authority
    from airtrust.usecases.workspace import chain_pem, load_authority

    secret = f"context '{context}': secret {spec.ref}"
    if session.config.issue_from is None:
        raise ConfigError(
            f"clusters[{context}].domain asks for cluster TLS certificates but issue_from is not "
            "set",
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
            anchors=session.reuse_anchors,
            intermediates=list(ca.intermediates()),
            hostname=hostname_probe(hosts[0]),
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


Live = dict[tuple[str, str, str | None, str], JsonObj | None]


def _observe_live(session: Session, desired: Sequence[Desired]) -> Live:
    """GET every desired object once (secrets of one name listed cluster-wide when allowed)."""
    by_context: dict[str, list[Desired]] = {}
    for d in desired:
        by_context.setdefault(d.context, []).append(d)

    def observe_context(context: str) -> Live:
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

        def fetch(item: Desired) -> JsonObj | None:
            if item.kind == "Namespace":
                return {"metadata": {"name": item.name}} if item.name in existing else None
            if item.kind == "Secret" and list_wide:
                return listed.get((item.namespace or "", item.name))
            if item.kind == "Secret":
                if item.namespace not in existing:
                    return None
                return api.get("v1", "secrets", item.namespace, item.name)
            if item.manifest is not None and item.kind in PLURALS:
                version = item.manifest["apiVersion"]
                return api.get(version, PLURALS[item.kind], item.namespace, item.name)
            cc = session.profile.cluster_config
            assert cc is not None
            return api.get(f"{cc.group}/{cc.version}", cc.plural, item.namespace, item.name)

        found = parallel(items, fetch)
        return {
            (d.context, d.kind, d.namespace, d.name): obj
            for d, obj in zip(items, found, strict=True)
        }

    live: Live = {}
    for part in parallel(list(by_context), observe_context):
        live.update(part)
    return live


def gather_facts(session: Session) -> list[ClusterFacts]:
    return parallel(list(session.apis), lambda c: _facts(session, c))


def offline_facts(config: Config) -> list[ClusterFacts]:
    """Facts without reading any cluster: openshift 'auto' counts as no, no selector."""
    facts = []
    for context, roles in roles_by_context(config).items():
        entry = cluster_entry(config, context)
        workloads = workload_namespaces(config, context)
        facts.append(
            ClusterFacts(
                context,
                roles,
                entry is not None and entry.openshift == "true",
                tuple(sorted(workloads)),
                observed=False,
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
    warnings += findings(session.config, session.profile, facts)
    desired = desired_objects(session, facts)
    live = _observe_live(session, desired)
    changes = tuple(
        diff(d, live[(d.context, d.kind, d.namespace, d.name)], manager=FIELD_MANAGER)
        for d in desired
    )
    return Plan(changes, tuple(warnings))


# --- execute ---------------------------------------------------------------------------


class OutcomeStatus(enum.StrEnum):
    APPLIED = "applied"
    UNCHANGED = "unchanged"
    SKIPPED = "skipped"
    FAILED = "failed"
    CONFLICT = "conflict"


@dataclass(frozen=True)
class Outcome:
    change: Change
    status: OutcomeStatus
    message: str = ""
    backup: str | None = None


@dataclass(frozen=True)
class ApplyReport:
    outcomes: tuple[Outcome, ...]
    dry_run: bool

    @property
    def failed(self) -> tuple[Outcome, ...]:
        return tuple(
            o for o in self.outcomes if o.status in (OutcomeStatus.FAILED, OutcomeStatus.CONFLICT)
        )

    @property
    def accepted(self) -> int:
        """Objects the apiserver accepted (stored, or only checked in a dry run)."""
        return sum(1 for o in self.outcomes if o.status is OutcomeStatus.APPLIED)

    @property
    def writes(self) -> int:
        """Objects stored: none in a server dry run, whatever the apiserver accepted."""
        return 0 if self.dry_run else self.accepted

    def status_text(self, outcome: Outcome) -> str:
        """``applied`` as the user reads it: ``would apply`` when nothing was stored."""
        if self.dry_run and outcome.status is OutcomeStatus.APPLIED:
            return "would apply"
        return str(outcome.status)

    def summary(self) -> str:
        failures = f"{len(self.failed)} failure(s)"
        if self.dry_run:
            return f"0 writes (dry run): {self.accepted} would apply; {failures}"
        return f"{self.writes} write(s); {failures}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "writes": self.writes,
            "would_apply": self.accepted if self.dry_run else 0,
            "results": [
                {
                    "context": o.change.context,
                    "object": o.change.desired.ref,
                    "action": str(o.change.action),
                    "status": self.status_text(o),
                    "message": o.message,
                    "backup": o.backup,
                }
                for o in self.outcomes
            ],
        }


def _backup(session: Session, change: Change, *, dry_run: bool) -> str | None:
    d = change.desired
    live = change.live
    mode = session.config.backup.mode
    if live is None or mode == "none" or not change.overwrites_foreign_data:
        return None
    if mode == "secret":
        manifest = backup_secret(live, d.namespace or "", d.name)
        session.apis[d.context].create(manifest, dry_run=dry_run)
        return f"Secret {d.namespace}/{manifest['metadata']['name']}"
    data = live.get("data") or {}
    name = backup_name(d.name, data)
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
    d = change.desired
    api = session.apis[d.context]
    if change.action is Action.UNCHANGED:
        return Outcome(change, OutcomeStatus.UNCHANGED)
    if dry_run and d.kind != "Namespace" and d.namespace in pending_namespaces:
        return Outcome(
            change,
            OutcomeStatus.SKIPPED,
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
            ops = [op for patch in d.patches for op in patch.ops()]
            api.json_patch(
                f"{cc.group}/{cc.version}", cc.plural, d.namespace, d.name, ops, dry_run=dry_run
            )
        else:
            # Back up foreign data before any attempt to overwrite it (idempotent: named by hash).
            backup = _backup(session, change, dry_run=dry_run)
            api.apply(d.manifest, force=force, dry_run=dry_run)
    except Conflict as exc:
        return Outcome(change, OutcomeStatus.CONFLICT, exc.one_line(), backup)
    except AirtrustError as exc:
        return Outcome(change, OutcomeStatus.FAILED, exc.one_line(), backup)
    return Outcome(change, OutcomeStatus.APPLIED, backup=backup)


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
        pending = frozenset(c.desired.name for c in namespaces if c.action is Action.CREATE)
        done: list[Outcome] = []
        for group in (namespaces, rest):

            def apply(change: Change) -> Outcome:
                return _apply_one(
                    session, change, force=force, dry_run=dry_run, pending_namespaces=pending
                )

            for result in parallel(group, apply):
                done.append(result)
                if progress and result.status is not OutcomeStatus.UNCHANGED:
                    progress(
                        f"{result.status} {result.change.context}: {result.change.desired.ref}"
                    )
        return done

    for result in parallel(list(session.apis), run_context):
        outcomes.extend(result)
    return ApplyReport(tuple(outcomes), dry_run)


def run(
    session: Session,
    *,
    force: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
    on_plan: Callable[[Plan], None] | None = None,
) -> tuple[Plan, ApplyReport]:
    """Plan, check every right, then execute: the one sequence that writes planned objects."""
    plan = make_plan(session)
    preflight(session, plan)
    if on_plan is not None:
        on_plan(plan)
    return plan, execute(session, plan, force=force, dry_run=dry_run, progress=progress)


def run_saved(
    session: Session,
    saved: SavedPlan,
    *,
    force: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> tuple[Plan, ApplyReport]:
    """``apply FILE``: plan again and carry out the plan only if it is the saved one (no
    live object moved, nothing would be sent differently); else :class:`StalePlan`."""
    plan = make_plan(session)
    why = saved.stale(SavedPlan.of(plan, saved.config))
    if why:
        more = f" (and {len(why) - 1} more)" if len(why) > 1 else ""
        raise StalePlan(
            f"the saved plan is stale: {why[0]}{more}",
            hint=f"review again with 'airtrust plan -c {saved.config} --out FILE', then apply it",
        )
    preflight(session, plan)
    return plan, execute(session, plan, force=force, dry_run=dry_run, progress=progress)
