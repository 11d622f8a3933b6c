"""The two phases of a rotation (see the package docstring)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

from airtrust.errors import CheckFailed, InputError
from airtrust.pki import keys
from airtrust.pki.bundle import Bundle, build_bundle, fingerprint, read_certificates
from airtrust.pki.tlssecret import TLSMaterial
from airtrust.plan.manifests import namespace_manifest, rotation_configmap
from airtrust.plan.node_agent import AGENT_NAME
from airtrust.plan.node_trust import node_lacks, registry_ca_digest
from airtrust.plan.openshift_trust import CONFIG_NAMESPACE, openshift_lacks
from airtrust.plan.rotation import Phase, RotationState, TLSState
from airtrust.plan.topology import rotation_location
from airtrust.probe import ConnectTo, probe_endpoint
from airtrust.usecases import apply
from airtrust.usecases.node_trust import AgentNodes, agent_nodes
from airtrust.usecases.session import Session, follow, live_control_plane_tls, read_rotation

__all__ = [
    "NODE_TIMEOUT",
    "finish",
    "nodes_lacking",
    "nodes_without_new_ca",
    "save_state",
    "start",
    "wait_for_nodes",
]

log = logging.getLogger(__name__)

#: How long ``rotate start`` waits for every node to hold old + new: agents pass every
#: 30 s by default, so a few passes' worth (a missed pass, a restarted pod).
NODE_TIMEOUT = 300.0
#: Seconds between two looks at the nodes while waiting.
NODE_POLL = 2.0


def save_state(session: Session, state: RotationState) -> None:
    context, namespace = rotation_location(session.config, session.profile)
    api = session.apis[context]
    if api.get("v1", "namespaces", None, namespace) is None:
        api.create(namespace_manifest(namespace))
    api.apply(rotation_configmap(namespace, state.to_data()), force=True)


def _apply(session: Session) -> None:
    _, report = apply.run(session)
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


def _stamp(session: Session) -> str:
    return session.now.isoformat(timespec="seconds")


def start(
    session: Session,
    new_ca: Path,
    *,
    keep_tls: bool = False,
    node_timeout: float = NODE_TIMEOUT,
    sleep: Callable[[float], None] = time.sleep,
) -> RotationState:
    from airtrust.usecases.workspace import chain_pem, load_authority

    existing = read_rotation(session)
    authority = None if keep_tls else load_authority(new_ca)
    chain_file = new_ca / "chain.pem" if (new_ca / "chain.pem").exists() else new_ca / "ca.crt"
    if not chain_file.exists():
        raise InputError(f"{new_ca} is not a CA folder", hint="airtrust ca create --out NEW")
    new_anchors = read_certificates(chain_file.read_bytes(), str(chain_file))
    new_certs = [a.certificate for a in new_anchors]
    new_pem = build_bundle(new_anchors, now=session.now).to_pem()
    if existing is not None and existing.phase is Phase.STARTED and existing.new_pem != new_pem:
        raise InputError(
            "another rotation is in progress",
            hint="finish it first (airtrust rotate finish) or check rotate status",
        )
    if existing is not None and existing.phase is Phase.STARTED:
        state = existing  # continue an interrupted start
    else:
        if {fingerprint(c) for c in new_certs} <= set(session.bundle.fingerprints):
            raise InputError(
                "the new CA is already the one in use",
                hint="give a CA folder made with airtrust ca create --out NEW",
            )
        state = RotationState(Phase.STARTED, session.bundle.to_pem(), new_pem, _stamp(session))
    save_state(session, state)
    # 1. every bundle carries old + new.
    session = session.evolve(bundle=state.bundle(session.now))
    if session.config.images.strategy == "patch" and session.config.images.references:
        if not state.images:
            state = state.evolve(images=_repatch_images(session, session.bundle, "both"))
            save_state(session, state)
        session = follow(session, state)
    _apply(session)
    # 2. every node's runtime holds old + new (the agents follow the CA secret just
    # written): a registry certificate from the new CA must never meet a node without it.
    wait_for_nodes(session, state, timeout=node_timeout, sleep=sleep)
    # 3. only now serve certificates from the new CA: everyone already trusts it.
    config = session.config
    if authority is not None and config.control_plane is not None and config.tls is not None:
        from airtrust.pki import authority as pki_authority

        key = keys.generate_key(keys.DEFAULT_KEY_TYPE)
        issued = pki_authority.issue_server(
            pki_authority.ServerSpec(config.domain),
            key.public_key(),
            issuer_chain=authority.chain,
            issuer_key=authority.key,
            now=session.now,
        ).certificate
        # Cluster TLS secrets too: only certificates from the new CA may be kept.
        session = session.evolve(
            control_plane_tls=TLSMaterial(
                chain_pem((issued, *authority.intermediates())),
                keys.key_to_pem(key),
                fingerprint(issued),
            ),
            config=config.model_copy(update={"issue_from": new_ca}),
            tls_anchors=tuple(new_certs),
        )
        _apply(session)
        state = state.evolve(tls=TLSState.REISSUED)
        save_state(session, state)
    return state


def nodes_lacking(session: Session, digests: Collection[str], what: str) -> list[str]:
    """Per context with node trust enabled, the nodes whose agent does not report one of
    ``digests`` for every registry (digests from the agent's own function), one phrase
    per context; on OpenShift the registry CAs ConfigMap the Machine Config Operator
    gives the nodes, judged the same way. A node without the annotation has no agent,
    so nothing airtrust gave it: it lacks ``what`` too."""
    out = []
    for each in agent_nodes(session):
        if each.unreadable:
            out.append(f"context '{each.context}': nodes not readable ({each.unreadable})")
            continue
        registries = each.settings.registries
        if each.openshift is not None:
            cas = each.openshift
            lacks = openshift_lacks(cas.configmap, cas.data, registries, digests)
            if lacks:
                out.append(
                    f"context '{each.context}': the nodes are not given {what} "
                    f"({'; '.join(f'{r}: {why}' for r, why in lacks.items())}; airtrust apply "
                    f"writes {CONFIG_NAMESPACE} and image.config.openshift.io/cluster)"
                )
            continue
        lacking = {
            str(n["metadata"]["name"]): why
            for n in each.nodes
            if (why := node_lacks(AgentNodes.annotations(n), digests, registries)) is not None
        }
        if lacking:
            reasons = "; ".join(f"{name}: {why}" for name, why in lacking.items())
            out.append(
                f"context '{each.context}': node(s) {', '.join(lacking)} do not hold {what} "
                f"yet ({reasons}; their runtime would refuse the registry's new certificate; "
                f"check: kubectl get pods -A -l app.kubernetes.io/name={AGENT_NAME} -o wide)"
            )
    return out


def wait_for_nodes(
    session: Session,
    state: RotationState,
    *,
    timeout: float = NODE_TIMEOUT,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Until every node holds the rotation's old + new bundle, or refuse after
    ``timeout`` seconds naming the nodes that lag: nothing is re-issued then, and the
    same ``rotate start`` continues once they caught up."""
    both = {registry_ca_digest(state.bundle(session.now).to_pem())}
    deadline = time.monotonic() + timeout
    while lagging := nodes_lacking(session, both, "old + new CA"):
        if time.monotonic() >= deadline:
            raise CheckFailed(
                f"rotate start waited {timeout:.0f} s and re-issued nothing: " + "; ".join(lagging),
                hint="the bundles already carry old + new: let the node agents catch up "
                "(or run airtrust node install on those nodes), then rerun the same rotate "
                "start (it continues; --node-timeout waits longer)",
                reference="rotation-nodes-lag",
            )
        log.info("waiting for the nodes: %s", "; ".join(lagging))
        sleep(NODE_POLL)


def nodes_without_new_ca(session: Session, state: RotationState) -> list[str]:
    """What ``rotate finish`` refuses for: nodes whose runtime would not trust the new CA
    alone. Finishing drops the old CA from every bundle and the registry serves a
    certificate from the new one: a node must report the rotation's old + new bundle or
    the new alone."""
    held_new = {
        registry_ca_digest(state.bundle(session.now).to_pem()),
        registry_ca_digest(state.new_bundle(session.now).to_pem()),
    }
    return nodes_lacking(session, held_new, "the new CA")


def finish(
    session: Session, state: RotationState, *, connect_to: Sequence[ConnectTo] = ()
) -> RotationState:
    if state.phase is not Phase.STARTED:
        raise InputError("no rotation in progress", hint="airtrust rotate status")
    new_only = state.new_bundle(session.now)
    config = session.config
    problems = nodes_without_new_ca(session, state)
    if config.control_plane is not None and config.tls is not None:
        if live_control_plane_tls(session, new_only.certificates) is None:
            problems.append("the control-plane TLS secret does not chain to the new CA")
        result = probe_endpoint(
            config.domain,
            443,
            anchors=new_only.certificates,
            now=session.now,
            connect_to=connect_to,
        )
        if not result.trusted:
            why = result.unreachable or result.rejected
            problems.append(
                f"{result.url} is not trusted with the new CA alone "
                f"({why.message if why else 'unknown'})"
            )
    if problems:
        raise CheckFailed(
            "rotate finish refused: " + "; ".join(problems),
            hint="serve the certificates issued under the new CA (restart or reload the "
            "ingress), check with airtrust doctor, then run rotate finish again",
            reference="rotation-not-ready",
        )
    state = state.evolve(phase=Phase.FINISHED, finished_at=_stamp(session))
    session = session.evolve(bundle=new_only)
    if state.images:
        state = state.evolve(images=_repatch_images(session, new_only, "new"))
        images = session.config.images.model_copy(update={"references": dict(state.images)})
        session = session.evolve(config=session.config.model_copy(update={"images": images}))
    session = session.evolve(
        control_plane_tls=live_control_plane_tls(session, new_only.certificates)
        or session.control_plane_tls
    )
    _apply(session)
    save_state(session, state)
    return state
