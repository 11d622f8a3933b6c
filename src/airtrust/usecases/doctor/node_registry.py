"""``node-registry``: every node's container runtime trusts the registries with the CA.

A node whose runtime lacks the CA fails every pull from the local registry with
``x509: certificate signed by unknown authority`` (ImagePullBackOff), and nothing in
the cluster says so until a pod lands there. The node agent (``node sync``) annotates
each Node with the sha256 of the bundle it gave the runtime; this check reads those
annotations and compares them with the digest of the bundle airtrust distributes
now (the rotation's old + new during a rotation), computed by the very function the
agent uses, so a node the agent missed, or one still on the old CA, is named.

It runs only where ``node_trust`` is enabled in airtrust.yaml and registries are
named: a cluster whose nodes are trusted by other means has no annotation to read.

On k3s/RKE2 the files are not the trust: the service reads registries.yaml only when it
starts, so a node whose agent says it waits for a restart (``PENDING_ANNOTATION``) fails
whatever digest it reports, and the fix is that restart.

With ``--probe`` the runtime itself is asked too (:func:`probe_node_pulls`): a pod
pinned to each node pulls an image from each registry afresh, and the kubelet's
events are the evidence (``x509: certificate signed by unknown authority`` on a
refusal), so a node the annotation vouches for but whose runtime does not read the
files (a containerd without ``config_path``) is caught as well.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Sequence

from airtrust.config import NodeTrustSettings
from airtrust.errors import AirtrustError, NodeTrustError
from airtrust.kube.api import JsonObj, KubeAPI
from airtrust.plan.node_agent import AGENT_NAME, PULL_PROBE, pull_probe_pod
from airtrust.plan.node_trust import (
    CA_ANNOTATION,
    PENDING_ANNOTATION,
    REGISTRIES_ANNOTATION,
    Registry,
    parse_registry,
    pending_restart_command,
    registries_held,
    registry_ca_digest,
)
from airtrust.plan.openshift_trust import CONFIG_NAMESPACE, openshift_lacks
from airtrust.plan.topology import CLUSTER
from airtrust.registry.reference import parse_reference
from airtrust.usecases.doctor.model import Check, Status
from airtrust.usecases.node_trust import AgentNodes, OpenShiftCAs, agent_nodes
from airtrust.usecases.session import Session

__all__ = [
    "NAME",
    "PULL_NAME",
    "PULL_TIMEOUT",
    "check_node_registry",
    "judge_node",
    "judge_openshift",
    "judge_pull",
    "probe_node_pulls",
]

NAME = "node-registry"
PULL_NAME = "node-registry-pull"
#: How long every node's pulls may take together.
PULL_TIMEOUT = 90.0


def check_node_registry(session: Session) -> list[Check]:
    expected = registry_ca_digest(session.bundle.to_pem())
    bundle = " ".join(f"--ca {p}" for p in session.config.ca.bundle)
    out: list[Check] = []
    for each in agent_nodes(session):
        if each.unreadable:
            out.append(
                Check(NAME, each.context, "nodes", Status.SKIP, f"not listable: {each.unreadable}")
            )
        if each.openshift is not None:
            out += judge_openshift(each.context, each.openshift, each.settings, expected)
        for node in each.nodes:
            out += judge_node(each.context, node, each.settings, expected, bundle)
    return out


def judge_node(
    context: str, node: JsonObj, settings: NodeTrustSettings, expected: str, bundle: str
) -> list[Check]:
    """One check per registry the node must trust: what its annotations say it holds
    against ``expected`` (the digest of the bundle airtrust distributes), and whether its
    agent covers that registry at all (a registry added to airtrust.yaml, the DaemonSet
    not rendered again)."""
    name = str(node["metadata"]["name"])
    annotations = AgentNodes.annotations(node)
    held = annotations.get(CA_ANNOTATION)
    covered = registries_held(annotations)
    pending = annotations.get(PENDING_ANNOTATION)
    out = []
    for registry in _sorted(settings.registries):
        if pending:
            status = Status.FAIL
            fix = f"on node {name}: {pending_restart_command(pending)} (k3s/RKE2 read "
            fix += "registries.yaml only when they start; the agent then clears the annotation)"
            said = (
                f"node {name} has the CA files, but its runtime has not loaded them, so pulls "
                f"from {registry} may still fail with x509: certificate signed by unknown "
                f"authority ({PENDING_ANNOTATION}: {pending})"
            )
        elif held is None:
            status, fix = Status.FAIL, _fix(name, settings, bundle)
            said = (
                f"node {name} has no {CA_ANNOTATION} annotation: no airtrust agent gave its "
                f"runtime the CA, so pulls from {registry} may fail with x509: certificate "
                "signed by unknown authority"
            )
        elif held != expected:
            status, fix = Status.FAIL, _fix(name, settings, bundle)
            said = (
                f"node {name} holds bundle sha256 {held[:12]}…, not the current bundle's "
                f"{expected[:12]}… (an old CA, or its agent has not caught up)"
            )
        elif str(registry) not in covered:
            status, fix = Status.FAIL, _uncovered_fix(name, settings, bundle)
            said = (
                f"node {name}'s agent does not write the CA for {registry} "
                f"({REGISTRIES_ANNOTATION}: {', '.join(sorted(covered)) or 'none'}): "
                "airtrust.yaml names the registry, the agent was not rendered again"
            )
        else:
            status, fix = Status.OK, ""
            said = f"node {name} holds the current bundle (sha256 {expected[:12]}…)"
        out.append(Check(NAME, context, f"Node {name} registry {registry}", status, said, fix))
    return out


def judge_openshift(
    context: str, cas: OpenShiftCAs, settings: NodeTrustSettings, expected: str
) -> list[Check]:
    """OpenShift: no agent runs there; the nodes get what the ConfigMap
    ``image.config.openshift.io/cluster`` names holds under each registry's key (the
    Machine Config Operator writes it to every node), so that is what is judged."""
    lacks = openshift_lacks(cas.configmap, cas.data, settings.registries, [expected])
    where = (
        f"ConfigMap {CONFIG_NAMESPACE}/{cas.configmap}"
        if cas.configmap
        else "Image config.openshift.io/cluster"
    )
    fix = (
        f"airtrust apply (writes the registry CAs into {CONFIG_NAMESPACE} and points "
        f"image.config.openshift.io/cluster additionalTrustedCA at them; context '{context}')"
    )
    return [
        Check(
            NAME,
            context,
            f"{where} registry {registry}",
            Status.FAIL if registry in lacks else Status.OK,
            lacks.get(registry)
            or f"key {registry.openshift_key} holds the current bundle (sha256 {expected[:12]}…)",
            fix if registry in lacks else "",
        )
        for registry in _sorted(settings.registries)
    ]


def _uncovered_fix(node: str, settings: NodeTrustSettings, bundle: str) -> str:
    """The agent's registries come from its arguments: render it again from airtrust.yaml
    (every registry named there), or write the files on the node by hand."""
    install = _fix(node, settings, bundle).rsplit("; or ", 1)[-1]
    return (
        "airtrust render --node-trust -c airtrust.yaml --image IMAGE --out DIR, then kubectl "
        f"apply -k DIR (the agent's --registry list); or {install}"
    )


def _fix(node: str, settings: NodeTrustSettings, bundle: str) -> str:
    registries = " ".join(f"--registry {r}" for r in _sorted(settings.registries))
    runtime = settings.runtime or "auto"
    install = f"on node {node}: airtrust node install --root / --runtime {runtime} {registries} "
    install += bundle
    if settings.source:
        ns = settings.source.split("/")[1] if settings.source.count("/") >= 2 else "NS"
        return (
            f"kubectl -n {ns} get pods -l app.kubernetes.io/name={AGENT_NAME} "
            f"--field-selector spec.nodeName={node} (the agent must run there: airtrust "
            f"render --node-trust, kubectl apply -k); or {install}"
        )
    return install


def _sorted(registries: Sequence[Registry]) -> list[Registry]:
    # By name: Registry's own order compares a missing port with a number.
    return sorted(set(registries), key=str)


# --- doctor --probe: the runtime pulls ------------------------------------------------------


def _images(settings: NodeTrustSettings, references: Iterable[str]) -> dict[Registry, str]:
    """One image per registry to pull: node_trust.probe_images first, then the patched
    sidecar images (images.references), the pulls Run:ai's workloads make."""
    out: dict[Registry, str] = {}
    wanted = set(settings.registries)
    for image in (*settings.probe_images, *sorted(references)):
        try:
            registry = parse_registry(parse_reference(image).registry)
        except AirtrustError:
            continue
        if registry in wanted:
            out.setdefault(registry, image)
    return out


def _ready(node: JsonObj) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (node.get("status") or {}).get("conditions") or []
    )


def probe_node_pulls(session: Session, *, timeout: float = PULL_TIMEOUT) -> list[Check]:
    """Per context with node trust: a pull of each registry's image on every Ready node,
    all at once, each judged by the kubelet's events; the pods are always deleted."""
    bundle = " ".join(f"--ca {p}" for p in session.config.ca.bundle)
    out: list[Check] = []
    for context, api in sorted(session.apis.items()):
        settings = session.config.node_trust_for(context)
        if not settings.enabled:
            continue
        source = settings.source
        ns = (
            source.split("/")[1]
            if source and source.count("/") >= 2
            else session.profile.ca_targets(CLUSTER, openshift=False)[0].namespace
        )
        images = _images(settings, session.config.images.references.values())
        for registry in _sorted(settings.registries):
            if registry not in images:
                out.append(
                    Check(
                        PULL_NAME,
                        context,
                        f"registry {registry}",
                        Status.SKIP,
                        f"no image from {registry} to pull (none in node_trust.probe_images "
                        "or images.references)",
                        f"set node_trust.probe_images: [{registry}/REPOSITORY:TAG]",
                    )
                )
        try:
            listed = list(api.list_objects("v1", "nodes"))
        except AirtrustError as exc:
            out.append(Check(PULL_NAME, context, "nodes", Status.SKIP, exc.message))
            continue
        nodes = [n for n in listed if _ready(n)]
        for down in sorted(str(n["metadata"]["name"]) for n in listed if not _ready(n)):
            out.append(
                Check(
                    PULL_NAME,
                    context,
                    f"Node {down}",
                    Status.WARN,
                    f"node {down} is not Ready: its kubelet cannot be asked to pull, so its "
                    "runtime's trust is not known",
                    f"kubectl --context {context} describe node {down}",
                )
            )
        pods: list[tuple[str, Registry, str, str]] = []  # node, registry, image, pod name
        for node in sorted(str(n["metadata"]["name"]) for n in nodes):
            for registry, image in sorted(images.items(), key=lambda item: str(item[0])):
                # Named by node, registry and this run: a pod of an earlier run may still
                # be terminating under its own name.
                seed = f"{node} {registry} {session.now.isoformat()}"
                digest = hashlib.sha256(seed.encode()).hexdigest()[:12]
                pods.append((node, registry, image, f"{PULL_PROBE}-{digest}"))
        try:
            decided = _pull_all(api, ns, pods, timeout)
        except AirtrustError as exc:
            out.append(
                Check(
                    PULL_NAME,
                    context,
                    f"namespace {ns}",
                    Status.SKIP,
                    f"cannot run the pull pods: {exc.message}",
                    exc.hint or f"kubectl --context {context} create namespace {ns}",
                )
            )
            continue
        for node, registry, image, name in pods:
            status, said = decided.get(
                name,
                (Status.FAIL, f"the kubelet did not pull nor refuse {image} in {timeout:.0f} s"),
            )
            if name in decided:
                fix = _pull_fix(status, said, node, settings, bundle, f"kubectl -n {ns}", name)
            else:  # undecided: the pod's own events may say more than the timeout
                fix = f"kubectl -n {ns} describe pod {name} (run doctor --probe again); "
                fix += _fix(node, settings, bundle)
            out.append(
                Check(
                    PULL_NAME,
                    context,
                    f"Node {node} registry {registry}",
                    status,
                    f"node {node}, image {image}: {said}",
                    fix,
                )
            )
    return out


#: the runtime's words when it does not trust the registry's certificate
X509_TEXT = "x509:"


def _pull_fix(
    status: Status,
    said: str,
    node: str,
    settings: NodeTrustSettings,
    bundle: str,
    kubectl: str,
    pod: str,
) -> str:
    """Only a refused certificate is the node's trust to fix; a 401, a missing image or a
    timeout is the registry's or the image name's, and says so."""
    if status is Status.OK:
        return ""
    if X509_TEXT in said:
        return _fix(node, settings, bundle)
    return (
        "not a trust failure: check the image reference, the registry's credentials "
        f"(imagePullSecrets) and that it serves the image ({kubectl} describe pod {pod})"
    )


def _pull_all(
    api: KubeAPI, ns: str, pods: Sequence[tuple[str, Registry, str, str]], timeout: float
) -> dict[str, tuple[Status, str]]:
    """Every pull pod at once, each judged by its own events (by uid: an earlier run's
    pod of the same name left events that say nothing about this pull); the pods are
    deleted whatever happens."""
    uids: dict[str, str] = {}
    decided: dict[str, tuple[Status, str]] = {}
    try:
        selector = f"app.kubernetes.io/name={PULL_PROBE}"
        for leftover in api.list_objects("v1", "pods", ns, label_selector=selector):
            api.delete("v1", "pods", ns, str(leftover["metadata"]["name"]))  # interrupted run
        for node, _, image, name in pods:
            created = api.create(pull_probe_pod(ns, name, node=node, image=image)) or {}
            uids[name] = str((created.get("metadata") or {}).get("uid", ""))
            if not uids[name]:
                raise NodeTrustError(
                    f"pod {ns}/{name} already exists (context '{api.context}')",
                    hint="run doctor --probe again",
                    reference="pull-probe-exists",
                )
        deadline = time.monotonic() + timeout
        while len(decided) < len(pods) and time.monotonic() < deadline:
            for name, uid in uids.items():
                if name not in decided:
                    verdict = judge_pull(api.get("v1", "pods", ns, name), _events(api, ns, uid))
                    if verdict is not None:
                        decided[name] = verdict
            if len(decided) < len(pods):
                time.sleep(1)
    finally:
        for _, _, _, name in pods:
            api.delete("v1", "pods", ns, name)
    return decided


def _events(api: KubeAPI, namespace: str, uid: str) -> list[JsonObj]:
    selector = f"involvedObject.uid={uid}"
    return list(api.list_objects("v1", "events", namespace, field_selector=selector))


def judge_pull(pod: JsonObj | None, events: Sequence[JsonObj]) -> tuple[Status, str] | None:
    """The kubelet's verdict on the pull, in its own words; None while undecided."""
    reasons = [
        (str(e.get("reason", "")), " ".join(str(e.get("message", "")).split())) for e in events
    ]
    pulled = [m for r, m in reasons if r == "Pulled"]
    if pulled:
        return Status.OK, pulled[-1]
    failed = [m for r, m in reasons if r == "Failed" and "pull" in m.lower()]
    if failed:
        return Status.FAIL, max(failed, key=len)
    for state in ((pod or {}).get("status") or {}).get("containerStatuses") or []:
        waiting = (state.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff"):
            return Status.FAIL, " ".join(str(waiting.get("message", waiting["reason"])).split())
        if state.get("imageID"):
            return Status.OK, f"pulled {state.get('image')}"
    return None
