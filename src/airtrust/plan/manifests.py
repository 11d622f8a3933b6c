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

from airtrust.plan.model import BACKUP_OF, MANAGED_BY, JsonObj
from airtrust.plan.source import Source
from airtrust.plan.topology import SyncScope

__all__ = [
    "CONTROLLER_NAME",
    "LEASE_NAME",
    "NO_PRUNE",
    "PROBE_JOB",
    "ROTATION_RECORD",
    "backup_name",
    "backup_secret",
    "controller_manifests",
    "kustomization",
    "lease",
    "managed_labels",
    "micro_time",
    "namespace_manifest",
    "probe_job",
    "rendered_namespace",
    "rotation_configmap",
    "secret_manifest",
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


def probe_job(namespace: str, *, image: str, secret: str, key: str, url: str) -> JsonObj:
    """A one-shot Job that mounts the CA secret and reaches ``url`` with curl and it alone."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": PROBE_JOB, "namespace": namespace, "labels": managed_labels()},
        "spec": {
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": 60,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "probe",
                            "image": image,
                            "command": [
                                "curl",
                                "-sSf",
                                "--cacert",
                                f"/ca/{key}",
                                "-o",
                                "/dev/null",
                                url,
                            ],
                            "volumeMounts": [{"name": "ca", "mountPath": "/ca"}],
                        }
                    ],
                    "volumes": [{"name": "ca", "secret": {"secretName": secret}}],
                }
            },
        },
    }


def controller_manifests(
    *,
    image: str,
    namespace: str,
    source: Source,
    scope: SyncScope,
    replicas: int = 2,
) -> list[JsonObj]:
    """Deployment, ServiceAccount and least-privilege RBAC to run ``airtrust sync`` in-cluster."""
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
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name, "labels": labels},
            "rules": [
                {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
                # Targets are any namespace the selector matches; writes are by server-side apply.
                {
                    "apiGroups": [""],
                    "resources": ["secrets"],
                    "verbs": ["get", "list", "watch", "create", "patch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": labels},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
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
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": 65532,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "containers": [
                            {
                                "name": "sync",
                                "image": image,
                                "args": args,
                                "ports": [{"name": "metrics", "containerPort": 8080}],
                                "readinessProbe": {
                                    "httpGet": {"path": "/readyz", "port": "metrics"}
                                },
                                "livenessProbe": {
                                    "httpGet": {"path": "/healthz", "port": "metrics"}
                                },
                                "resources": {
                                    "requests": {"cpu": "10m", "memory": "64Mi"},
                                    "limits": {"memory": "256Mi"},
                                },
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                            }
                        ],
                    },
                },
            },
        },
    ]
