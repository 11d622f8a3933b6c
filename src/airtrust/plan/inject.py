"""What admission-time injection does to a Pod: pure, a JSON Patch from a Pod.

Researchers bring images nobody patched. At admission the pod gets the merged
bundle (the public roots of a base bundle plus the local CA: the variables
below *replace* a client's store, so the CA alone would break every public
endpoint) mounted read-only in every container and init container, and each
client's variable pointed at it where the container does not set it already.
Java reads a keystore, not PEM, so it is touched only when the pod opts in.

Idempotent by construction: every step checks what is there (volume, mount,
each variable), so re-admitting an injected pod yields an empty patch; the
record of what was done goes in an annotation.

``envFrom``: Kubernetes gives a container's ``env`` precedence over the variables
its ``envFrom`` sources set, so a variable injected into ``env`` silently beats the
same name from the user's ConfigMap or Secret. The webhook cannot see what those
sources hold: reading a Secret is not a right it should have, a ConfigMap may not
exist yet when the pod is admitted (the kubelet waits for it) and may change after,
and a lookup in the admission path adds latency and a failure mode to every pod.
Not injecting a container with ``envFrom`` would leave most real pods (settings
come in by envFrom) distrusting the local CA. So such a container is injected and
the client is warned, naming the pod, the container, the sources and the variables
an unprefixed (or matching-prefix) source could shadow, and how to keep their own:
set them in ``env``, which airtrust never overrides.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from airtrust.errors import InputError, WebhookUrlError

__all__ = [
    "BUNDLE_KEY",
    "DEFAULT_SCOPE",
    "ENV_VARS",
    "INJECTED_ANNOTATION",
    "INJECT_LABEL",
    "INJECT_NAME",
    "INJECT_TLS_SECRET",
    "INJECT_WEBHOOK",
    "JAVA_ANNOTATION",
    "JAVA_OPTIONS",
    "MUTATE_PATH",
    "TRUSTSTORE_KEY",
    "WEBHOOK_CONFIGURATIONS",
    "InjectSettings",
    "Mutation",
    "misrouted_path",
    "mutate_pod",
    "namespace_scope",
    "pointer",
    "webhook_hosts",
    "webhook_url",
]

#: The webhook's objects: configuration, Deployment/Service/ServiceAccount, TLS secret.
INJECT_NAME = "airtrust-inject"
INJECT_WEBHOOK = "inject.airtrust.io"
INJECT_TLS_SECRET = "airtrust-inject-tls"
#: Where the webhook server mutates; every other path is health or metrics.
MUTATE_PATH = "/mutate"
#: (apiVersion, plural) of the webhook configuration
WEBHOOK_CONFIGURATIONS = ("admissionregistration.k8s.io/v1", "mutatingwebhookconfigurations")


def webhook_hosts(namespace: str) -> tuple[str, ...]:
    """The names the apiserver uses for the webhook's Service (its certificate's SANs)."""
    return (f"{INJECT_NAME}.{namespace}.svc", f"{INJECT_NAME}.{namespace}.svc.cluster.local")


def webhook_url(given: str) -> str:
    """The ``clientConfig.url`` for a server a user names as ``render --inject --url``.

    The apiserver posts each review to exactly the URL it is given, and the server
    mutates at :data:`MUTATE_PATH` only; anything else is a 404 that failurePolicy
    Ignore turns into a pod admitted uninjected, with nothing said. So a bare
    ``https://HOST:PORT`` (or ``/``) means the mutate path, ``/mutate`` is kept, and
    every other path is refused. So is what the apiserver itself refuses in a webhook
    URL (a scheme other than https, user information, a query, a fragment), here in
    one line rather than at apply. Idempotent: its own answer comes back unchanged.
    """
    parts = urlsplit(given.strip())
    base = f"https://{parts.netloc}" if parts.netloc else "https://HOST:PORT"
    if parts.scheme != "https":
        raise WebhookUrlError(
            f"--url {given}: the apiserver calls webhooks over https only", hint=f"give {base}"
        )
    try:
        port = parts.port
    except ValueError:
        port = -1
    if not parts.hostname or port in (-1, 0) or parts.netloc.endswith(":"):
        raise WebhookUrlError(
            f"--url {given}: a webhook URL needs a host and, if any, a port number",
            hint="give https://HOST:PORT",
        )
    if "@" in parts.netloc:
        raise WebhookUrlError(
            f"--url {given}: the apiserver refuses user information in a webhook URL",
            hint=f"give https://{parts.netloc.rpartition('@')[2]}",
        )
    if "?" in given or "#" in given:
        raise WebhookUrlError(
            f"--url {given}: the apiserver refuses a query string or fragment in a webhook URL",
            hint=f"give {base}",
        )
    if parts.path not in ("", "/", MUTATE_PATH):
        raise WebhookUrlError(
            f"--url {given}: the webhook serves admissions at {MUTATE_PATH} only",
            hint=f"give {base} or {base}{MUTATE_PATH}",
        )
    return urlunsplit(("https", parts.netloc, MUTATE_PATH, "", ""))


def misrouted_path(client_config: Mapping[str, Any]) -> str:
    """The path a live webhook's ``clientConfig`` makes the apiserver post to when it is
    not :data:`MUTATE_PATH` (``/`` for none: the apiserver posts there), else "".

    A configuration written by hand, or by a render that took ``--url`` as given, can
    point at the server's 404: under failurePolicy Ignore no pod is ever injected."""
    url = client_config.get("url")
    if url:
        path = urlsplit(str(url)).path
    elif client_config.get("service"):
        path = str(client_config["service"].get("path") or "")
    else:
        return ""
    return "" if path == MUTATE_PATH else (path or "/")


#: Namespaces labelled ``airtrust.io/inject=enabled`` are in scope by default; a pod
#: labelled or annotated ``airtrust.io/inject: "false"`` is left alone.
INJECT_LABEL = "airtrust.io/inject"
#: The namespaces in scope unless told otherwise.
DEFAULT_SCOPE = f"{INJECT_LABEL}=enabled"
JAVA_ANNOTATION = "airtrust.io/inject-java"
INJECTED_ANNOTATION = "airtrust.io/injected"
BUNDLE_KEY = "ca-bundle.pem"
TRUSTSTORE_KEY = "truststore.p12"
#: Each names the PEM bundle; all but NODE_EXTRA_CA_CERTS replace the client's store.
ENV_VARS = (
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "PIP_CERT",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "NODE_EXTRA_CA_CERTS",
    "AWS_CA_BUNDLE",
    "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
)
JAVA_OPTIONS = "JAVA_TOOL_OPTIONS"


@dataclass(frozen=True)
class InjectSettings:
    configmap: str = "airtrust-ca-bundle"
    volume: str = "airtrust-ca"
    mount_dir: str = "/etc/airtrust/ca"
    store_password: str = "changeit"

    @property
    def bundle_path(self) -> str:
        return f"{self.mount_dir}/{BUNDLE_KEY}"

    @property
    def java_flags(self) -> str:
        return (
            f"-Djavax.net.ssl.trustStore={self.mount_dir}/{TRUSTSTORE_KEY} "
            "-Djavax.net.ssl.trustStoreType=PKCS12 "
            f"-Djavax.net.ssl.trustStorePassword={self.store_password}"
        )


@dataclass(frozen=True)
class Mutation:
    patch: list[dict[str, Any]]  # RFC 6902 operations; empty: nothing to do
    skipped: str = ""  # why nothing was done, when it was on purpose
    #: a pod left unchanged because its own spec takes what injection needs (told to the
    #: client as an admission warning, so the author sees why)
    conflict: str = ""
    #: injected variables that now override what a container's envFrom may set (told to
    #: the client as admission warnings: see the module docstring)
    warnings: tuple[str, ...] = ()


def _conflict(spec: Mapping[str, Any], settings: InjectSettings) -> str:
    """What in the pod's own spec injection would collide with, or "" (an injected pod
    re-admitted collides with nothing: its volume and mounts are airtrust's own).

    A volume of airtrust's name that is not the bundle ConfigMap, a mount of another
    volume at the bundle's folder, or airtrust's volume mounted elsewhere: merging would
    point every client variable at a file that is not the bundle (breaking public TLS
    too), so the pod is better left exactly as its author wrote it."""
    for volume in spec.get("volumes") or []:
        ours = (volume.get("configMap") or {}).get("name") == settings.configmap
        if volume.get("name") == settings.volume and not ours:
            return f"the pod has its own volume named {settings.volume}"
    for kind in ("initContainers", "containers"):
        for container in spec.get(kind) or []:
            for mount in container.get("volumeMounts") or []:
                named, at = mount.get("name") == settings.volume, mount.get("mountPath")
                if named != (at == settings.mount_dir):
                    what = f"{settings.volume} at {at}" if named else f"{mount.get('name')} at {at}"
                    return f"container {container.get('name')} mounts {what}"
    return ""


def pointer(*parts: str | int) -> str:
    """An RFC 6901 JSON pointer (``~`` and ``/`` escaped in each part)."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _opted_out(meta: Mapping[str, Any]) -> bool:
    for where in ("labels", "annotations"):
        if str((meta.get(where) or {}).get(INJECT_LABEL, "")).lower() == "false":
            return True
    return False


def _volume(settings: InjectSettings, java: bool) -> dict[str, Any]:
    items = [{"key": BUNDLE_KEY, "path": BUNDLE_KEY}]
    if java:
        items.append({"key": TRUSTSTORE_KEY, "path": TRUSTSTORE_KEY})
    return {
        "name": settings.volume,
        "configMap": {"name": settings.configmap, "items": items, "defaultMode": 0o444},
    }


def _container_ops(
    kind: str, index: int, container: Mapping[str, Any], settings: InjectSettings, java: bool
) -> tuple[list[dict[str, Any]], list[str]]:
    ops: list[dict[str, Any]] = []
    mounts = container.get("volumeMounts") or []
    if not any(
        m.get("name") == settings.volume or m.get("mountPath") == settings.mount_dir for m in mounts
    ):
        mount = {"name": settings.volume, "mountPath": settings.mount_dir, "readOnly": True}
        if mounts:
            ops.append(
                {
                    "op": "add",
                    "path": pointer("spec", kind, index, "volumeMounts", "-"),
                    "value": mount,
                }
            )
        else:
            ops.append(
                {
                    "op": "add",
                    "path": pointer("spec", kind, index, "volumeMounts"),
                    "value": [mount],
                }
            )
    env = list(container.get("env") or [])
    names = {e.get("name") for e in env}
    added = [{"name": var, "value": settings.bundle_path} for var in ENV_VARS if var not in names]
    set_vars = [e["name"] for e in added]
    if java:
        current = next((e for e in env if e.get("name") == JAVA_OPTIONS), None)
        if current is None:
            added.append({"name": JAVA_OPTIONS, "value": settings.java_flags})
            set_vars.append(JAVA_OPTIONS)
        elif "valueFrom" not in current and settings.java_flags not in str(
            current.get("value", "")
        ):
            position = env.index(current)
            value = f"{current.get('value', '')} {settings.java_flags}".strip()
            ops.append(
                {
                    "op": "replace",
                    "path": pointer("spec", kind, index, "env", position, "value"),
                    "value": value,
                }
            )
            set_vars.append(JAVA_OPTIONS)
    if added:
        if env:
            for item in added:
                ops.append(
                    {"op": "add", "path": pointer("spec", kind, index, "env", "-"), "value": item}
                )
        else:
            ops.append({"op": "add", "path": pointer("spec", kind, index, "env"), "value": added})
    return ops, set_vars


def _env_sources(container: Mapping[str, Any], names: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the container's envFrom sources that may set one of ``names``, those names).

    A source sets ``prefix + key`` for each key, so one with a prefix no name starts
    with cannot shadow anything."""
    sources: list[str] = []
    shadowed: set[str] = set()
    for entry in container.get("envFrom") or []:
        prefix = str(entry.get("prefix") or "")
        hit = [n for n in names if n.startswith(prefix)]
        if not hit:
            continue
        for kind, field in (("configMap", "configMapRef"), ("secret", "secretRef")):
            if field in entry:
                ref = entry.get(field) or {}
                sources.append(
                    f"{kind} {ref.get('name', '?')}" + (f" prefix {prefix}" if prefix else "")
                )
        shadowed.update(hit)
    return sources, [n for n in names if n in shadowed]


def _who(meta: Mapping[str, Any]) -> str:
    """The pod as its author knows it (at admission a generated name is not made yet)."""
    name = meta.get("name") or f"{meta.get('generateName') or ''}*"
    return f"{meta['namespace']}/{name}" if meta.get("namespace") else str(name)


def mutate_pod(pod: Mapping[str, Any], settings: InjectSettings) -> Mutation:
    """The JSON Patch that makes ``pod`` trust the bundle (empty when nothing is due)."""
    meta = pod.get("metadata") or {}
    if _opted_out(meta):
        return Mutation([], skipped=f"{INJECT_LABEL}=false")
    annotations = meta.get("annotations") or {}
    java = str(annotations.get(JAVA_ANNOTATION, "")).lower() == "true"
    spec = pod.get("spec") or {}
    conflict = _conflict(spec, settings)
    if conflict:
        return Mutation([], skipped="conflict", conflict=conflict)
    ops: list[dict[str, Any]] = []
    volumes = spec.get("volumes") or []
    if not any(v.get("name") == settings.volume for v in volumes):
        volume = _volume(settings, java)
        if volumes:
            ops.append({"op": "add", "path": "/spec/volumes/-", "value": volume})
        else:
            ops.append({"op": "add", "path": "/spec/volumes", "value": [volume]})
    touched: dict[str, list[str]] = {}
    warnings: list[str] = []
    for kind in ("initContainers", "containers"):
        containers: Sequence[Mapping[str, Any]] = spec.get(kind) or []
        for index, container in enumerate(containers):
            container_ops, set_vars = _container_ops(kind, index, container, settings, java)
            ops += container_ops
            if container_ops:
                touched[str(container.get("name", index))] = set_vars
            sources, shadowed = _env_sources(container, _added(container, set_vars))
            if shadowed:
                where = f"pod {_who(meta)} container {container.get('name', index)}"
                warnings.append(
                    f"airtrust inject: {where}: the injected env {', '.join(shadowed)} "
                    f"overrides any of these names its envFrom ({', '.join(sources)}) sets; "
                    "to keep your own values, set them in the container's env, which airtrust "
                    "leaves alone"
                )
    if not ops:
        return Mutation([], skipped="already injected")
    record = json.dumps(
        {"configMap": settings.configmap, "java": java, "containers": touched},
        sort_keys=True,
        separators=(",", ":"),
    )
    if annotations:
        ops.append(
            {
                "op": "add",
                "path": pointer("metadata", "annotations", INJECTED_ANNOTATION),
                "value": record,
            }
        )
    else:
        ops.append(
            {"op": "add", "path": "/metadata/annotations", "value": {INJECTED_ANNOTATION: record}}
        )
    return Mutation(ops, warnings=tuple(warnings))


def _added(container: Mapping[str, Any], set_vars: Sequence[str]) -> list[str]:
    """The variables injection puts into ``env`` anew (JAVA_TOOL_OPTIONS already in env
    and extended there was the container's own choice over envFrom before)."""
    own = {e.get("name") for e in container.get("env") or []}
    return [name for name in set_vars if name not in own]


def namespace_scope(selector: str | None, project_selector: str | None, *, projects: bool) -> str:
    """The namespaces in scope, as a label selector: the one given, the profile's
    project namespaces (``projects``, ``project_selector`` from the profile), or
    :data:`DEFAULT_SCOPE`."""
    if selector and projects:
        raise InputError("--namespace-selector and --projects exclude each other", hint="pick one")
    if projects:
        if not project_selector:
            raise InputError(
                "the profile names no project namespaces", hint="pass --namespace-selector"
            )
        return project_selector
    return selector or DEFAULT_SCOPE
