"""``inject``: pods admitted in the namespaces in scope really get the bundle.

Three questions, each answered by the cluster itself: is the webhook
registered; does the apiserver reach it (a server-side dry-run Pod create in a
namespace in scope comes back mutated: nothing is stored); and does the
certificate it serves verify against airtrust's bundle (the ``caBundle`` the
apiserver uses is that bundle). Each namespace in scope must also hold the
bundle ConfigMap the injected pods mount.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from airtrust.errors import AirtrustError
from airtrust.kube.api import KubeAPI
from airtrust.plan.inject import (
    BUNDLE_KEY,
    INJECT_NAME,
    INJECTED_ANNOTATION,
    WEBHOOK_CONFIGURATIONS,
    InjectSettings,
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
    url = (webhook.get("clientConfig") or {}).get("url")
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
        checks.append(_admission(context, api, namespace, policy))
        checks.append(_bundle(context, api, namespace))
    return checks


def _admission(context: str, api: KubeAPI, namespace: str, policy: str) -> Check:
    target = f"Pod {namespace}/(dry-run)"
    try:
        created = api.create(_probe_pod(namespace), dry_run=True)
    except AirtrustError as exc:
        return Check(
            NAME,
            context,
            target,
            Status.FAIL,
            f"pod creation refused: {exc.message}",
            "start airtrust inject serve, or check its log; with failurePolicy Fail every "
            "pod in the namespace is refused meanwhile",
        )
    annotations = ((created or {}).get("metadata") or {}).get("annotations") or {}
    if INJECTED_ANNOTATION in annotations:
        return Check(NAME, context, target, Status.OK, "the apiserver's dry run came back injected")
    return Check(
        NAME,
        context,
        target,
        Status.FAIL,
        f"admitted without injection (the webhook was not reached; failurePolicy {policy})",
        "start airtrust inject serve and check the apiserver reaches its address",
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
