"""The node agent's objects (``render --node-trust``): a DaemonSet running ``node sync``.

It must run on every node the registry serves, GPU nodes first (they carry
``nvidia.com/gpu:NoSchedule``), so it tolerates every taint and runs at
``system-node-critical``. It writes files as root into one host folder, the
runtime's per-registry one, and nothing else: no ``privileged``, every capability
dropped (root owns that folder, so writing needs none), a read-only root filesystem.

k3s and RKE2 keep ``registries.yaml`` in ``/etc/rancher/<runtime>``, beside
``k3s.yaml``/``rke2.yaml``, the cluster-admin kubeconfig of a server: that folder is
never mounted. The agent gets ``registries.yaml`` alone (a file hostPath,
``FileOrCreate``; the folder must exist), airtrust's folder ``K3S_CA_DIR`` for the CA
files, its record and backups, and read-only the containerd folder k3s/RKE2 render on
start, from which it judges whether the running service has loaded the file.
Its account reads exactly the CA secret (a Role with ``resourceNames``, in the
secret's namespace, where the agent runs too) and may get and patch Nodes (for the
annotation saying what each holds); RBAC cannot narrow a Node to "its own".
"""

from __future__ import annotations

from collections.abc import Sequence

from airtrust.errors import NodeTrustError
from airtrust.plan.manifests import managed_labels
from airtrust.plan.model import JsonObj
from airtrust.plan.node_trust import (
    DEFAULT_CERTS_DIRS,
    K3S_CA_DIR,
    K3S_GENERATED,
    K3S_LIKE,
    REGISTRIES_FILE,
    Registry,
    Runtime,
)
from airtrust.plan.source import Source

__all__ = [
    "AGENT_NAME",
    "HEALTH_PORT",
    "HOST_ROOT",
    "PULL_PROBE",
    "node_agent_objects",
    "pull_probe_pod",
]

AGENT_NAME = "airtrust-node"
HOST_ROOT = "/host"
PULL_PROBE = "airtrust-pull-probe"
#: where ``node sync`` answers ``GET /readyz`` (the readiness probe): 200 while its last
#: good pass is recent, so Ready means "syncing", not merely "started"
HEALTH_PORT = 8086


def node_agent_objects(
    *,
    image: str,
    source: Source,
    registries: Sequence[Registry],
    runtime: Runtime,
    certs_dir: str | None = None,
    interval: int = 30,
) -> list[JsonObj]:
    """ServiceAccount, RBAC and DaemonSet, in the source's namespace. Only
    ``certs_dir`` (the runtime's default when not given) is mounted from the host, at
    the same path under ``/host``, so ``node sync --root /host`` writes where the
    runtime reads; the agent keeps its record in that folder too. For k3s/RKE2
    ``certs_dir`` is the folder of ``registries.yaml``, and only that file of it is
    mounted (:func:`_host_paths`)."""
    namespace = source.namespace
    folder = (certs_dir or DEFAULT_CERTS_DIRS[runtime]).rstrip("/")
    if not folder.startswith("/") or ".." in folder.split("/"):
        raise NodeTrustError(
            f"certs dir {certs_dir!r} is not an absolute path on the node",
            hint="give the folder the runtime reads, e.g. --certs-dir /etc/containerd/certs.d",
            reference="bad-certs-dir",
        )
    if not registries:
        raise NodeTrustError(
            "the node agent needs at least one registry",
            hint="name each registry the nodes pull from: --registry HOST[:PORT]",
            reference="no-registry",
        )
    labels = managed_labels({"app.kubernetes.io/name": AGENT_NAME})
    mounts = _host_paths(runtime, folder)
    args = [
        "node", "sync", "--in-cluster", "--source", str(source), "--root", HOST_ROOT,
        "--runtime", str(runtime), "--certs-dir", folder, "--interval", str(interval),
        "--health-port", str(HEALTH_PORT),
    ]  # fmt: skip
    for registry in dict.fromkeys(registries):  # each once, in the order given
        args += ["--registry", str(registry)]
    meta = {"name": AGENT_NAME, "namespace": namespace, "labels": dict(labels)}
    account: list[JsonObj] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta,
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": [source.plural],
                    "resourceNames": [source.name],
                    "verbs": ["get"],
                }
            ],
        },
        _binding("RoleBinding", meta, namespace),
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": AGENT_NAME, "labels": dict(labels)},
            "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]}],
        },
        _binding("ClusterRoleBinding", {"name": AGENT_NAME, "labels": dict(labels)}, namespace),
    ]
    daemonset: JsonObj = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": meta,
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": AGENT_NAME}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": {**labels, "airtrust.io/inject": "false"}},
                "spec": {
                    "serviceAccountName": AGENT_NAME,
                    "priorityClassName": "system-node-critical",
                    "tolerations": [{"operator": "Exists"}],
                    "securityContext": {
                        "runAsUser": 0,
                        "runAsNonRoot": False,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "agent",
                            "image": image,
                            "args": args,
                            "env": [
                                {
                                    "name": "NODE_NAME",
                                    "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}},
                                }
                            ],
                            "securityContext": {
                                "privileged": False,
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "resources": {
                                "requests": {"cpu": "5m", "memory": "48Mi"},
                                "limits": {"memory": "128Mi"},
                            },
                            "ports": [
                                {"name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP"}
                            ],
                            "readinessProbe": {
                                "httpGet": {"path": "/readyz", "port": "health"},
                                "periodSeconds": 10,
                                "failureThreshold": 1,
                            },
                            "volumeMounts": [
                                {
                                    "name": name,
                                    "mountPath": f"{HOST_ROOT}{path}",
                                    **({"readOnly": True} if read_only else {}),
                                }
                                for name, path, _, read_only in mounts
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": name, "hostPath": {"path": path, "type": kind}}
                        for name, path, kind, _ in mounts
                    ],
                },
            },
        },
    }
    return [*account, daemonset]


def _host_paths(runtime: Runtime, folder: str) -> list[tuple[str, str, str, bool]]:
    """The host paths the agent mounts: (volume name, node path, hostPath type, read
    only). k3s/RKE2: ``registries.yaml`` alone (never its folder, see the module
    docstring), airtrust's folder, and what the service renders on start, read only."""
    if runtime not in K3S_LIKE:
        return [("runtime-trust", folder, "DirectoryOrCreate", False)]
    return [
        ("registries-yaml", f"{folder}/{REGISTRIES_FILE}", "FileOrCreate", False),
        ("airtrust-ca", K3S_CA_DIR, "DirectoryOrCreate", False),
        ("runtime-config", K3S_GENERATED[runtime], "DirectoryOrCreate", True),
    ]


def _binding(kind: str, meta: JsonObj, namespace: str) -> JsonObj:
    role = "Role" if kind == "RoleBinding" else "ClusterRole"
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role, "name": AGENT_NAME},
        "subjects": [{"kind": "ServiceAccount", "name": AGENT_NAME, "namespace": namespace}],
    }


def pull_probe_pod(namespace: str, name: str, *, node: str, image: str) -> JsonObj:
    """``doctor --probe``'s pull on one node: the kubelet of ``node`` (pinned by
    ``nodeName``, every taint tolerated, as the agent) pulls ``image`` afresh
    (``imagePullPolicy: Always``, so a cached copy proves nothing), and its events say
    whether the runtime trusted the registry. What the image then does is irrelevant:
    the pod is deleted as soon as the pull is decided, and may run 60 s at most."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": managed_labels(
                {"app.kubernetes.io/name": PULL_PROBE, "airtrust.io/inject": "false"}
            ),
        },
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "activeDeadlineSeconds": 60,
            "automountServiceAccountToken": False,
            "tolerations": [{"operator": "Exists"}],
            "securityContext": {
                "runAsNonRoot": False,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "pull",
                    "image": image,
                    "imagePullPolicy": "Always",
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "resources": {"limits": {"cpu": "50m", "memory": "32Mi"}},
                }
            ],
        },
    }
