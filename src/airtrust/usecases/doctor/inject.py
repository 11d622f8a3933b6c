"""``inject``: pods admitted in the namespaces in scope really get the bundle.

Three questions, each answered by the cluster itself: is the webhook
registered (and at the path where the server mutates: any other is a 404 that
failurePolicy Ignore turns into pods admitted uninjected, silently); does the
apiserver reach it (a server-side dry-run Pod create in a
namespace in scope comes back mutated: nothing is stored); and does the
certificate it serves verify against airtrust's bundle (the ``caBundle`` the
apiserver uses is that bundle). Each namespace in scope must also hold the
bundle ConfigMap the injected pods mount.

A webhook behind a Service (``render --inject --service``, the form users deploy)
has no address doctor can dial: its ClusterIP routes only inside the cluster. So
doctor asks what the apiserver needs along the same path: the Service exists and
has ready endpoints (EndpointSlices), and the serving certificate the pods mount
names the Service and verifies against the webhook's own ``caBundle``, the anchor
the apiserver verifies with, not airtrust's bundle; the dry run then proves the
whole path.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from urllib.parse import urlsplit, urlunsplit

from airtrust.errors import AirtrustError
from airtrust.kube.api import KubeAPI
from airtrust.pki.bundle import read_certificates
from airtrust.pki.tlssecret import judge_tls_secret
from airtrust.plan.inject import (
    BUNDLE_KEY,
    INJECT_NAME,
    INJECT_TLS_SECRET,
    INJECTED_ANNOTATION,
    MUTATE_PATH,
    WEBHOOK_CONFIGURATIONS,
    InjectSettings,
    misrouted_path,
)
from airtrust.plan.manifests import selector_text
from airtrust.probe.endpoint import probe_endpoint
from airtrust.usecases.doctor.model import Check, Status
from airtrust.usecases.session import Session

__all__ = ["check_inject"]

NAME = "inject"


def _probe_pod(namespace: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "airtrust-doctor-inject", "namespace": namespace},
        "spec": {"containers": [{"name": "probe", "image": "airtrust.invalid/doctor:probe"}]},
    }


def check_inject(session: Session) -> list[Check]:
    out: list[Check] = []
    for context, api in session.apis.items():
        out += _check_context(session, context, api)
    return out


def _check_context(session: Session, context: str, api: KubeAPI) -> list[Check]:
    target = f"MutatingWebhookConfiguration {INJECT_NAME}"
    try:
        config = api.get(*WEBHOOK_CONFIGURATIONS, None, INJECT_NAME)
    except AirtrustError as exc:
        return [Check(NAME, context, target, Status.SKIP, f"not readable: {exc.message}")]
    if config is None:
        return [Check(NAME, context, target, Status.SKIP, "not installed (injection not used)")]
    webhook = (config.get("webhooks") or [{}])[0]
    policy = webhook.get("failurePolicy", "Fail")
    selector = selector_text(webhook.get("namespaceSelector") or {})
    checks = [
        Check(
            NAME,
            context,
            target,
            Status.OK,
            f"registered; failurePolicy {policy}; namespaces {selector or 'all'}",
        )
    ]
    client = webhook.get("clientConfig") or {}
    url = client.get("url")
    path = misrouted_path(client)
    if path:
        checks.append(_misrouted(context, client, path, policy))
    service = client.get("service")
    if isinstance(service, dict):
        checks += _service_checks(session, context, api, service, client.get("caBundle"))
    if url:
        parts = urlsplit(url)
        result = probe_endpoint(
            parts.hostname or "",
            parts.port or 443,
            anchors=tuple(session.bundle.certificates),
            now=session.now,
        )
        if result.trusted:
            checks.append(
                Check(
                    NAME, context, url, Status.OK, f"serves {result.shown}, verified by the bundle"
                )
            )
        elif result.unreachable is not None:
            checks.append(
                Check(
                    NAME,
                    context,
                    url,
                    Status.FAIL,
                    f"unreachable: {result.unreachable.message}",
                    "start airtrust inject serve (or fix its address in the webhook configuration)",
                )
            )
        else:
            why = result.rejected.message if result.rejected is not None else "rejected"
            checks.append(
                Check(
                    NAME,
                    context,
                    url,
                    Status.FAIL,
                    f"certificate not trusted by the bundle: {why}",
                    "reissue the webhook's certificate from the local CA (airtrust cert issue)",
                )
            )
    try:
        namespaces = api.namespaces(selector or None)
    except AirtrustError as exc:
        return [
            *checks,
            Check(NAME, context, "namespaces", Status.SKIP, f"not listable: {exc.message}"),
        ]
    if not namespaces:
        checks.append(
            Check(
                NAME,
                context,
                f"namespaces {selector}",
                Status.WARN,
                "none in scope",
                f"label the namespaces to inject: kubectl label ns NAME {selector}",
            )
        )
        return checks
    for namespace in namespaces:
        checks.append(_admission(context, api, namespace, policy, path))
        checks.append(_bundle(context, api, namespace))
    return checks


def _service_checks(
    session: Session, context: str, api: KubeAPI, service: dict[str, object], ca_bundle: object
) -> list[Check]:
    """The Service the apiserver posts to: present, ready endpoints, and a serving
    certificate the webhook's caBundle verifies for ``NAME.NS.svc``."""
    ns, name = str(service.get("namespace", "")), str(service.get("name", ""))
    target = f"Service {ns}/{name}"
    rendered = f"airtrust render --inject --service {ns}/{name} --ca BUNDLE --out DIR"
    try:
        live = api.get("v1", "services", ns, name)
        slices = list(
            api.list_objects(
                "discovery.k8s.io/v1",
                "endpointslices",
                ns,
                label_selector=f"kubernetes.io/service-name={name}",
            )
        )
        secret = api.get("v1", "secrets", ns, INJECT_TLS_SECRET)
    except AirtrustError as exc:
        return [Check(NAME, context, target, Status.SKIP, f"not readable: {exc.message}")]
    if live is None:
        return [
            Check(
                NAME,
                context,
                target,
                Status.FAIL,
                "missing: the apiserver has nowhere to post admission reviews",
                f"{rendered} && kubectl apply --server-side -k DIR",
            )
        ]
    ready = sum(
        1
        for piece in slices
        for endpoint in piece.get("endpoints") or []
        if (endpoint.get("conditions") or {}).get("ready") is not False
    )
    checks = [
        Check(NAME, context, target, Status.OK, f"{ready} ready endpoint(s)")
        if ready
        else Check(
            NAME,
            context,
            target,
            Status.FAIL,
            "no ready endpoint: no webhook pod answers the apiserver",
            f"kubectl -n {ns} get pods -l app.kubernetes.io/name={INJECT_NAME}; "
            f"kubectl -n {ns} logs deploy/{INJECT_NAME}",
        )
    ]
    checks.append(_serving_secret(session.now, context, ns, name, secret, ca_bundle))
    return checks


def _serving_secret(
    now: dt.datetime,
    context: str,
    ns: str,
    service: str,
    secret: dict[str, object] | None,
    ca_bundle: object,
) -> Check:
    target = f"Secret {ns}/{INJECT_TLS_SECRET}"
    fix = (
        f"airtrust apply -c airtrust.yaml with inject_namespace: {ns} (it issues the "
        "serving certificate from the local CA and keeps the caBundle on it)"
    )
    try:
        anchors = [
            a.certificate
            for a in read_certificates(base64.b64decode(str(ca_bundle or "")), "caBundle")
        ]
    except (AirtrustError, binascii.Error, ValueError):
        anchors = []
    if not anchors:
        return Check(
            NAME,
            context,
            target,
            Status.FAIL,
            "the webhook configuration's caBundle holds no certificate: the apiserver "
            "trusts no serving certificate",
            fix,
        )
    verdict = judge_tls_secret(
        secret, hosts=[f"{service}.{ns}.svc"], anchors=anchors, now=now, window=dt.timedelta(0)
    )
    if not verdict.sound:
        return Check(
            NAME,
            context,
            target,
            Status.FAIL,
            f"not what the apiserver accepts with the webhook's caBundle: {verdict.detail}",
            fix,
        )
    return Check(
        NAME, context, target, Status.OK, f"{verdict.detail}; verified by the webhook's caBundle"
    )


def _misrouted(context: str, client: dict[str, object], path: str, policy: str) -> Check:
    """The webhook registered at a path the server answers 404: say so, and how to point
    it at the mutate path (render it again, or patch the live object in place)."""
    url = client.get("url")
    if url:
        netloc = urlsplit(str(url)).netloc
        what, field, target = "URL path", "url", str(url)
        value = urlunsplit(("https", netloc, MUTATE_PATH, "", ""))
        render = f"airtrust render --inject --url https://{netloc} --failure-policy {policy}"
    else:
        service = client.get("service")
        assert isinstance(service, dict)
        what, field, value = "service path", "service/path", MUTATE_PATH
        target = f"Service {service.get('namespace')}/{service.get('name')}"
        render = (
            f"airtrust render --inject --service {service.get('namespace')}/{INJECT_NAME} "
            f"--image IMAGE --failure-policy {policy}"
        )
    operation = json.dumps(
        [{"op": "replace", "path": f"/webhooks/0/clientConfig/{field}", "value": value}]
    )
    meanwhile = "pods are admitted uninjected" if policy == "Ignore" else "pods are refused"
    return Check(
        NAME,
        context,
        target,
        Status.FAIL,
        f"the webhook {what} is {path}; the server mutates only at {MUTATE_PATH} "
        f"(failurePolicy {policy}: {meanwhile})",
        f"{render} --ca BUNDLE --out DIR && kubectl apply --server-side -k DIR, or "
        f"kubectl patch mutatingwebhookconfiguration {INJECT_NAME} --type=json "
        f"-p '{operation}'",
    )


def _admission(
    context: str, api: KubeAPI, namespace: str, policy: str, misrouted: str = ""
) -> Check:
    """A server-side dry-run create; ``misrouted``: the path the webhook is registered at
    when it is not the mutate path (then that, not the server, is what to fix)."""
    target = f"Pod {namespace}/(dry-run)"
    path_fix = f"register the webhook at {MUTATE_PATH} (the webhook path check above)"
    try:
        created = api.create(_probe_pod(namespace), dry_run=True)
    except AirtrustError as exc:
        return Check(
            NAME,
            context,
            target,
            Status.FAIL,
            f"pod creation refused: {exc.message}",
            path_fix
            if misrouted
            else "start airtrust inject serve, or check its log; with failurePolicy Fail "
            "every pod in the namespace is refused meanwhile",
        )
    annotations = ((created or {}).get("metadata") or {}).get("annotations") or {}
    if INJECTED_ANNOTATION in annotations:
        return Check(NAME, context, target, Status.OK, "the apiserver's dry run came back injected")
    return Check(
        NAME,
        context,
        target,
        Status.FAIL,
        f"admitted without injection (the apiserver posts to {misrouted}, not {MUTATE_PATH}; "
        f"failurePolicy {policy})"
        if misrouted
        else f"admitted without injection (the webhook was not reached; failurePolicy {policy})",
        path_fix
        if misrouted
        else "start airtrust inject serve and check the apiserver reaches its address",
    )


def _bundle(context: str, api: KubeAPI, namespace: str) -> Check:
    name = InjectSettings().configmap
    target = f"ConfigMap {namespace}/{name}"
    try:
        found = api.get("v1", "configmaps", namespace, name)
    except AirtrustError as exc:
        return Check(NAME, context, target, Status.SKIP, f"not readable: {exc.message}")
    if found is None or BUNDLE_KEY not in (found.get("data") or {}):
        return Check(
            NAME,
            context,
            target,
            Status.FAIL,
            "missing: injected pods cannot start",
            "run airtrust inject serve (it writes the bundle into every namespace in scope)",
        )
    return Check(NAME, context, target, Status.OK, "present")
