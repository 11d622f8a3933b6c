"""``airtrust doctor``: prove, from the outside in, that every part trusts the CA.

Each check has a name, a status (ok, warn, fail, skip), the evidence it saw
and, when not ok, a fix a user can copy. Checks never stop at the first
problem: doctor reports every trust point so one run shows the whole picture.

Run:ai's preinstall-diagnostics only checks that one cluster TLS secret is
unexpired and matches a host name; doctor adds the CA bundle itself, the CA
secret in every namespace (same certificates everywhere, labels), key/cert
pairs and chains of every TLS secret, the live endpoints as a client with
only the local bundle sees them (missing intermediates named), the Helm
releases' custom-CA values, and the sidecar images' trust stores.
"""

from __future__ import annotations

import base64
import datetime as dt
import ssl
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from cryptography import x509

from airtrust.controller.reconcile import Session, _cluster_entry
from airtrust.errors import AirtrustError
from airtrust.pki import keys, names
from airtrust.pki.bundle import fingerprint, is_ca, read_certificates
from airtrust.pki.verify import verify_server
from airtrust.plan.desired import CLUSTER, CONTROL_PLANE

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
APPLY_FIX = "airtrust apply -c airtrust.yaml"


@dataclass(frozen=True)
class Check:
    name: str
    context: str
    target: str
    status: str
    evidence: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class DoctorReport:
    checks: list[Check] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(c.status == FAIL for c in self.checks)

    def add(self, *checks: Check) -> None:
        self.checks.extend(checks)


@dataclass(frozen=True)
class ConnectTo:
    """curl's --connect-to HOST:PORT:ADDR:PORT2 — reach HOST:PORT at ADDR:PORT2."""

    host: str
    port: int
    address: str
    address_port: int

    @staticmethod
    def route(rules: Sequence[ConnectTo], host: str, port: int) -> tuple[str, int]:
        """Where to connect for host:port: the first matching rule, else the name itself."""
        for rule in rules:
            if rule.host == host and rule.port == port:
                return rule.address, rule.address_port
        return host, port

    @classmethod
    def parse(cls, text: str) -> ConnectTo:
        from airtrust.errors import InputError

        parts = text.split(":")
        if len(parts) != 4 or not parts[1].isdigit() or not parts[3].isdigit():
            raise InputError(
                f"--connect-to {text} is not HOST:PORT:ADDR:PORT",
                hint="e.g. --connect-to runai.example.com:443:127.0.0.1:8443",
            )
        return cls(parts[0], int(parts[1]), parts[2], int(parts[3]))


def _days(cert: x509.Certificate, now: dt.datetime) -> int:
    return (cert.not_valid_after_utc - now).days


# --- 1. the bundle -------------------------------------------------------------------


def check_bundle(session: Session, warn_days: int) -> list[Check]:
    bundle = session.bundle
    files = ", ".join(str(p) for p in session.config.ca.bundle)
    problems = [c.subject.rfc4514_string() for c in bundle.certificates if not is_ca(c)]
    if problems:
        return [
            Check(
                "ca-bundle",
                "-",
                files,
                FAIL,
                f"not CA certificates: {'; '.join(problems)}",
                "airtrust bundle build CA.pem --out ca-bundle.pem (only CA certificates)",
            )
        ]
    first = min(bundle.certificates, key=lambda c: c.not_valid_after_utc)
    days = _days(first, session.now)
    evidence = (
        f"{len(bundle.anchors)} CA certificate(s), no keys; first expiry "
        f"{first.not_valid_after_utc:%Y-%m-%d} ({days} days, "
        f"{first.subject.rfc4514_string()})"
    )
    if days < 0:
        return [
            Check(
                "ca-bundle", "-", files, FAIL, evidence, "airtrust rotate start --new-ca NEW_CA_DIR"
            )
        ]
    if days < warn_days:
        return [
            Check(
                "ca-bundle",
                "-",
                files,
                WARN,
                evidence,
                "plan a rotation: airtrust ca create --out NEW_CA_DIR; "
                "airtrust rotate start --new-ca NEW_CA_DIR",
            )
        ]
    return [Check("ca-bundle", "-", files, OK, evidence)]


# --- 2. CA secrets -------------------------------------------------------------------


def _secret(session: Session, context: str, namespace: str, name: str) -> dict[str, Any] | None:
    return session.apis[context].get("v1", "secrets", namespace, name)


def judge_ca_secret(
    live: dict[str, Any] | None, key: str, want: set[str], labels: dict[str, str], target: str
) -> tuple[str, str, str]:
    """(status, evidence, fix) for one CA secret: the first problem, or ok."""
    take_over = APPLY_FIX + " --force-conflicts"
    if live is None:
        return FAIL, "missing", APPLY_FIX
    raw = (live.get("data") or {}).get(key)
    if raw is None:
        return FAIL, f"no key {key}", take_over
    data = base64.b64decode(raw)
    if b"PRIVATE KEY" in data:
        return FAIL, "holds a PRIVATE KEY block: a CA secret must hold certificates only", take_over
    try:
        have = {a.fingerprint for a in read_certificates(data, target)}
    except AirtrustError as exc:
        return FAIL, exc.message, take_over
    if have != want:
        missing = ", ".join(fp[:12] for fp in sorted(want - have)) or "none"
        extra = ", ".join(fp[:12] for fp in sorted(have - want)) or "none"
        return FAIL, f"different CA certificates (missing {missing}; extra {extra})", take_over
    have_labels = live.get("metadata", {}).get("labels") or {}
    absent = [f"{k}={v}" for k, v in labels.items() if have_labels.get(k) != v]
    if absent:
        return FAIL, f"labels missing: {', '.join(absent)}", APPLY_FIX
    return OK, f"{len(have)} CA(s), same fingerprints as the bundle", ""


def check_ca_secrets(session: Session, facts_by_context: dict[str, Any]) -> list[Check]:
    profile = session.profile
    want = set(session.bundle.fingerprints)
    name = profile.ca_secret.name
    out = []
    for context, fact in facts_by_context.items():
        targets = [
            (t.namespace, t.labels_for(session.version))
            for r in sorted(fact.roles)
            for t in profile.ca_targets(r, openshift=fact.openshift)
        ]
        targets += [(ns, {}) for ns in fact.workload_namespaces]
        for namespace, labels in targets:
            target = f"{namespace}/{name}"
            live = _secret(session, context, namespace, name)
            status, evidence, fix = judge_ca_secret(
                live, profile.ca_secret.key, want, labels, target
            )
            out.append(Check("ca-secret", context, target, status, evidence, fix))
    return out


# --- 3. TLS secrets ------------------------------------------------------------------


def tls_secret_check(
    context: str,
    target: str,
    live: dict[str, Any] | None,
    hosts: Sequence[str],
    anchors: Sequence[x509.Certificate],
    now: dt.datetime,
    warn_days: int,
    fix: str,
) -> Check:
    if live is None:
        return Check("tls-secret", context, target, FAIL, "missing", fix)
    if live.get("type") != "kubernetes.io/tls":
        return Check(
            "tls-secret",
            context,
            target,
            FAIL,
            f"type is {live.get('type')}, must be kubernetes.io/tls",
            fix,
        )
    data = live.get("data") or {}
    try:
        chain = [
            a.certificate for a in read_certificates(base64.b64decode(data["tls.crt"]), "tls.crt")
        ]
        key = keys.key_from_pem(base64.b64decode(data["tls.key"]), source="tls.key")
    except (AirtrustError, KeyError, ValueError) as exc:
        return Check("tls-secret", context, target, FAIL, f"unreadable: {exc}", fix)
    leaf = chain[0]
    if not keys.public_key_matches(key, leaf.public_key()):
        return Check("tls-secret", context, target, FAIL, "tls.key does not match tls.crt", fix)
    for host in hosts:
        probe = host.replace("*", "x", 1)
        if not names.covers(leaf, probe):
            dns, ips = names.san_names(leaf)
            return Check(
                "tls-secret",
                context,
                target,
                FAIL,
                f"SANs {', '.join([*dns, *map(str, ips)]) or 'none'} do not cover {host}",
                fix,
            )
        try:
            verify_server(leaf, anchors=anchors, intermediates=chain[1:], hostname=probe, now=now)
        except AirtrustError as exc:
            return Check("tls-secret", context, target, FAIL, exc.message, fix)
    days = _days(leaf, now)
    outlives = [
        c
        for c in chain[1:] + list(anchors)
        if c.subject == leaf.issuer and leaf.not_valid_after_utc > c.not_valid_after_utc
    ]
    evidence = (
        f"{leaf.subject.rfc4514_string()} for {', '.join(hosts)}, chain verifies, {days} days left"
    )
    if outlives:
        return Check("tls-secret", context, target, WARN, evidence + "; outlives its CA", fix)
    if days < warn_days:
        return Check("tls-secret", context, target, WARN, evidence, fix)
    return Check("tls-secret", context, target, OK, evidence)


def check_tls_secrets(
    session: Session, facts_by_context: dict[str, Any], warn_days: int
) -> list[Check]:
    out = []
    config, profile = session.config, session.profile
    anchors = session.bundle.certificates
    for context, fact in facts_by_context.items():
        if CONTROL_PLANE in fact.roles and not fact.openshift and config.tls is not None:
            name = config.tls.secret_name or profile.tls_secret.name
            ns = profile.tls_secret.namespace
            fix = (
                f"airtrust cert issue --ca-dir CA_DIR --domain {config.domain} --out DIR; "
                "point tls: in airtrust.yaml at it; airtrust apply -c airtrust.yaml"
            )
            out.append(
                tls_secret_check(
                    context,
                    f"{ns}/{name}",
                    _secret(session, context, ns, name),
                    [config.domain],
                    anchors,
                    session.now,
                    warn_days,
                    fix,
                )
            )
        entry = _cluster_entry(config, context)
        if entry is not None and entry.domain and CLUSTER in fact.roles:
            for spec in profile.cluster_tls_for(session.version):
                if "{inference_domain}" in "".join(spec.names) and not entry.inference_domain:
                    continue
                hosts = [
                    n.format(cluster_domain=entry.domain, inference_domain=entry.inference_domain)
                    for n in spec.names
                ]
                out.append(
                    tls_secret_check(
                        context,
                        f"{spec.namespace}/{spec.name}",
                        _secret(session, context, spec.namespace, spec.name),
                        hosts,
                        anchors,
                        session.now,
                        warn_days,
                        "airtrust apply -c airtrust.yaml (reissues it)",
                    )
                )
    return out


# --- 4. live endpoints ----------------------------------------------------------------


def check_endpoint(
    session: Session,
    host: str,
    port: int,
    connect_to: Sequence[ConnectTo],
    expected_chain: Sequence[x509.Certificate] | None,
    label: str,
    warn_days: int,
) -> list[Check]:
    from airtrust.tlsprobe import Endpoint, fetch_chain

    address, address_port = ConnectTo.route(connect_to, host, port)
    endpoint = Endpoint(host, address_port, connect_to=address)
    target = f"https://{host}:{port}"

    def check(status: str, evidence: str, fix: str = "") -> Check:
        return Check(label, "-", target, status, evidence, fix)

    try:
        chain = fetch_chain(endpoint)
    except AirtrustError as exc:
        return [
            check(FAIL, exc.message, f"check the ingress/route for {host}; curl -v https://{host}")
        ]
    shown = " <- ".join(c.subject.rfc4514_string() for c in chain)
    same_leaf = expected_chain is None or fingerprint(expected_chain[0]) == fingerprint(chain[0])
    try:
        verify_server(
            chain[0],
            anchors=session.bundle.certificates,
            intermediates=chain[1:],
            hostname=host,
            now=session.now,
        )
    except AirtrustError as exc:
        if expected_chain is not None and same_leaf and len(expected_chain) > len(chain):
            return [
                check(
                    FAIL,
                    f"missing intermediate: the server sends {len(chain)} certificate(s), "
                    f"the TLS secret holds {len(expected_chain)}; served: {shown}",
                    "serve the full chain: tls.crt must be leaf + intermediates, and the "
                    "ingress must use that secret",
                )
            ]
        fix = (
            f"serve a certificate from the local CA for {host} (airtrust apply)"
            if same_leaf
            else "the server sends another certificate than the TLS secret holds: point the "
            "ingress at the secret, or restart it to reload"
        )
        reason = getattr(exc, "reason", "")
        return [check(FAIL, f"{exc.message} ({reason}); served: {shown}", fix)]
    days = _days(chain[0], session.now)
    status = WARN if days < warn_days else OK
    checks = [
        check(
            status,
            f"verified with the local bundle only; {days} days left; served: {shown}",
            "" if status == OK else "renew the certificate (airtrust apply)",
        )
    ]
    if not same_leaf:
        checks.append(
            check(
                WARN,
                "served certificate differs from the TLS secret",
                "restart the ingress controller or point it at the secret",
            )
        )
    return checks


def check_oidc(
    session: Session, host: str, port: int, connect_to: Sequence[ConnectTo], path: str
) -> Check:
    """The Keycloak discovery document over TLS verified with only the bundle, when served."""
    import http.client
    import socket

    address, address_port = ConnectTo.route(connect_to, host, port)
    target = f"https://{host}:{port}{path}"
    context = ssl.create_default_context()
    context.load_verify_locations(cadata=session.bundle.to_pem().decode())
    try:
        with (
            socket.create_connection((address, address_port), 10) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            conn = http.client.HTTPConnection(host, port)
            conn.sock = tls
            conn.request("GET", path, headers={"Host": host})
            status = conn.getresponse().status
    except ssl.SSLError as exc:
        return Check("oidc", "-", target, FAIL, str(exc), "fix the endpoint's certificate first")
    except (OSError, http.client.HTTPException) as exc:
        return Check(
            "oidc",
            "-",
            target,
            WARN,
            f"TLS verified, but no HTTP answer ({exc})",
            f"check that https://{host}/auth is routed to Keycloak",
        )
    if status == 404:
        return Check("oidc", "-", target, SKIP, "not served here (no Keycloak at this address)")
    if status >= 400:
        return Check("oidc", "-", target, WARN, f"HTTP {status}", "check Keycloak's realm")
    return Check("oidc", "-", target, OK, f"HTTP {status} over TLS verified with the bundle")


# --- 5. helm ---------------------------------------------------------------------------


def check_helm(session: Session) -> list[Check]:
    from airtrust.controller.helmsteps import helm_steps

    out = []
    for step in helm_steps(session):
        target = f"{step.namespace}/{step.release}"
        if step.installed is None:
            out.append(
                Check("helm", step.context, target, WARN, "release not installed", step.command())
            )
        elif not step.enabled:
            out.append(
                Check(
                    "helm",
                    step.context,
                    target,
                    FAIL,
                    f"{step.installed}: custom CA values not in effect "
                    f"({', '.join(f'{k}={v}' for k, v in step.values.items())})",
                    step.command(),
                )
            )
        else:
            out.append(
                Check(
                    "helm",
                    step.context,
                    target,
                    OK,
                    f"{step.installed}: " + ", ".join(f"{k}={v}" for k, v in step.values.items()),
                )
            )
    return out


# --- 6. sidecar images -----------------------------------------------------------------


def check_sidecars(session: Session, facts_by_context: dict[str, Any]) -> list[Check]:
    from airtrust.plan.imagepaths import references_to, walk_strings
    from airtrust.registry.append import BASE_LABEL, inspect_image
    from airtrust.registry.client import RegistryClient
    from airtrust.registry.reference import parse_reference

    cc = session.profile.cluster_config
    config = session.config
    if cc is None or config.images.strategy != "patch":
        return []
    out = []
    for context, fact in facts_by_context.items():
        if CLUSTER not in fact.roles:
            continue
        live = session.apis[context].get(
            f"{cc.group}/{cc.version}", cc.plural, cc.namespace, cc.name
        )
        target = f"{cc.kind} {cc.namespace}/{cc.name}"
        if live is None:
            out.append(
                Check(
                    "sidecar-images",
                    context,
                    target,
                    SKIP,
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
                    "sidecar-images",
                    context,
                    target,
                    WARN,
                    "no S3/Git sidecar image reference found in the spec",
                    "pin the fields with cluster_config.image_paths in airtrust.yaml",
                )
            )
        for pointer, value in found:
            where = f"{target} {pointer}"
            try:
                ref = parse_reference(value)
                with RegistryClient(
                    ref.registry,
                    ca_bundle=config.images.registry_ca,
                    insecure=config.images.insecure,
                ) as client:
                    reports = inspect_image(client, ref, session.bundle.certificates)
                    base_ok = _keeps_base_config(client, ref, reports, BASE_LABEL)
            except AirtrustError as exc:
                out.append(
                    Check(
                        "sidecar-images", context, where, FAIL, f"{value}: {exc.message}", exc.hint
                    )
                )
                continue
            if not all(r.trusted for r in reports):
                out.append(
                    Check(
                        "sidecar-images",
                        context,
                        where,
                        FAIL,
                        f"{value} does not trust every CA of the bundle",
                        "airtrust image patch --sidecars --registry REG --ca BUNDLE; put "
                        "the printed references in images.references; airtrust apply",
                    )
                )
            elif base_ok is False:
                out.append(
                    Check(
                        "sidecar-images",
                        context,
                        where,
                        FAIL,
                        f"{value} changed the base's user or entrypoint",
                        "repatch from the original base with airtrust image patch",
                    )
                )
            else:
                users = ", ".join(sorted({r.user or "root" for r in reports}))
                out.append(
                    Check(
                        "sidecar-images",
                        context,
                        where,
                        OK,
                        f"{value}: trust store holds the CA(s); user {users}",
                    )
                )
    return out


def _keeps_base_config(client: Any, ref: Any, reports: Any, label: str) -> bool | None:
    """Compare user and entrypoint with the base image named by airtrust's label."""
    import json

    for report in reports:
        manifest = client.manifest(ref.repository, report.digest).json()
        config = json.loads(client.blob(ref.repository, manifest["config"]["digest"]))
        base = (config.get("config") or {}).get("Labels", {}).get(label)
        if not base:
            return None
        try:
            base_manifest = client.manifest(ref.repository, base).json()
        except AirtrustError:
            return None
        base_config = json.loads(client.blob(ref.repository, base_manifest["config"]["digest"]))
        mine, theirs = config.get("config") or {}, base_config.get("config") or {}
        if mine.get("User") != theirs.get("User") or mine.get("Entrypoint") != theirs.get(
            "Entrypoint"
        ):
            return False
    return True


# --- 7. probe --------------------------------------------------------------------------


def check_probe(session: Session, facts_by_context: dict[str, Any]) -> list[Check]:
    out = []
    for context, fact in facts_by_context.items():
        if CLUSTER not in fact.roles:
            continue
        api = session.apis[context]
        nodes = list(api.list_objects("v1", "nodes"))
        ready = [
            n
            for n in nodes
            if any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in n.get("status", {}).get("conditions", [])
            )
        ]
        if not ready:
            out.append(
                Check(
                    "in-cluster-probe",
                    context,
                    "Job runai/airtrust-probe",
                    SKIP,
                    f"the cluster cannot run pods ({len(nodes)} node(s), none Ready)",
                )
            )
            continue
        if session.config.doctor.probe_image is None:
            out.append(
                Check(
                    "in-cluster-probe",
                    context,
                    "Job runai/airtrust-probe",
                    SKIP,
                    "no probe image configured",
                    "set doctor.probe_image to an image with curl in your registry",
                )
            )
            continue
        out.append(_run_probe(session, context))
    return out


def _run_probe(session: Session, context: str) -> Check:
    import time

    api = session.apis[context]
    ns = session.profile.ca_targets(CLUSTER, openshift=False)[0].namespace
    key = session.profile.ca_secret.key
    name = "airtrust-probe"
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": 60,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "probe",
                            "image": session.config.doctor.probe_image,
                            "command": [
                                "curl",
                                "-sSf",
                                "--cacert",
                                f"/ca/{key}",
                                "-o",
                                "/dev/null",
                                f"https://{session.config.domain}/",
                            ],
                            "volumeMounts": [{"name": "ca", "mountPath": "/ca"}],
                        }
                    ],
                    "volumes": [
                        {"name": "ca", "secret": {"secretName": session.profile.ca_secret.name}}
                    ],
                }
            },
        },
    }
    path = f"/apis/batch/v1/namespaces/{ns}/jobs"
    api.request("POST", path, body=job, what="create probe Job")
    try:
        for _ in range(120):
            live = api.get("batch/v1", "jobs", ns, name) or {}
            status = live.get("status", {})
            if status.get("succeeded"):
                return Check(
                    "in-cluster-probe",
                    context,
                    f"Job {ns}/{name}",
                    OK,
                    f"a pod mounting {session.profile.ca_secret.name} reached "
                    f"https://{session.config.domain}",
                )
            if status.get("failed"):
                return Check(
                    "in-cluster-probe",
                    context,
                    f"Job {ns}/{name}",
                    FAIL,
                    "curl from inside the cluster failed",
                    f"kubectl -n {ns} logs job/{name}",
                )
            time.sleep(1)
        return Check(
            "in-cluster-probe",
            context,
            f"Job {ns}/{name}",
            FAIL,
            "timed out",
            f"kubectl -n {ns} describe job/{name}",
        )
    finally:
        api.request(
            "DELETE",
            f"{path}/{name}",
            params={"propagationPolicy": "Background"},
            what="delete probe Job",
        )


# --- orchestration ---------------------------------------------------------------------


def run_doctor(
    session: Session,
    *,
    connect_to: Sequence[ConnectTo] = (),
    probe: bool = False,
    endpoints: bool = True,
) -> DoctorReport:
    from airtrust.controller.reconcile import gather_facts
    from airtrust.controller.rotation import load_state

    warn_days = session.config.doctor.warn_days
    report = DoctorReport()
    state = load_state(session) if session.apis else None
    if state is not None and state.phase == "started":
        report.add(
            Check(
                "rotation",
                "-",
                "ConfigMap airtrust-rotation",
                WARN,
                f"rotation in progress since {state.started_at}: bundles carry the old "
                f"and the new CA (expected); TLS {state.tls}",
                "airtrust rotate finish once every endpoint serves the new CA",
            )
        )
    elif state is not None:
        report.add(
            Check(
                "rotation", "-", "ConfigMap airtrust-rotation", OK, f"finished {state.finished_at}"
            )
        )
    report.add(*check_bundle(session, warn_days))
    facts = {f.context: f for f in gather_facts(session)}
    report.add(*check_ca_secrets(session, facts))
    report.add(*check_tls_secrets(session, facts, warn_days))
    if endpoints:
        expected = None
        cp = session.config.control_plane
        if cp is not None and session.config.tls is not None:
            name = session.config.tls.secret_name or session.profile.tls_secret.name
            live = _secret(session, cp.context, session.profile.tls_secret.namespace, name)
            if live is not None and "tls.crt" in (live.get("data") or {}):
                try:
                    expected = [
                        a.certificate
                        for a in read_certificates(
                            base64.b64decode(live["data"]["tls.crt"]), "tls.crt"
                        )
                    ]
                except AirtrustError:
                    expected = None
        report.add(
            *check_endpoint(
                session,
                session.config.domain,
                443,
                connect_to,
                expected,
                "control-plane-endpoint",
                warn_days,
            )
        )
        if not any(c.status == FAIL for c in report.checks if c.name == "control-plane-endpoint"):
            path = session.profile.oidc_discovery_path
            if path:
                report.add(check_oidc(session, session.config.domain, 443, connect_to, path))
        for cluster in session.config.clusters:
            if cluster.domain:
                report.add(
                    *check_endpoint(
                        session,
                        cluster.domain,
                        443,
                        connect_to,
                        None,
                        "cluster-endpoint",
                        warn_days,
                    )
                )
    report.add(*check_helm(session))
    report.add(*check_sidecars(session, facts))
    if probe:
        report.add(*check_probe(session, facts))
    return report
