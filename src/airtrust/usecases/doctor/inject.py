"""``inject``: pods admitted in the namespaces in scope really get the bundle.

Three questions, each answered by the cluster itself: is the webhook
registered (and at the path where the server mutates: any other is a 404 that
failurePolicy Ignore turns into pods admitted uninjected, silently); does the
apiserver reach it (a server-side dry-run Pod create in a
namespace in scope comes back mutated: nothing is stored); and does the
certificate it serves verify against airtrust's bundle (the ``caBundle`` the
apiserver uses is that bundle). Each namespace in scope must also hold the
bundle ConfigMap the injected pods mount.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit, urlunsplit

from airtrust.errors import AirtrustError
from airtrust.kube.api import KubeAPI
from airtrust.plan.inject import (
    BUNDLE_KEY,
    INJECT_NAME,
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
