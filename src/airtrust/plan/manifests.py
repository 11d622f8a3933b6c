"""Every object airtrust emits, as the exact dictionaries it sends (pure).

``apply`` sends these, ``render`` writes them, ``sync`` keeps them: one
builder per kind of object means the three can never disagree on a label,
an annotation or a field. Nothing here reads a cluster or the clock; times
and contents are parameters.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence

import yaml

from airtrust.plan.inject import INJECT_NAME, INJECT_TLS_SECRET, INJECT_WEBHOOK, MUTATE_PATH
from airtrust.plan.model import BACKUP_OF, MANAGED_BY, JsonObj
from airtrust.plan.source import Source
from airtrust.plan.topology import SyncScope

__all__ = [
    "CONTROLLER_NAME",
    "INJECT_NAME",
    "INJECT_TLS_SECRET",
    "INJECT_WEBHOOK",
    "LEASE_NAME",
    "NAMESPACE_NAME_LABEL",
    "NEVER_INJECTED",
    "NO_PRUNE",
    "PROBE_JOB",
    "ROTATION_RECORD",
    "backup_name",
    "backup_secret",
    "bundle_configmap",
    "controller_manifests",
    "inject_disruption_budget",
    "inject_manifests",
    "kustomization",
    "label_selector",
    "lease",
    "managed_labels",
    "micro_time",
    "namespace_manifest",
    "probe_job",
    "rendered_namespace",
    "rotation_configmap",
    "secret_manifest",
    "selector_text",
    "webhook_configuration",
]

#: Lease that elects the writing replica of ``airtrust sync``.
LEASE_NAME = "airtrust-sync"
CONTROLLER_NAME = "airtrust-sync"
#: The ConfigMap that records a CA rotation beside the control plane.
ROTATION_RECORD = "airtrust-rotation"
PROBE_JOB = "airtrust-probe"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def managed_labels(labels: Mapping[str, str] | None = None) -> dict[str, str]:
    """The given labels plus airtrust's own, so a user can select everything it made."""
    return {**(labels or {}), MANAGED_BY[0]: MANAGED_BY[1]}


def namespace_manifest(name: str) -> JsonObj:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


#: A GitOps tool must never delete a namespace airtrust only renders for convenience:
#: Argo CD and Flux both skip pruning (and deleting) objects marked so.
NO_PRUNE = {
    "argocd.argoproj.io/sync-options": "Prune=false,Delete=false",
    "kustomize.toolkit.fluxcd.io/prune": "disabled",
}


def rendered_namespace(name: str) -> JsonObj:
    """A Namespace as ``render --with-namespaces`` writes it: labelled, never pruned."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": managed_labels(), "annotations": dict(NO_PRUNE)},
    }


def secret_manifest(
    namespace: str,
    name: str,
    *,
    secret_type: str,
    data: Mapping[str, bytes],
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> JsonObj:
    """A Secret exactly as airtrust applies and renders it."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": managed_labels(labels),
            "annotations": dict(annotations or {}),
        },
        "type": secret_type,
        "data": {k: _b64(v) for k, v in sorted(data.items())},
    }


def backup_name(name: str, live_data: Mapping[str, str]) -> str:
    """Named by a hash of the data it keeps: backing up twice writes one object."""
    digest = hashlib.sha256(yaml.safe_dump(dict(live_data), sort_keys=True).encode()).hexdigest()
    return f"{name}-backup-{digest[:10]}"


def backup_secret(live: JsonObj, namespace: str, name: str) -> JsonObj:
    """A copy of data airtrust did not write, made before overwriting it."""
    data = live.get("data") or {}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": backup_name(name, data),
            "namespace": namespace,
            "labels": {MANAGED_BY[0]: MANAGED_BY[1], BACKUP_OF: name},
        },
        "type": live.get("type", "Opaque"),
        "data": data,
    }


def kustomization(resources: Sequence[str]) -> JsonObj:
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": list(resources),
    }


def rotation_configmap(namespace: str, data: Mapping[str, str]) -> JsonObj:
    """The rotation record (public data only: CA certificates, phase, image references)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": ROTATION_RECORD, "namespace": namespace, "labels": managed_labels()},
        "data": dict(data),
    }


def micro_time(t: dt.datetime) -> str:
    """Kubernetes MicroTime, as Lease timestamps must be written."""
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease(namespace: str, holder: str, duration: int, now: dt.datetime) -> JsonObj:
    """A new Lease held by ``holder`` from ``now``."""
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": LEASE_NAME, "namespace": namespace},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": duration,
            "renewTime": micro_time(now),
            "acquireTime": micro_time(now),
        },
    }


#: The probe's script: what it sees mounted, then the handshake, into the termination
#: message (read back from the pod status: no log access through the kubelet needed).
PROBE_SCRIPT = """\
f="$1"; url="$2"; shift 2
n=$(grep -c "BEGIN CERTIFICATE" "$f")
sum=$(sha256sum "$f" | cut -c1-16)
if out=$(curl -sS --max-time 20 --cacert "$f" -o /dev/null "$@" "$url" 2>&1); then r=ok
else r="failed: $out"; fi
echo "mounted bundle: $n certificate(s), sha256 $sum; handshake with $url: $r" \
  > /dev/termination-log
[ "$r" = ok ]
"""


def probe_job(
    namespace: str,
    *,
    image: str,
    secret: str,
    key: str,
    url: str,
    curl_args: Sequence[str] = (),
    host_network: bool = False,
) -> JsonObj:
    """A one-shot Job that mounts the CA secret and reaches ``url`` with curl and it alone,
    reporting the mounted bundle and the handshake in its termination message."""
    spec: JsonObj = {
        "restartPolicy": "Never",
        "containers": [
            {
                "name": "probe",
                "image": image,
                "command": ["sh", "-c", PROBE_SCRIPT, "probe", f"/ca/{key}", url, *curl_args],
                "volumeMounts": [{"name": "ca", "mountPath": "/ca", "readOnly": True}],
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }
        ],
        "volumes": [{"name": "ca", "secret": {"secretName": secret}}],
    }
    if host_network:
        spec["hostNetwork"] = True
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": PROBE_JOB, "namespace": namespace, "labels": managed_labels()},
        "spec": {"backoffLimit": 0, "ttlSecondsAfterFinished": 60, "template": {"spec": spec}},
    }


def _pod_security() -> JsonObj:
    """How airtrust's own pods run: not root, no privilege, read-only root filesystem
    (fresh objects each time: a YAML dump would alias a shared one)."""
    return {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}}


def _container_security() -> JsonObj:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


#: Probe timing. Kubernetes' defaults (a 1 s timeout, three misses) restart a pod
#: whose CPU request is small whenever its node is busy for half a minute: the
#: probe times out though the process is fine. Liveness is for a process that is
#: truly stuck, so it waits a minute; readiness answers sooner.
_READINESS: JsonObj = {"timeoutSeconds": 3, "periodSeconds": 5, "failureThreshold": 3}
_LIVENESS: JsonObj = {"timeoutSeconds": 5, "periodSeconds": 10, "failureThreshold": 6}


def _resources() -> JsonObj:
    return {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}


def _cluster_account(
    name: str, namespace: str, labels: Mapping[str, str], rules: Sequence[JsonObj]
) -> list[JsonObj]:
    """A ServiceAccount and the ClusterRole (``rules``) bound to it."""
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name, "labels": dict(labels)},
            "rules": list(rules),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": dict(labels)},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    ]


def controller_manifests(
    *,
    image: str,
    namespace: str,
    source: Source,
    scope: SyncScope,
    replicas: int = 2,
    ca_secret: str | None = None,
) -> list[JsonObj]:
    """Deployment, ServiceAccount and least-privilege RBAC to run ``airtrust sync`` in-cluster.

    ``ca_secret`` is the name of the CA secret the controller writes in every target
    (the profile's, by default): the only Secret it may read outside its source."""
    name = CONTROLLER_NAME
    labels = managed_labels({"app.kubernetes.io/name": name})
    meta = {"name": name, "namespace": namespace, "labels": labels}
    args = [
        "sync",
        "--in-cluster",
        "--source",
        str(source),
        "--lease-namespace",
        namespace,
        "--metrics-addr",
        "0.0.0.0:8080",
        *scope.args(),
    ]
    source_rule = {
        "apiGroups": [""],
        "resources": [source.plural],
        "resourceNames": [source.name],
        "verbs": ["get", "list", "watch"],
    }
    if ca_secret is None:
        from airtrust.profiles import load_profile

        ca_secret = load_profile().ca_secret.name
    rules = [
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
        # Targets are any namespace the selector matches, but only the CA secret in each:
        # the controller lists and watches with fieldSelector metadata.name=<it>, which the
        # apiserver authorizes against resourceNames. No other Secret is readable.
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [ca_secret],
            "verbs": ["get", "list", "watch"],
        },
        # Writes are by server-side apply.
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "patch"]},
    ]
    return [
        *_cluster_account(name, namespace, labels, rules),
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "rules": [
                {
                    "apiGroups": ["coordination.k8s.io"],
                    "resources": ["leases"],
                    "verbs": ["get", "create", "update"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": f"{name}-source", "namespace": source.namespace, "labels": labels},
            "rules": [source_rule],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": f"{name}-source", "namespace": source.namespace, "labels": labels},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": f"{name}-source",
            },
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": name,
                        "securityContext": _pod_security(),
                        "containers": [
                            {
                                "name": "sync",
                                "image": image,
                                "args": args,
                                "ports": [{"name": "metrics", "containerPort": 8080}],
                                "readinessProbe": {
                                    "httpGet": {"path": "/readyz", "port": "metrics"},
                                    **_READINESS,
                                },
                                "livenessProbe": {
                                    "httpGet": {"path": "/healthz", "port": "metrics"},
                                    **_LIVENESS,
                                },
                                "resources": _resources(),
                                "securityContext": _container_security(),
                            }
                        ],
                    },
                },
            },
        },
    ]


def bundle_configmap(
    namespace: str, name: str, data: Mapping[str, str], binary: Mapping[str, bytes]
) -> JsonObj:
    """The merged bundle injected pods mount (public data only)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": managed_labels()},
        "data": dict(data),
        "binaryData": {k: _b64(v) for k, v in binary.items()},
    }


def label_selector(text: str) -> JsonObj:
    """A Kubernetes LabelSelector from the equality/existence syntax of ``-l``:
    ``a=b``, ``a!=b``, ``a``, ``!a``, comma-separated (sets need the YAML form)."""
    match_labels: dict[str, str] = {}
    expressions: list[JsonObj] = []
    for term in (t.strip() for t in text.split(",") if t.strip()):
        if "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            expressions.append({"key": key, "operator": "NotIn", "values": [value]})
        elif "=" in term:
            key, value = (s.strip() for s in term.split("=", 1))
            match_labels[key.rstrip("=")] = value.lstrip("=")
        elif term.startswith("!"):
            expressions.append({"key": term[1:].strip(), "operator": "DoesNotExist"})
        else:
            expressions.append({"key": term, "operator": "Exists"})
    out: JsonObj = {}
    if match_labels:
        out["matchLabels"] = match_labels
    if expressions:
        out["matchExpressions"] = expressions
    return out


def selector_text(selector: Mapping[str, object]) -> str:
    """A LabelSelector as the ``-l`` text the list API takes (``label_selector``'s
    inverse, set-based operators included)."""
    labels = selector.get("matchLabels") or {}
    terms = [f"{k}={v}" for k, v in labels.items()] if isinstance(labels, Mapping) else []
    expressions = selector.get("matchExpressions") or []
    for e in expressions if isinstance(expressions, list) else []:
        op, key, values = e.get("operator"), e.get("key"), e.get("values") or []
        if op == "Exists":
            terms.append(str(key))
        elif op == "DoesNotExist":
            terms.append(f"!{key}")
        elif op in ("In", "NotIn"):
            terms.append(f"{key} {str(op).lower()} ({','.join(values)})")
    return ",".join(terms)


#: Namespaces the webhook never matches, even when labelled into scope.
NEVER_INJECTED = ("kube-system",)
#: The label the apiserver sets on every namespace to its name (immutable).
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def _never_matching(selector: JsonObj, namespaces: Sequence[str]) -> JsonObj:
    """``selector`` narrowed so that it matches none of ``namespaces``."""
    expressions = list(selector.get("matchExpressions") or [])
    expressions.append(
        {"key": NAMESPACE_NAME_LABEL, "operator": "NotIn", "values": sorted(set(namespaces))}
    )
    return {**selector, "matchExpressions": expressions}


def webhook_configuration(
    *,
    ca_bundle: bytes,
    namespace_selector: str,
    failure_policy: str,
    timeout_seconds: int,
    url: str | None = None,
    service: tuple[str, str] | None = None,
    opt_out_label: str = "airtrust.io/inject",
) -> JsonObj:
    """The MutatingWebhookConfiguration: Pod CREATE only, in the selected namespaces,
    never for pods labelled ``airtrust.io/inject=false``; nothing chosen by default
    that matters (failurePolicy, sideEffects, timeout are written out).

    The webhook's own namespace (with ``service``) and kube-system are never matched,
    whatever their labels: under ``Fail`` a webhook whose pods need the webhook to be
    admitted could never come back, nor could the cluster's own components."""
    client: JsonObj = {"caBundle": _b64(ca_bundle)}
    if url is not None:
        client["url"] = url
    elif service is not None:
        client["service"] = {
            "namespace": service[0],
            "name": service[1],
            "path": MUTATE_PATH,
            "port": 443,
        }
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": INJECT_NAME, "labels": managed_labels()},
        "webhooks": [
            {
                "name": INJECT_WEBHOOK,
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": failure_policy,
                "timeoutSeconds": timeout_seconds,
                "matchPolicy": "Equivalent",
                "reinvocationPolicy": "Never",
                "rules": [
                    {
                        "operations": ["CREATE"],
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["pods"],
                        "scope": "Namespaced",
                    }
                ],
                "namespaceSelector": _never_matching(
                    label_selector(namespace_selector),
                    (*NEVER_INJECTED, *([service[0]] if service is not None else [])),
                ),
                "objectSelector": {
                    "matchExpressions": [
                        {"key": opt_out_label, "operator": "NotIn", "values": ["false"]}
                    ]
                },
                "clientConfig": client,
            }
        ],
    }


def inject_disruption_budget(namespace: str) -> JsonObj:
    """At least one webhook pod through every voluntary disruption (a node drain, a
    cluster upgrade): under ``failurePolicy: Fail`` no webhook pod means no new pod
    anywhere in scope, under ``Ignore`` pods admitted uninjected."""
    name = INJECT_NAME
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": managed_labels({"app.kubernetes.io/name": name}),
        },
        "spec": {
            "minAvailable": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
        },
    }


#: How long a webhook replica told to stop keeps answering, unready: longer than
#: kube-proxy takes to drop it from the Service, well inside the grace period (30 s).
DRAIN_SECONDS = 5


def inject_manifests(
    *,
    image: str,
    namespace: str,
    source: Source,
    namespace_selector: str,
    configmap: str,
) -> list[JsonObj]:
    """ServiceAccount, least-privilege RBAC, Deployment and Service of ``inject serve``.

    The server reads nothing secret through the API: the local CA comes from the
    source secret mounted as a file, its serving certificate from the TLS secret
    ``airtrust-inject-tls``; it lists namespaces and writes only ConfigMaps.
    """
    name = INJECT_NAME
    labels = managed_labels({"app.kubernetes.io/name": name})
    meta = {"name": name, "namespace": namespace, "labels": labels}
    args = [
        "inject", "serve", "--in-cluster", "--listen", "0.0.0.0:8443",
        "--cert", "/tls/tls.crt", "--key", "/tls/tls.key",
        "--ca", f"/ca/{source.key}", "--namespace-selector", namespace_selector,
        "--configmap", configmap, "--drain", str(DRAIN_SECONDS),
    ]  # fmt: skip
    ca_volume: JsonObj = (
        {"secret": {"secretName": source.name}}
        if source.plural == "secrets"
        else {"configMap": {"name": source.name}}
    )
    rules = [
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "verbs": ["get", "list", "create", "patch"],
        },
        # Its own configuration only: the caBundle follows the local CA.
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["mutatingwebhookconfigurations"],
            "resourceNames": [INJECT_NAME],
            "verbs": ["get", "patch"],
        },
    ]
    return [
        *_cluster_account(name, namespace, labels, rules),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {
                "selector": {"app.kubernetes.io/name": name},
                "ports": [{"name": "https", "port": 443, "targetPort": 8443}],
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                "template": {
                    "metadata": {"labels": {**labels, "airtrust.io/inject": "false"}},
                    "spec": {
                        "serviceAccountName": name,
                        "securityContext": _pod_security(),
                        "volumes": [
                            {"name": "tls", "secret": {"secretName": INJECT_TLS_SECRET}},
                            {"name": "ca", **ca_volume},
                        ],
                        "containers": [
                            {
                                "name": "inject",
                                "image": image,
                                "args": args,
                                "ports": [{"name": "https", "containerPort": 8443}],
                                "readinessProbe": {
                                    "httpGet": {
                                        "path": "/readyz",
                                        "port": "https",
                                        "scheme": "HTTPS",
                                    },
                                    **_READINESS,
                                },
                                "livenessProbe": {
                                    "httpGet": {
                                        "path": "/healthz",
                                        "port": "https",
                                        "scheme": "HTTPS",
                                    },
                                    **_LIVENESS,
                                },
                                "volumeMounts": [
                                    {"name": "tls", "mountPath": "/tls", "readOnly": True},
                                    {"name": "ca", "mountPath": "/ca", "readOnly": True},
                                ],
                                "resources": _resources(),
                                "securityContext": _container_security(),
                            }
                        ],
                    },
                },
            },
        },
    ]
