"""A Session: config, profile, bundle and one API per context, opened once, never mutated.

Every use case starts here. Opening a session also makes it follow a CA
rotation recorded in the cluster (the "overlay"): during and after a
rotation, plan, apply and doctor distribute the rotation's bundle and keep the
re-issued certificates instead of reverting them to the files named in
``airtrust.yaml``. A use case that needs another view (rotation's phases)
derives a new Session with :meth:`Session.evolve`; none changes one in place.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography import x509

from airtrust.config import Config
from airtrust.errors import InputError, PermissionDenied
from airtrust.files import read_input
from airtrust.kube.api import KubeAPI
from airtrust.pki.bundle import Bundle, parse_bundle
from airtrust.pki.tlssecret import TLSMaterial, judge_tls_secret, tls_material
from airtrust.plan.manifests import ROTATION_RECORD
from airtrust.plan.rotation import RotationState, TLSState
from airtrust.plan.topology import rotation_location, tls_secret_name
from airtrust.profiles import Profile, load_profile

__all__ = ["Session", "follow", "live_control_plane_tls", "open_session", "read_rotation"]


@dataclass(frozen=True)
class Session:
    """Everything a use case reads; ``now`` is the one clock every decision uses."""

    config: Config
    profile: Profile
    version: str
    apis: Mapping[str, KubeAPI]
    bundle: Bundle
    control_plane_tls: TLSMaterial | None
    now: dt.datetime
    #: CAs a reused TLS certificate must chain to (a rotation narrows this to the new CA).
    tls_anchors: tuple[x509.Certificate, ...] | None = None
    #: the rotation this session follows, if one is recorded
    rotation: RotationState | None = None

    @property
    def reuse_anchors(self) -> tuple[x509.Certificate, ...]:
        return self.tls_anchors or tuple(self.bundle.certificates)

    def evolve(self, **changes: Any) -> Session:
        return replace(self, **changes)

    def close(self) -> None:
        for api in self.apis.values():
            api.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def open_session(
    config: Config,
    *,
    now: dt.datetime,
    kubeconfig: Path | None = None,
    connect: bool = True,
    follow_rotation: bool = True,
) -> Session:
    profile = load_profile(config.profile)
    version = config.version or profile.default_version
    bundle = parse_bundle([(str(p), read_input(str(p))) for p in config.ca.bundle], now=now)
    tls = None
    if config.tls is not None:
        tls = tls_material(
            read_input(str(config.tls.cert)),
            read_input(str(config.tls.key)),
            chain_source=str(config.tls.cert),
            key_source=str(config.tls.key),
            anchors=bundle.certificates,
            now=now,
        )
    apis: dict[str, KubeAPI] = {}
    try:
        if connect:
            for context in config.contexts():
                apis[context] = KubeAPI.connect(context, kubeconfig=kubeconfig or config.kubeconfig)
        session = Session(config, profile, version, apis, bundle, tls, now)
        if follow_rotation and apis:
            try:
                state = read_rotation(session)
            except PermissionDenied:
                # Reported with every other missing right by the preflight, before any write.
                state = None
            if state is not None:
                session = follow(session, state)
    except BaseException:
        for api in apis.values():
            api.close()
        raise
    return session


def read_rotation(session: Session) -> RotationState | None:
    """The rotation record beside the control plane, or None."""
    context, namespace = rotation_location(session.config, session.profile)
    live = session.apis[context].get("v1", "configmaps", namespace, ROTATION_RECORD)
    if live is None:
        return None
    try:
        return RotationState.from_data(live.get("data") or {})
    except (KeyError, ValueError) as exc:
        raise InputError(
            f"context '{context}': ConfigMap {namespace}/{ROTATION_RECORD} is not a rotation "
            f"record ({exc})",
            hint=f"kubectl -n {namespace} delete configmap {ROTATION_RECORD} if stale",
        ) from None


def live_control_plane_tls(
    session: Session, anchors: tuple[x509.Certificate, ...] | list[x509.Certificate]
) -> TLSMaterial | None:
    """The live control-plane TLS secret, when it is sound and chains to ``anchors``."""
    config, profile = session.config, session.profile
    if config.control_plane is None or config.tls is None:
        return None
    live = session.apis[config.control_plane.context].get(
        "v1", "secrets", profile.tls_secret.namespace, tls_secret_name(config, profile)
    )
    verdict = judge_tls_secret(
        live, hosts=[config.domain], anchors=anchors, now=session.now, window=dt.timedelta(0)
    )
    return verdict.pair.material if verdict.sound and verdict.pair else None


def follow(session: Session, state: RotationState) -> Session:
    """The session as a rotation in progress or finished wants it (see the module doc)."""
    changes: dict[str, Any] = {"bundle": state.bundle(session.now), "rotation": state}
    if state.tls is TLSState.REISSUED:
        new = tuple(state.new_certificates)
        changes["tls_anchors"] = new
        live = live_control_plane_tls(session, new)
        if live is not None:
            changes["control_plane_tls"] = live
    if state.images:
        images = session.config.images.model_copy(update={"references": dict(state.images)})
        changes["config"] = session.config.model_copy(update={"images": images})
    return session.evolve(**changes)
