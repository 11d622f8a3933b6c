"""``airtrust doctor``: prove, from the outside in, that every part trusts the CA.

Each check has a name, a status (ok, warn, fail, skip), the evidence it saw
and, when not ok, a fix a user can copy. Checks never stop at the first
problem: doctor reports every trust point so one run shows the whole picture.
doctor only reads (``--probe`` creates and removes its one Job).

Run:ai's preinstall-diagnostics only checks that one cluster TLS secret is
unexpired and matches a host name; doctor adds the CA bundle itself, the CA
secret in every namespace (same certificates everywhere, labels), key/cert
pairs and chains of every TLS secret, the live endpoints as a client with
only the local bundle sees them (missing intermediates named), the identity
provider's discovery document, the Helm releases' custom-CA values, and the
sidecar images' trust stores.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from airtrust.config import Config
from airtrust.errors import Unreachable
from airtrust.kube.api import KubeAPI
from airtrust.pki.tlssecret import served_chain
from airtrust.plan.manifests import ROTATION_RECORD
from airtrust.plan.rotation import Phase
from airtrust.plan.topology import tls_secret_name
from airtrust.probe import ConnectTo
from airtrust.usecases.apply import gather_facts
from airtrust.usecases.doctor.bundle import check_bundle
from airtrust.usecases.doctor.cluster_oidc import check_cluster_oidc
from airtrust.usecases.doctor.controller import check_controller
from airtrust.usecases.doctor.endpoints import check_endpoint, check_oidc
from airtrust.usecases.doctor.helm import check_helm
from airtrust.usecases.doctor.inject import check_inject
from airtrust.usecases.doctor.model import CertificateSeen, Check, DoctorReport, Status, seen
from airtrust.usecases.doctor.node_registry import check_node_registry, probe_node_pulls
from airtrust.usecases.doctor.probe import check_probe
from airtrust.usecases.doctor.secrets import check_ca_secrets, check_tls_secrets
from airtrust.usecases.doctor.sidecars import check_sidecars
from airtrust.usecases.session import Session, open_session

__all__ = ["Check", "DoctorReport", "Status", "open_for_doctor", "run_doctor"]


def _rotation(session: Session) -> list[Check]:
    state = session.rotation
    target = f"ConfigMap {ROTATION_RECORD}"
    if state is None:
        return []
    if state.phase is Phase.STARTED:
        return [
            Check(
                "rotation",
                "-",
                target,
                Status.WARN,
                f"rotation in progress since {state.started_at}: bundles carry the old "
                f"and the new CA (expected); TLS {state.tls}",
                "airtrust rotate finish once every endpoint serves the new CA",
            )
        ]
    return [Check("rotation", "-", target, Status.OK, f"finished {state.finished_at}")]


def open_for_doctor(
    config: Config, *, now: dt.datetime, kubeconfig: Path | None = None
) -> tuple[Session, tuple[Check, ...]]:
    """A session for doctor, and the contexts it cannot reach as failed checks.

    doctor reports every trust point it can: a cluster that does not answer is
    one failed check, and the checks that need no cluster (the bundle, the
    endpoints) still run. With any context unreachable the session has no API
    at all, so no cluster check runs half-informed.
    """
    try:
        return open_session(config, now=now, kubeconfig=kubeconfig), ()
    except Unreachable:
        pass
    session = open_session(config, now=now, kubeconfig=kubeconfig, connect=False)
    checks = []
    for context in config.contexts():
        try:
            api = KubeAPI.connect(context, kubeconfig=kubeconfig or config.kubeconfig)
            try:
                api.api_groups()
            finally:
                api.close()
        except Unreachable as exc:
            checks.append(
                Check(
                    "cluster",
                    context,
                    "apiserver",
                    Status.FAIL,
                    f"{exc.message}; the cluster checks did not run",
                    exc.hint or f"kubectl --context {context} get --raw /version  # must answer",
                )
            )
        else:
            checks.append(
                Check(
                    "cluster",
                    context,
                    "apiserver",
                    Status.SKIP,
                    "reachable; the cluster checks did not run while another context is not",
                )
            )
    return session, tuple(checks)


def _endpoints(session: Session, connect_to: Sequence[ConnectTo], warn_days: int) -> list[Check]:
    config, profile = session.config, session.profile
    expected = None
    cp = config.control_plane
    if cp is not None and config.tls is not None and cp.context in session.apis:
        live = session.apis[cp.context].get(
            "v1", "secrets", profile.tls_secret.namespace, tls_secret_name(config, profile)
        )
        expected = served_chain(live)
    out = check_endpoint(
        session, config.domain, 443, connect_to, expected, "control-plane-endpoint", warn_days
    )
    if profile.oidc_discovery_path and not any(c.status is Status.FAIL for c in out):
        out.append(check_oidc(session, config.domain, 443, connect_to, profile.oidc_discovery_path))
    for cluster in config.clusters:
        if cluster.domain:
            out += check_endpoint(
                session, cluster.domain, 443, connect_to, None, "cluster-endpoint", warn_days
            )
    return out


def run_doctor(
    session: Session,
    *,
    connect_to: Sequence[ConnectTo] = (),
    probe: bool = False,
    probe_connect_to: Sequence[ConnectTo] | None = None,
    endpoints: bool = True,
    unreachable: Sequence[Check] = (),
) -> DoctorReport:
    """Every check; ``unreachable`` (from :func:`open_for_doctor`) is reported after the
    checks that need no cluster. The probe Job takes ``probe_connect_to`` when given:
    pods may reach an endpoint at another address than the machine doctor runs on."""
    warn_days = session.config.doctor.warn_days
    checks = [*_rotation(session), *check_bundle(session, warn_days)]
    if not session.apis:
        # No cluster reached (see open_for_doctor): what needs none still runs.
        if endpoints:
            checks += _endpoints(session, connect_to, warn_days)
        return _report(session, [*checks, *unreachable], warn_days)
    facts = {f.context: f for f in gather_facts(session)}
    checks += check_ca_secrets(session, facts)
    checks += check_tls_secrets(session, facts, warn_days)
    if endpoints:
        checks += _endpoints(session, connect_to, warn_days)
    checks += check_cluster_oidc(session, facts)
    checks += check_helm(session)
    checks += check_sidecars(session, facts)
    checks += check_inject(session)
    checks += check_controller(session)
    checks += check_node_registry(session)
    if probe:
        routes = connect_to if probe_connect_to is None else probe_connect_to
        checks += check_probe(session, facts, routes)
        checks += probe_node_pulls(session)
    return _report(session, checks, warn_days)


def _report(session: Session, checks: list[Check], warn_days: int) -> DoctorReport:
    certificates: dict[tuple[str, str, str], CertificateSeen] = {}
    for cert in (
        *seen(session.bundle.certificates, "bundle"),
        *(c for check in checks for c in check.certificates),
    ):
        certificates.setdefault((cert.fingerprint, cert.source, cert.context), cert)
    rotation = session.rotation
    return DoctorReport(
        tuple(checks),
        tuple(certificates.values()),
        warn_days,
        {"phase": str(rotation.phase), "started_at": rotation.started_at}
        if rotation is not None
        else {},
        session.now.isoformat(timespec="seconds"),
    )
