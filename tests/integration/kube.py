"""Real kube-apiservers for tests, started by scripts/testcluster (never a fake).

Each runs a kube-controller-manager's namespace controller and garbage collector, so
a test may delete the namespaces it made and share an apiserver with others; a test
that changes cluster-wide state gets a fresh one (a few seconds).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import DATA, ROOT
from tests.integration.conftest import CACHE, POLL

BIN = CACHE / "bin"


def kubectl_path() -> Path:
    path = BIN / "kubectl"
    if not path.exists():
        pytest.fail(f"{path} is missing; run scripts/build-testbins (scripts/test does)")
    return path


@dataclass
class KubeCluster:
    folder: Path

    @property
    def kubeconfig(self) -> Path:
        return self.folder / "kubeconfig"

    def kubectl(
        self,
        *args: str | Path,
        check: bool = True,
        stdin: bytes | None = None,
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        proc = subprocess.run(
            [
                str(kubectl_path()),
                "--kubeconfig",
                str(kubeconfig or self.kubeconfig),
                *map(str, args),
            ],
            input=stdin,
            capture_output=True,
            timeout=120,
            check=False,
        )
        if check and proc.returncode != 0:
            pytest.fail(f"kubectl {' '.join(map(str, args))} failed: {proc.stderr.decode()}")
        return proc

    def get(self, *args: str) -> Any:
        return yaml.safe_load(self.kubectl("get", *args, "-o", "json").stdout)

    def exists(self, kind: str, name: str, namespace: str | None = None) -> bool:
        ns = ["-n", namespace] if namespace else []
        return self.kubectl("get", kind, name, *ns, check=False).returncode == 0

    def install_crd(self, name: str) -> None:
        self.kubectl("apply", "-f", DATA / "crds" / name)
        crd = yaml.safe_load((DATA / "crds" / name).read_text())["metadata"]["name"]
        self.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
        # Discovery and the REST mapping follow a moment after Established.
        deadline = time.monotonic() + 30
        group = crd.split(".", 1)[1]
        while time.monotonic() < deadline:
            if group in self.kubectl("api-versions").stdout.decode():
                return
            time.sleep(POLL)
        pytest.fail(f"API group {group} not served after 30 s")

    def user(self, name: str) -> Path:
        run_script("user", self.folder, name)
        return self.folder / f"{name}.kubeconfig"

    def service_account_kubeconfig(self, namespace: str, name: str) -> Path:
        """A kubeconfig (context 'admin') whose only credential is a token the apiserver
        issued for ServiceAccount ``namespace/name``: what a pod of that account has."""
        token = self.kubectl("create", "token", name, "-n", namespace, "--duration", "1h")
        config = yaml.safe_load(self.kubeconfig.read_text())
        (user,) = config["users"]
        user["user"] = {"token": token.stdout.decode().strip()}
        path = self.folder / f"sa-{namespace}-{name}.kubeconfig"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path


def run_script(*args: str | Path) -> None:
    proc = subprocess.run(
        [str(ROOT / "scripts" / "testcluster"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"scripts/testcluster {' '.join(map(str, args))} failed: {proc.stderr or proc.stdout}"
        )
    assert proc.stdout == "", f"testcluster printed on success: {proc.stdout!r}"


@contextlib.contextmanager
def started_cluster(folder: Path, *, node: bool = False) -> Iterator[KubeCluster]:
    """A test apiserver (and with ``node``, the controllers, scheduler, a kubelet with
    containerd, and the registry the node trusts: scripts/testcluster up --node)."""
    try:
        run_script("up", folder, *(["--node"] if node else []))
        yield KubeCluster(folder)
    finally:
        run_script("down", folder)


def merged_kubeconfig(path: Path, clusters: dict[str, KubeCluster]) -> Path:
    """One kubeconfig whose contexts are named by ``clusters``' keys."""
    merged: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [],
        "users": [],
        "contexts": [],
    }
    for name, cluster in clusters.items():
        cfg = yaml.safe_load(cluster.kubeconfig.read_text())
        merged["clusters"].append({"name": name, "cluster": cfg["clusters"][0]["cluster"]})
        merged["users"].append({"name": name, "user": cfg["users"][0]["user"]})
        merged["contexts"].append({"name": name, "context": {"cluster": name, "user": name}})
    merged["current-context"] = next(iter(clusters))
    path.write_text(yaml.safe_dump(merged))
    path.chmod(0o600)
    return path


def install_patched_sidecars(
    cluster: KubeCluster, registry: Any, layer_tar: Path, bundle: Path
) -> dict[str, str]:
    """Mirror both Run:ai sidecars into ``registry`` (git-sync as 65533 with its entrypoint),
    patch them with airtrust, and create a RunaiConfig that still names the unpatched ones.

    Returns the ``images.references`` that ``image patch --sidecars`` printed.
    """
    import json

    from tests.conftest import run_cli
    from tests.integration.registry import push_tar

    push_tar(registry.ref("run-ai-prod/goofys:master"), layer_tar)
    push_tar(
        registry.ref("git-sync/git-sync:v4.4.0"),
        layer_tar,
        entrypoint=["/git-sync"],
        user="65533:65533",
    )
    patched = run_cli(
        "image", "patch", "--sidecars", "--registry", registry.host, "--ca", bundle, "-o", "json"
    )
    if patched.code != 0:
        pytest.fail(f"image patch --sidecars failed: {patched.err}")
    cluster.install_crd("runaiconfig.yaml")
    cluster.kubectl("create", "namespace", "runai")
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        stdin=json.dumps(
            {
                "apiVersion": "run.ai/v1",
                "kind": "RunaiConfig",
                "metadata": {"name": "runai", "namespace": "runai"},
                "spec": {
                    "s3": {"image": registry.ref("run-ai-prod/goofys:master")},
                    "git": {"image": registry.ref("git-sync/git-sync:v4.4.0")},
                },
            }
        ).encode(),
    )
    references: dict[str, str] = json.loads(patched.out)["references"]
    return references
