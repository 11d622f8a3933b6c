"""Two-phase CA rotation without downtime, with its state kept in the cluster.

Phase 1 (``rotate start``): every bundle carries old + new CA (secrets,
workload namespaces, sidecar images), and only then are the TLS
certificates re-issued under the new CA. Clients trust both throughout, so
there is no moment where a served certificate is not trusted.

Phase 2 (``rotate finish``): only once every endpoint and TLS secret chains
to the new CA alone, the old CA is removed everywhere and the images are
re-patched.

The state is a ConfigMap ``airtrust-rotation`` next to the control plane
(public data only: CA certificates, fingerprints, phase, image references),
so any machine with the config can continue or inspect a rotation. Every
session overlays it: during and after a rotation, plan/apply/doctor use the
rotation's bundle and keep the re-issued certificates instead of reverting
them to the files named in ``airtrust.yaml``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from airtrust.controller.reconcile import Session, execute, make_plan, preflight
from airtrust.errors import AirtrustError, CheckFailed, InputError
from airtrust.kube.api import PermissionDenied
from airtrust.pki import keys
from airtrust.pki.bundle import Bundle, build_bundle, fingerprint, read_certificates
from airtrust.pki.verify import verify_server
from airtrust.plan.desired import CLUSTER, TLSMaterial
from airtrust.plan.model import MANAGED_BY

STATE_NAME = "airtrust-rotation"
STARTED, FINISHED = "started", "finished"


@dataclass
class RotationState:
    phase: str
    old_pem: bytes
    new_pem: bytes
    started_at: str
    finished_at: str = ""
    tls: str = "kept"  # kept or reissued
    images: dict[str, str] = field(default_factory=dict)

    def certificates(self, pem: bytes) -> list[x509.Certificate]:
        return [a.certificate for a in read_certificates(pem, STATE_NAME)]

    def bundle(self, now: dt.datetime) -> Bundle:
        pem = self.new_pem if self.phase == FINISHED else self.old_pem + self.new_pem
        return build_bundle(read_certificates(pem, STATE_NAME), now=now)

    def to_data(self) -> dict[str, str]:
        return {
            "phase": self.phase,
            "old-ca.pem": self.old_pem.decode(),
            "new-ca.pem": self.new_pem.decode(),
            "started-at": self.started_at,
            "finished-at": self.finished_at,
            "tls": self.tls,
            "images": json.dumps(self.images, sort_keys=True),
        }

    @classmethod
    def from_data(cls, data: dict[str, str]) -> RotationState:
        return cls(
            data["phase"],
            data["old-ca.pem"].encode(),
            data["new-ca.pem"].encode(),
            data.get("started-at", ""),
            data.get("finished-at", ""),
            data.get("tls", "kept"),
            json.loads(data.get("images") or "{}"),
        )

    def summary(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "tls": self.tls,
            "images": self.images,
            "old": [fingerprint(c) for c in self.certificates(self.old_pem)],
            "new": [fingerprint(c) for c in self.certificates(self.new_pem)],
        }


def location(session: Session) -> tuple[str, str]:
    """(context, namespace) of the state ConfigMap: beside the control plane."""
    if session.config.control_plane is not None:
        return session.config.control_plane.context, session.profile.tls_secret.namespace
    context = session.config.clusters[0].context
    return context, session.profile.ca_targets(CLUSTER, openshift=False)[0].namespace


def load_state(session: Session) -> RotationState | None:
    context, namespace = location(session)
    live = session.apis[context].get("v1", "configmaps", namespace, STATE_NAME)
    if live is None:
        return None
    try:
        return RotationState.from_data(live.get("data") or {})
    except (KeyError, ValueError) as exc:
        raise InputError(
            f"context '{context}': ConfigMap {namespace}/{STATE_NAME} is not a rotation record "
            f"({exc})",
            hint=f"kubectl -n {namespace} delete configmap {STATE_NAME} if stale",
        ) from None


def save_state(session: Session, state: RotationState) -> None:
    context, namespace = location(session)
    api = session.apis[context]
    if api.get("v1", "namespaces", None, namespace) is None:
        api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    api.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": STATE_NAME,
                "namespace": namespace,
                "labels": {MANAGED_BY[0]: MANAGED_BY[1]},
            },
            "data": state.to_data(),
        },
        force=True,
    )


def _live_tls(session: Session, anchors: Sequence[x509.Certificate]) -> TLSMaterial | None:
    """The live control-plane TLS secret, when it chains to ``anchors`` (the new CA)."""
    if session.config.control_plane is None or session.config.tls is None:
        return None
    name = session.config.tls.secret_name or session.profile.tls_secret.name
    live = session.apis[session.config.control_plane.context].get(
        "v1", "secrets", session.profile.tls_secret.namespace, name
    )
    try:
        data = (live or {}).get("data") or {}
        chain_pem, key_pem = base64.b64decode(data["tls.crt"]), base64.b64decode(data["tls.key"])
        chain = [a.certificate for a in read_certificates(chain_pem, name)]
        verify_server(
            chain[0],
            anchors=anchors,
            intermediates=chain[1:],
            hostname=session.config.domain,
            now=session.now,
        )
        if not keys.public_key_matches(
            keys.key_from_pem(key_pem, source=name), chain[0].public_key()
        ):
            return None
    except (AirtrustError, KeyError, ValueError):
        return None
    return TLSMaterial(chain_pem, key_pem, fingerprint(chain[0]))


def overlay(session: Session) -> RotationState | None:
    """Make a session follow a rotation in progress or finished (see the module doc)."""
    if not session.apis:
        return None
    try:
        state = load_state(session)
    except PermissionDenied:
        # Reported with every other missing right by the preflight, before any write.
        return None
    if state is None:
        return None
    session.bundle = state.bundle(session.now)
    if state.tls == "reissued":
        session.tls_anchors = tuple(state.certificates(state.new_pem))
        live = _live_tls(session, state.certificates(state.new_pem))
        if live is not None:
            session.control_plane_tls = live
    if state.images:
        images = session.config.images.model_copy(update={"references": dict(state.images)})
        session.config = session.config.model_copy(update={"images": images})
    return state


def _apply(session: Session) -> None:
    plan = make_plan(session)
    preflight(session, plan)
    report = execute(session, plan)
    if report.failed:
        raise CheckFailed(
            f"{len(report.failed)} object(s) not applied; first: {report.failed[0].message}",
            hint="fix the cause and rerun the same rotate command (it continues)",
            reference="rotation-incomplete",
        )


def _repatch_images(session: Session, bundle: Bundle, suffix: str) -> dict[str, str]:
    """Re-patch each configured sidecar image for ``bundle``; the new references."""
    from airtrust.registry.append import Patcher
    from airtrust.registry.client import RegistryClient
    from airtrust.registry.reference import parse_reference

    out = {}
    images = session.config.images
    for source, current in sorted(images.references.items()):
        ref = parse_reference(current)
        tag = (ref.tag or "latest").split("-rot-")[0]
        dest = ref.with_tag(f"{tag}-rot-{suffix}")
        with RegistryClient(
            ref.registry, ca_bundle=images.registry_ca, insecure=images.insecure
        ) as client:
            Patcher(client, bundle.certificates).patch(ref, dest)
        out[source] = str(dest)
    return out


def start(session: Session, new_ca: Path, *, keep_tls: bool = False) -> RotationState:
    from airtrust.workspace import chain_pem, load_authority

    existing = load_state(session)
    authority = None if keep_tls else load_authority(new_ca)
    chain_file = new_ca / "chain.pem" if (new_ca / "chain.pem").exists() else new_ca / "ca.crt"
    if not chain_file.exists():
        raise InputError(f"{new_ca} is not a CA folder", hint="airtrust ca create --out NEW")
    new_anchors = read_certificates(chain_file.read_bytes(), str(chain_file))
    new_certs = [a.certificate for a in new_anchors]
    new_pem = build_bundle(new_anchors, now=session.now).to_pem()
    if existing is not None and existing.phase == STARTED and existing.new_pem != new_pem:
        raise InputError(
            "another rotation is in progress",
            hint="finish it first (airtrust rotate finish) or check rotate status",
        )
    if existing is not None and existing.phase == STARTED:
        state = existing  # continue an interrupted start
    else:
        old_pem = session.bundle.to_pem()
        if {fingerprint(c) for c in new_certs} <= set(session.bundle.fingerprints):
            raise InputError(
                "the new CA is already the one in use",
                hint="give a CA folder made with airtrust ca create --out NEW",
            )
        state = RotationState(
            STARTED, old_pem, new_pem, dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        )
    save_state(session, state)
    # 1. every bundle carries old + new.
    session.bundle = state.bundle(session.now)
    if session.config.images.strategy == "patch" and session.config.images.references:
        if not state.images:
            state.images = _repatch_images(session, session.bundle, "both")
            save_state(session, state)
        overlay(session)
    _apply(session)
    # 2. only now serve certificates from the new CA: everyone already trusts it.
    if (
        authority is not None
        and session.config.control_plane is not None
        and session.config.tls is not None
    ):
        from airtrust.pki import authority as pki_authority

        key = keys.generate_key(keys.DEFAULT_KEY_TYPE)
        issued = pki_authority.issue_server(
            pki_authority.ServerSpec(session.config.domain),
            key.public_key(),
            issuer_chain=authority.chain,
            issuer_key=authority.key,
            now=session.now,
        ).certificate
        session.control_plane_tls = TLSMaterial(
            chain_pem((issued, *authority.intermediates())),
            keys.key_to_pem(key),
            fingerprint(issued),
        )
        # Cluster TLS secrets too: only certificates from the new CA may be kept.
        session.config = session.config.model_copy(update={"issue_from": new_ca})
        session.tls_anchors = tuple(new_certs)
        _apply(session)
        state.tls = "reissued"
        save_state(session, state)
    return state


def finish(
    session: Session, state: RotationState, *, connect_to: Sequence[Any] = ()
) -> RotationState:
    from airtrust.controller.doctor import check_endpoint

    if state.phase != STARTED:
        raise InputError("no rotation in progress", hint="airtrust rotate status")
    new_only = build_bundle(read_certificates(state.new_pem, STATE_NAME), now=session.now)
    probe = Session(
        session.config,
        session.profile,
        session.version,
        session.apis,
        new_only,
        session.control_plane_tls,
        session.now,
    )
    problems = []
    if session.config.control_plane is not None and session.config.tls is not None:
        if _live_tls(session, new_only.certificates) is None:
            problems.append("the control-plane TLS secret does not chain to the new CA")
        for check in check_endpoint(
            probe, session.config.domain, 443, connect_to, None, "endpoint", 0
        ):
            if check.status == "fail":
                problems.append(
                    f"{check.target} is not trusted with the new CA alone ({check.evidence})"
                )
    if problems:
        raise CheckFailed(
            "rotate finish refused: " + "; ".join(problems),
            hint="serve the certificates issued under the new CA (restart or reload the "
            "ingress), check with airtrust doctor, then run rotate finish again",
            reference="rotation-not-ready",
        )
    state.phase = FINISHED
    state.finished_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    session.bundle = new_only
    if state.images:
        state.images = _repatch_images(session, new_only, "new")
        images = session.config.images.model_copy(update={"references": dict(state.images)})
        session.config = session.config.model_copy(update={"images": images})
    session.control_plane_tls = (
        _live_tls(session, new_only.certificates) or session.control_plane_tls
    )
    _apply(session)
    save_state(session, state)
    return state
