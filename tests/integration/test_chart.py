"""The Helm chart (charts/airtrust), judged by the real helm binary and a real node.

One source of truth: the chart is hand-written templates, and for several value sets
``helm template`` must give exactly the objects ``airtrust render --controller`` /
``--inject --service`` write (and ``plan.node_agent.node_agent_objects``, what
``render --node-trust`` writes), compared parsed, object by object, by
kind/namespace/name. The only differences allowed are the chart's, named in
:func:`_normalised` and :func:`_by_key`: no Namespace objects (Helm's
``-n``/``--create-namespace`` owns the namespace; an uninstall must never delete it
and the CA secrets in it), ``helm.sh/resource-policy: keep`` on a CA source the chart
writes, and the uninstall hook (a ``pre-delete`` Job and its account
``airtrust-inject-unregister``), a Helm mechanism render has no use for.

The node part installs the packaged chart from the node's own registry over TLS
(``oci://``, ``--ca-file`` the registry CA) once for the module, and reuses it:
pods Ready, each ServiceAccount's permissions by ``kubectl auth can-i --as``, an
upgrade that changes only what it should, and last an uninstall under
``failurePolicy: Fail`` during and after which every pod is admitted.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from airtrust.config import load_config
from airtrust.plan.node_agent import node_agent_objects
from airtrust.plan.node_trust import Registry, Runtime
from airtrust.plan.source import Source
from airtrust.plan.topology import SyncScope
from airtrust.profiles import load_profile
from tests.conftest import ROOT, Result, run_cli
from tests.integration.conftest import CACHE, openssl_server, wait_for
from tests.integration.node import (
    HOST,
    X509,
    Node,
    Untrusted,
    island_registry,
    pod,
    pulls,
    started_node,
)

pytestmark = pytest.mark.integration

CHART = ROOT / "charts" / "airtrust"
NS = "airtrust-system"
IMAGE = "reg.local:5000/airtrust/controller:0.1.0"
Key = tuple[str, str, str]


def helm_path() -> Path:
    path = CACHE / "bin" / "helm"
    if not path.exists():
        pytest.fail(f"{path} is missing; run scripts/build-testbins (scripts/test does)")
    return path


def helm(
    *args: str | Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(helm_path()), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
        env={**os.environ, **(env or {})},
    )
    if check and proc.returncode != 0:
        pytest.fail(f"helm {' '.join(map(str, args))} failed: {proc.stderr}")
    return proc


def _docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def _normalised(doc: dict[str, Any]) -> dict[str, Any]:
    """The object without what may differ by design: the chart's keep policy on a CA
    source, and an empty annotations map (render writes one on Secrets)."""
    out = json.loads(json.dumps(doc))
    meta = out["metadata"]
    annotations = {
        k: v for k, v in (meta.get("annotations") or {}).items() if k != "helm.sh/resource-policy"
    }
    meta.pop("annotations", None)
    if annotations:
        meta["annotations"] = annotations
    return out


#: The chart's uninstall hook and its account: Helm-only (see the module docstring).
UNREGISTER = "airtrust-inject-unregister"


def _by_key(docs: list[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    """Objects by (kind, namespace, name), render's Namespaces and the chart's uninstall
    hook left out (see above)."""
    out: dict[Key, dict[str, Any]] = {}
    for d in docs:
        if d["kind"] == "Namespace" or d["metadata"]["name"] == UNREGISTER:
            continue
        key = (d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"])
        assert key not in out, f"two objects {key}"
        out[key] = _normalised(d)
    return out


def template(*args: str | Path) -> dict[Key, dict[str, Any]]:
    """`helm template` parsed; the chart must never own a Namespace."""
    docs = _docs(helm("template", "airtrust", CHART, "-n", NS, *args).stdout)
    assert not [d for d in docs if d["kind"] == "Namespace"]
    return _by_key(docs)


def rendered(folder: Path, *args: str | Path) -> dict[Key, dict[str, Any]]:
    result = run_cli("render", *args, "--out", folder)
    assert result.code == 0, result.err
    docs = [
        d
        for f in sorted(folder.glob("*.yaml"))
        if f.name != "kustomization.yaml"
        for d in _docs(f.read_text())
    ]
    return _by_key(docs)


def assert_same(chart: dict[Key, dict[str, Any]], render: dict[Key, dict[str, Any]]) -> None:
    assert sorted(chart) == sorted(render)
    for key in sorted(render):
        assert chart[key] == render[key], key


@pytest.fixture(scope="module")
def local_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local CA made by airtrust (quickstart), its canonical bundle beside."""
    out = tmp_path_factory.mktemp("chart-pki")
    result = run_cli("quickstart", "--domain", "runai.example.test", "--out", out)
    assert result.code == 0, result.err
    return out


def _off(*parts: str) -> list[str]:
    return [a for p in parts for a in ("--set", f"{p}.enabled=false")]


def test_the_default_chart_is_render_controller(tmp_path: Path) -> None:
    """Defaults: the sync controller alone, as `render --controller` writes it for the
    chart's CA source (the secret apply keeps in the release namespace)."""
    chart = template("--set", f"image.repository={IMAGE.rsplit(':', 1)[0]}")
    render = rendered(
        tmp_path, "--controller", "--image", IMAGE, "--source", f"secret/{NS}/runai-ca-cert"
    )
    assert_same(chart, render)
    assert {k[0] for k in chart} == {
        "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Deployment",
    }  # fmt: skip


def test_chart_values_from_a_config_give_render_controller_of_that_config(
    local_ca: Path, tmp_path: Path
) -> None:
    """`airtrust chart values -c` then `helm template -f` equals `render --controller -c`
    of the same config: roles of the context, its version and OpenShift setting, the
    workload namespaces and selector, and the CA source written from the bundle."""
    config = tmp_path / "airtrust.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "domain": "runai.example.test",
                "version": "2.18",
                "ca": {"bundle": [str(local_ca / "ca-bundle.pem")]},
                "control_plane": {"context": "admin"},
                "clusters": [{"context": "admin", "openshift": "false"}],
                "workloads": {"namespaces": ["team-a", "team-b"], "selector": "team=ml,!legacy"},
            }
        )
    )
    values = tmp_path / "values.yaml"
    made = run_cli("chart", "values", "--offline", "-c", config, "--image", IMAGE, "--out", values)
    assert made.code == 0, made.err
    chart = template(
        "-f", values, "--set", "ca.source.name=local-ca", "--set", "ca.source.create=true"
    )
    render = rendered(
        tmp_path / "r", "--controller", "-c", config, "--image", IMAGE,
        "--source", f"secret/{NS}/local-ca",
    )  # fmt: skip
    assert_same(chart, render)
    (deployment,) = (d for k, d in chart.items() if k[0] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--platform-version") + 1] == "2.18"
    assert args.count("--role") == 2 and args[args.index("--selector") + 1] == "team=ml,!legacy"


@pytest.mark.parametrize(
    ("policy", "selector", "timeout"), [("Fail", "team=ml,!legacy", "10"), ("Ignore", "", "5")]
)
def test_the_webhook_is_render_inject_service(
    local_ca: Path, tmp_path: Path, policy: str, selector: str, timeout: str
) -> None:
    """webhook.enabled: the Deployment, Service, account, RBAC, PodDisruptionBudget and
    MutatingWebhookConfiguration of `render --inject --service`, its caBundle the
    ca.bundle given (the source is the secret apply keeps: required, not written)."""
    bundle = (local_ca / "ca-bundle.pem").read_text()
    chart = template(
        *_off("controller"), "--set", "webhook.enabled=true", "--set-string",
        f"ca.bundle={bundle}", "--set", f"webhook.failurePolicy={policy}",
        "--set", f"webhook.timeoutSeconds={timeout}", "--set-string",
        f"scope.selector={selector.replace(',', chr(92) + ',')}",
        "--set", f"image.repository={IMAGE.rsplit(':', 1)[0]}",
    )  # fmt: skip
    render = rendered(
        tmp_path, "--inject", "--service", f"{NS}/airtrust-inject", "--image", IMAGE,
        "--ca", local_ca / "ca-bundle.pem", "--failure-policy", policy,
        "--timeout-seconds", timeout, *(["--selector", selector] if selector else []),
    )  # fmt: skip
    assert_same(chart, render)
    config = chart[("MutatingWebhookConfiguration", "", "airtrust-inject")]
    ca_bundle = config["webhooks"][0]["clientConfig"]["caBundle"]
    assert base64.b64decode(ca_bundle).decode() == bundle
    assert "PRIVATE KEY" not in base64.b64decode(ca_bundle).decode()


def test_a_configmap_source_the_chart_writes_is_render_with_source(
    local_ca: Path, tmp_path: Path
) -> None:
    """ca.source.create with a ConfigMap source: the ConfigMap `render --inject --source`
    writes, plus the chart's keep policy (checked apart: uninstall leaves it)."""
    bundle = (local_ca / "ca-bundle.pem").read_text()
    args = [
        *_off("controller"), "--set", "webhook.enabled=true", "--set-string", f"ca.bundle={bundle}",
        "--set", "ca.source.kind=configmap", "--set", "ca.source.name=local-ca",
        "--set", "ca.source.key=ca.pem", "--set", "ca.source.create=true",
        "--set", f"image.repository={IMAGE.rsplit(':', 1)[0]}",
    ]  # fmt: skip
    chart = template(*args)
    render = rendered(
        tmp_path, "--inject", "--service", f"{NS}/airtrust-inject", "--image", IMAGE,
        "--ca", local_ca / "ca-bundle.pem", "--source", f"configmap/{NS}/local-ca:ca.pem",
    )  # fmt: skip
    assert_same(chart, render)
    raw = _docs(helm("template", "airtrust", CHART, "-n", NS, *args).stdout)
    (source,) = (d for d in raw if d["kind"] == "ConfigMap")
    assert source["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    # ca.source.keep=false: no keep policy, so `helm uninstall` removes the source.
    raw = _docs(
        helm("template", "airtrust", CHART, "-n", NS, *args, "--set", "ca.source.keep=false").stdout
    )
    (source,) = (d for d in raw if d["kind"] == "ConfigMap")
    assert "annotations" not in source["metadata"]


@pytest.mark.parametrize("runtime", [Runtime.CONTAINERD, Runtime.CRIO])
def test_the_node_agent_is_the_node_trust_builder(runtime: Runtime) -> None:
    """nodeAgent.enabled: the DaemonSet, account and RBAC of `render --node-trust`,
    compared with its pure builder (plan.node_agent.node_agent_objects)."""
    chart = template(
        *_off("controller"), "--set", "nodeAgent.enabled=true",
        "--set", "nodeAgent.registries={reg.local:5000,mirror.local}",
        "--set", f"nodeAgent.runtime={runtime}", "--set", "nodeAgent.interval=60",
        "--set", f"image.repository={IMAGE.rsplit(':', 1)[0]}",
    )  # fmt: skip
    built = node_agent_objects(
        image=IMAGE,
        source=Source.parse(f"secret/{NS}/runai-ca-cert", "runai-ca.pem"),
        registries=[Registry("reg.local", 5000), Registry("mirror.local")],
        runtime=runtime,
        interval=60,
    )
    assert_same(chart, _by_key(built))


def test_every_part_together_is_the_union(local_ca: Path) -> None:
    """All three parts at once: no object of one part is lost or changed by another."""
    bundle = (local_ca / "ca-bundle.pem").read_text()
    common = ["--set-string", f"ca.bundle={bundle}"]
    parts = {
        "controller": template(*common, *_off("webhook", "nodeAgent")),
        "webhook": template(*common, *_off("controller"), "--set", "webhook.enabled=true"),
        "nodeAgent": template(
            *common, *_off("controller"), "--set", "nodeAgent.enabled=true",
            "--set", "nodeAgent.registries={reg.local:5000}",
        ),
    }  # fmt: skip
    together = template(
        *common, "--set", "webhook.enabled=true", "--set", "nodeAgent.enabled=true",
        "--set", "nodeAgent.registries={reg.local:5000}",
    )  # fmt: skip
    union: dict[Key, dict[str, Any]] = {}
    for objects in parts.values():
        assert not set(union) & set(objects)
        union.update(objects)
    assert_same(together, union)


def test_the_uninstall_hook_deletes_only_the_webhook_configuration(local_ca: Path) -> None:
    """webhook.enabled adds a pre-delete Job running `airtrust inject unregister` (the
    chart's image, its own account, the webhook's placement); its ClusterRole is get and
    delete on that one configuration by name. Without the webhook: none of it."""
    bundle = (local_ca / "ca-bundle.pem").read_text()
    gpu = "webhook.tolerations[0].operator=Exists"
    docs = _docs(
        helm(
            "template", "airtrust", CHART, "-n", NS, "--set", "webhook.enabled=true",
            "--set-string", f"ca.bundle={bundle}", "--set", gpu,
        ).stdout
    )  # fmt: skip
    hook = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    job = hook[("Job", UNREGISTER)]
    assert job["metadata"]["annotations"] == {
        "helm.sh/hook": "pre-delete",
        "helm.sh/hook-weight": "0",
        "helm.sh/hook-delete-policy": "before-hook-creation,hook-succeeded",
    }
    spec = job["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == UNREGISTER and spec["tolerations"] == [
        {"operator": "Exists"}
    ]
    (container,) = spec["containers"]
    assert container["image"] == f"airtrust:{CHART_VERSION}"
    assert container["args"][:5] == ["inject", "unregister", "--in-cluster", "--name",
                                     "airtrust-inject"]  # fmt: skip
    assert hook[("ClusterRole", UNREGISTER)]["rules"] == [
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["mutatingwebhookconfigurations"],
            "resourceNames": ["airtrust-inject"],
            "verbs": ["get", "delete"],
        }
    ]
    assert {"ServiceAccount", "ClusterRoleBinding"} <= {k for k, n in hook if n == UNREGISTER}
    without = _docs(helm("template", "airtrust", CHART, "-n", NS).stdout)
    assert not [d for d in without if d["metadata"]["name"] == UNREGISTER]


def test_helm_lint_strict_is_clean() -> None:
    """`helm lint --strict` with the defaults and with every part on: no warning, no error."""
    for args in (
        [],
        ["--set", "webhook.enabled=true", "--set-string", "ca.bundle=-----BEGIN CERTIFICATE-----",
         "--set", "nodeAgent.enabled=true", "--set", "nodeAgent.registries={reg.local:5000}"],
    ):  # fmt: skip
        linted = helm("lint", "--strict", CHART, *args, check=False)
        assert linted.returncode == 0, linted.stdout + linted.stderr
        assert "1 chart(s) linted, 0 chart(s) failed" in linted.stdout
        assert "[WARNING]" not in linted.stdout and "[ERROR]" not in linted.stdout


#: (helm args, what helm's schema validation says), each a value the chart must refuse.
SCHEMA_REFUSALS = [
    (["--set", "webhook.failurePolicy=Sometimes"],
     'webhook.failurePolicy must be one of the following: "Ignore", "Fail"'),
    (["--set", "controller.replicas=-1"],
     "controller.replicas: Must be greater than or equal to 1"),
    (["--set", "webhook.replicas=1"], "webhook.replicas: Must be greater than or equal to 2"),
    (["--set", "webhook.timeoutSeconds=31"],
     "webhook.timeoutSeconds: Must be less than or equal to 30"),
    (["--set", "nodeAgent.runtime=podman"], "nodeAgent.runtime must be one of the following"),
    (["--set", "nodeAgent.registries={https://reg.local}"],
     "nodeAgent.registries.0: Does not match pattern"),
    (["--set", "webhook.enabled=true"],
     "ca.bundle: String length must be greater than or equal to 1"),
    (["--set", "nodeAgent.enabled=true"],
     "nodeAgent.registries: Array must have at least 1 items"),
    (["--set-string", "ca.bundle=-----BEGIN PRIVATE KEY-----"],
     "ca.bundle: Must not validate the schema (not)"),
    (["--set", "controler.enabled=false"], "Additional property controler is not allowed"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "message"), SCHEMA_REFUSALS)
def test_a_wrong_value_is_refused_by_the_schema_in_helms_words(
    args: list[str], message: str, tmp_path: Path
) -> None:
    """values.schema.json: helm itself refuses the value, before any object is made, at
    `helm template` as at `helm install` (the same validation)."""
    proc = helm("template", "airtrust", CHART, *args, check=False)
    assert proc.returncode != 0 and proc.stdout == ""
    assert "values don't meet the specifications of the schema(s)" in proc.stderr
    assert message in proc.stderr, proc.stderr


# --- on the node: from the registry over TLS, installed once for the module -----------

RELEASE = "airtrust"
#: A workload namespace of the config: a CA target through the chart's scope.namespaces.
WORKLOADS = "chart-team"
SCOPE_LABEL = "airtrust.io/inject=enabled"
GPU_TAINT = "nvidia.com/gpu"
ANY_TAINT = [{"operator": "Exists"}]


@dataclass
class Release:
    """The chart as installed from ``oci://`` on the module's node; ``installed()``
    (re)installs it when a test before (the uninstall test) took it away."""

    node: Node
    folder: Path
    chart_ref: str
    values: Path
    config: Path  # the airtrust.yaml apply, chart values and rotate read
    island: Untrusted  # the registry only the node agent makes the node trust
    airtrust: Path  # the bundle's own airtrust, installed by its install.sh
    live: bool = False

    def helm(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        return helm(
            *args, "--kubeconfig", self.node.cluster.kubeconfig, check=check,
            env=helm_env(self.folder),
        )  # fmt: skip

    def kubectl(
        self, *args: str | Path, check: bool = True, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        return self.node.cluster.kubectl(*args, check=check, stdin=stdin)

    def installed(self) -> Release:
        if not self.live:
            self.helm(
                "install", RELEASE, self.chart_ref, "--version", CHART_VERSION, "-n", NS,
                "-f", self.values, "--ca-file", self.node.registry_ca,
                "--wait", "--timeout", "300s",
            )  # fmt: skip
            self.live = True
            self.ready()
        return self

    def ready(self) -> None:
        for name in ("airtrust-sync", "airtrust-inject"):
            self.node.wait_rollout(NS, name, timeout=180)
        self.kubectl(
            "-n", NS, "rollout", "status", "daemonset/airtrust-node", "--timeout=180s"
        )  # fmt: skip

    def values_image(self) -> str:
        """The image the values name (REPOSITORY:TAG), for values written again."""
        image = yaml.safe_load(self.values.read_text())["image"]
        return f"{image['repository']}:{image['tag']}"

    def objects(self) -> dict[Key, dict[str, Any]]:
        """Every object of the release, live, without what the server changes on its own."""
        manifest = self.helm("get", "manifest", RELEASE, "-n", NS).stdout
        out: dict[Key, dict[str, Any]] = {}
        for doc in _docs(manifest):
            ns = doc["metadata"].get("namespace", "")
            live = self.node.cluster.get(
                doc["kind"].lower(), doc["metadata"]["name"], *(["-n", ns] if ns else [])
            )
            meta = live["metadata"]
            for field_name in ("resourceVersion", "managedFields", "generation", "uid",
                               "creationTimestamp"):  # fmt: skip
                meta.pop(field_name, None)
            (meta.get("annotations") or {}).pop("deployment.kubernetes.io/revision", None)
            live.pop("status", None)
            out[(doc["kind"], ns, doc["metadata"]["name"])] = live
        return out


CHART_VERSION = str(yaml.safe_load((CHART / "Chart.yaml").read_text())["version"])


def helm_env(folder: Path) -> dict[str, str]:
    """helm's config, cache and registry login in the test's own folder, never ~."""
    return {
        "HELM_CONFIG_HOME": str(folder / "config"),
        "HELM_CACHE_HOME": str(folder / "cache"),
        "HELM_DATA_HOME": str(folder / "data"),
        "HELM_REGISTRY_CONFIG": str(folder / "config" / "registry.json"),
    }


@contextlib.contextmanager
def registry_by_name(node: Node, folder: Path) -> Iterator[str]:
    """The node's registry as ``HOSTNAME:PORT``, over TLS end to end.

    helm (containerd's resolver) speaks plain HTTP to localhost and to any loopback
    address, whatever ``--ca-file`` says (helm/helm#11683), and the registry's
    certificate names only localhost and 127.0.0.1. So this relays TLS: it serves a
    certificate for the machine's host name, issued by the registry's own CA (the
    ``--ca-file`` helm is given), and forwards every byte to the real registry over
    TLS verified with that CA. Nothing is answered here: the registry answers."""
    name = socket.gethostname()
    address = socket.gethostbyname(name)
    issued = run_cli(
        "cert", "issue", "--ca-dir", node.folder / "node" / "registry-ca", "--domain", name,
        "--out", folder / "registry-name-tls",
    )  # fmt: skip
    assert issued.code == 0, issued.err
    serving = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    serving.load_cert_chain(folder / "registry-name-tls" / "tls.crt",
                            folder / "registry-name-tls" / "tls.key")  # fmt: skip
    upstream = ssl.create_default_context(cafile=str(node.registry_ca))
    host, port = node.registry.rsplit(":", 1)

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(
            host, int(port), ssl=upstream, server_hostname=host
        )
        await asyncio.gather(
            pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True
        )

    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(asyncio.start_server(relay, address, 0, ssl=serving))
    listening = server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"{name}:{listening}"
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with started_node(tmp_path_factory.mktemp("chart-node")) as n:
        yield n


@pytest.fixture(scope="module")
def island(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Untrusted]:
    """A registry serving a certificate from the local CA (the one the chart
    distributes), which the node's containerd does not trust: before the chart, a pull
    from it is refused with containerd's x509 text, read from the kubelet's events."""
    folder = tmp_path_factory.mktemp("island")
    with island_registry(node, node.pki, folder) as registry:
        node.cluster.kubectl("create", "namespace", "chart-pulls")
        ran, events = pulls(node, "chart-pulls", "before", registry.image, tolerations=ANY_TAINT)
        assert not ran and X509 in events, events
        yield registry


@pytest.fixture(scope="module")
def release(
    node: Node, island: Untrusted, offline_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Release]:
    """`airtrust apply` (inject_namespace: the CA secret and the webhook's serving
    certificate), then from the offline bundle alone, as the isolated side's README
    steps say: the bundle's airtrust (install.sh), its image pushed with that
    `airtrust image push oci:...`, the values from that `airtrust chart values`, its
    chart with `helm push`, both to the node's registry over TLS, and the chart installed from
    oci:// with every part on, the webhook under failurePolicy Fail, the node agent for
    the island registry."""
    folder = tmp_path_factory.mktemp("chart")
    image = node.ref(f"airtrust/airtrust:{CHART_VERSION}")
    layout = offline_bundle / "images" / f"airtrust-{CHART_VERSION}.oci.tar"
    # The isolated side's airtrust is the bundle's: install.sh (pip --no-index) into a venv.
    venv = folder / "venv"
    installed = subprocess.run(
        [str(offline_bundle / "install.sh"), str(venv)], capture_output=True, text=True,
        timeout=600, check=False, env={"PATH": "/usr/bin:/bin", "HOME": str(folder)},
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-2000:]
    airtrust = venv / "bin" / "airtrust"
    carried = bundled(
        airtrust, "image", "push", f"oci:{layout}", image, "--registry-ca", node.registry_ca,
        "-o", "json",
    )  # fmt: skip
    assert carried.code == 0, carried.err
    # skopeo judges: the registry serves the very image the bundle carries.
    certs = folder / "skopeo-certs"  # containers/image reads every *.crt there as a CA
    certs.mkdir()
    (certs / "registry-ca.crt").write_bytes(Path(node.registry_ca).read_bytes())
    served = subprocess.run(
        ["skopeo", "inspect", "--cert-dir", str(certs),
         "--format", "{{.Digest}}", f"docker://{image}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert served.returncode == 0, served.stderr
    assert served.stdout.strip() == json.loads(carried.out)["digest"]
    config = folder / "airtrust.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "domain": HOST,
                "version": "2.20",
                "ca": {"bundle": [str(node.pki / "ca-bundle.pem")]},
                "tls": {"cert": str(node.pki / "tls.crt"), "key": str(node.pki / "tls.key")},
                "issue_from": str(node.pki),
                "kubeconfig": str(node.cluster.kubeconfig),
                "control_plane": {"context": "admin"},
                "clusters": [{"context": "admin", "inject_namespace": NS}],
                "workloads": {"namespaces": [WORKLOADS]},
            }
        )
    )
    applied = bundled(airtrust, "apply", "-c", config)
    assert applied.code == 0, applied.out + applied.err
    # The node is tainted like a GPU node: the agent tolerates every taint by default,
    # the controller and the webhook through the chart's tolerations values.
    node.cluster.kubectl("taint", "nodes", "--all", f"{GPU_TAINT}=present:NoSchedule")
    values = values_for(node, config, image, island, folder / "values.yaml", airtrust)
    archive = offline_bundle / f"airtrust-{CHART_VERSION}.tgz"
    with registry_by_name(node, folder) as registry:
        pushed = helm(
            "push", archive, f"oci://{registry}/charts", "--ca-file", node.registry_ca,
            env=helm_env(folder),
        )  # fmt: skip
        assert "Digest: sha256:" in pushed.stdout + pushed.stderr, pushed.stderr
        started = time.monotonic()
        chart = Release(
            node, folder, f"oci://{registry}/charts/airtrust", values, config, island, airtrust
        ).installed()
        # containerd decides: the registry it refused before the chart now serves a pod.
        ca_file = node.folder / "node" / "certs.d" / island.name / "airtrust-ca.crt"
        wait_for(f"the node agent to write {ca_file}", ca_file.exists, timeout=120)
        ran, events = pulls(node, "chart-pulls", "after", island.image, tolerations=ANY_TAINT)
        assert ran and "Successfully pulled image" in events, events
        print(
            f"\nchart installed from oci://, every pod Ready in {time.monotonic() - started:.1f} s;"
            f" the controller's container started -> Ready: {_start_to_ready(chart):.1f} s"
        )
        yield chart


def bundled(airtrust: Path, *args: str | Path) -> Result:
    """The bundle's own ``airtrust`` (install.sh's venv), as the isolated side runs it."""
    proc = subprocess.run(
        [str(airtrust), *map(str, args)], capture_output=True, text=True, timeout=120,
        check=False, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    return Result(proc.returncode, proc.stdout, proc.stderr)


def values_for(
    node: Node, config: Path, image: str, island: Untrusted, out: Path, airtrust: Path
) -> Path:
    """`airtrust chart values` (the bundle's) from the config (which follows a rotation
    recorded in the cluster), then what a platform team adds for this node: the
    runtime's folder, and tolerations for the GPU taint on the controller and the
    webhook."""
    made = bundled(
        airtrust, "chart", "values", "-c", config, "--context", "admin", "--image", image,
        "--webhook", "--failure-policy", "Fail", "--registry", island.name, "--out", out, "--force",
    )  # fmt: skip
    assert made.code == 0, made.err
    edited = yaml.safe_load(out.read_text())
    edited["nodeAgent"]["certsDir"] = str(node.folder / "node" / "certs.d")
    gpu = [{"key": GPU_TAINT, "operator": "Exists", "effect": "NoSchedule"}]
    edited["controller"]["tolerations"] = gpu
    edited["webhook"]["tolerations"] = gpu
    out.write_text(yaml.safe_dump(edited))
    return out


def _start_to_ready(release: Release) -> float:
    """The slowest controller pod's start -> Ready, by the kubelet's own clock (its
    container's startedAt, the pod's Ready condition)."""

    def at(stamp: str) -> float:
        return time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))

    spans = []
    for p in _pods(release):
        if p["metadata"]["name"].startswith("airtrust-sync-"):
            (ready,) = [c for c in p["status"]["conditions"] if c["type"] == "Ready"]
            started = p["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
            spans.append(at(ready["lastTransitionTime"]) - at(started))
    assert spans, "no controller pod"
    return max(spans)


def _pods(release: Release) -> list[dict[str, Any]]:
    items = release.node.cluster.get(
        "pods", "-n", NS, "-l", "app.kubernetes.io/managed-by=airtrust"
    )
    return [p for p in items["items"] if not p["metadata"].get("deletionTimestamp")]


def _ready(p: dict[str, Any]) -> bool:
    conditions = (p.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_installed_from_oci_every_part_runs_and_the_webhook_injects(release: Release) -> None:
    """From the registry over TLS: two controller replicas, two webhook replicas and the
    node agent, all Ready; a pod created in scope comes back injected through the
    Service (failurePolicy Fail); the agent wrote the CA for its registry on the node."""
    release.installed().ready()
    pods = _pods(release)
    names = sorted(p["metadata"]["labels"]["app.kubernetes.io/name"] for p in pods)
    assert names == ["airtrust-inject"] * 2 + ["airtrust-node"] + ["airtrust-sync"] * 2
    assert all(_ready(p) for p in pods), [p["status"] for p in pods if not _ready(p)]
    (tainted,) = release.node.cluster.get("nodes")["items"]
    assert {"key": GPU_TAINT, "value": "present", "effect": "NoSchedule"} in tainted["spec"][
        "taints"
    ]
    status = release.helm("status", RELEASE, "-n", NS).stdout
    assert "STATUS: deployed" in status and "airtrust doctor" in status
    ns = _scoped_namespace(release, "chart-in")
    wait_for(
        f"the webhook's bundle ConfigMap in {ns}",
        lambda: release.node.cluster.exists("configmap", "airtrust-ca-bundle", ns),
        timeout=60,
    )
    created = release.kubectl("create", "-f", "-", stdin=json.dumps(held("p1", ns)).encode())
    assert created.returncode == 0
    stored = release.node.cluster.get("pod", "-n", ns, "p1")
    assert "airtrust.io/injected" in stored["metadata"]["annotations"]
    ca_file = release.node.folder / "node" / "certs.d" / release.island.name / "airtrust-ca.crt"
    assert "PRIVATE KEY" not in ca_file.read_text()
    assert "BEGIN CERTIFICATE" in ca_file.read_text()
    # The pull from the registry the node refused before the chart is judged right
    # after the install (in the release fixture): the rotation test, in any order, moves
    # the node to a CA that registry's certificate no longer chains to.


def held(name: str, ns: str) -> dict[str, Any]:
    """A pod that is admitted and stored but never scheduled (a scheduling gate):
    admission is all that is judged, and two cores are not spent running it."""
    return pod(
        name, ns, "pause", command=["true"], schedulingGates=[{"name": "airtrust.test/hold"}]
    )


def _scoped_namespace(release: Release, name: str) -> str:
    """A new namespace in the webhook's scope (labelled), its bundle ConfigMap written."""
    release.kubectl("create", "namespace", name)
    release.kubectl("label", "namespace", name, SCOPE_LABEL)
    return name


#: per ServiceAccount: (can-i arguments, the apiserver's answer); what it needs is yes,
#: and no delete, no wildcard, no Secret beyond its scope.
PERMISSIONS: dict[str, list[tuple[list[str], str]]] = {
    "airtrust-sync": [
        (["list", "namespaces"], "yes"),
        # Only the CA secret, in any target: by name (list/watch carry the name as a
        # fieldSelector, which the apiserver authorizes against resourceNames).
        (["watch", "secrets/runai-ca-cert", "-n", "chart-any"], "yes"),
        (["list", "secrets/runai-ca-cert", "-n", "runai-backend"], "yes"),
        (["get", "secrets/runai-ca-cert", "-n", "runai"], "yes"),
        (["create", "secrets", "-n", "chart-any"], "yes"),
        (["patch", "secrets", "-n", "runai"], "yes"),
        (["get", "secrets/runai-ca-cert", "-n", NS], "yes"),
        (["get", "secrets", "-n", "kube-system"], "no"),
        (["get", "secrets/airtrust-inject-tls", "-n", NS], "no"),
        (["get", "secrets/runai-backend-tls", "-n", "runai-backend"], "no"),
        (["list", "secrets", "-A"], "no"),
        (["watch", "secrets", "-n", "chart-any"], "no"),
        (["update", "leases.coordination.k8s.io/airtrust-sync", "-n", NS], "yes"),
        (["delete", "secrets", "-n", "runai"], "no"),
        (["update", "secrets", "-n", "runai"], "no"),
        (["create", "leases.coordination.k8s.io", "-n", "default"], "no"),
        (["delete", "leases.coordination.k8s.io", "-n", NS], "no"),
        (["get", "configmaps", "-n", NS], "no"),
        (["*", "*"], "no"),
    ],
    "airtrust-inject": [
        (["list", "namespaces"], "yes"),
        (["create", "configmaps", "-n", "chart-any"], "yes"),
        (["patch", "mutatingwebhookconfigurations/airtrust-inject"], "yes"),
        (["patch", "mutatingwebhookconfigurations/someone-else"], "no"),
        (["delete", "mutatingwebhookconfigurations/airtrust-inject"], "no"),
        (["delete", "configmaps", "-n", "chart-any"], "no"),
        (["get", "secrets", "-n", NS], "no"),
        (["list", "secrets", "-n", "chart-any"], "no"),
        (["*", "*"], "no"),
    ],
    UNREGISTER: [
        (["delete", "mutatingwebhookconfigurations/airtrust-inject"], "yes"),
        (["get", "mutatingwebhookconfigurations/airtrust-inject"], "yes"),
        (["delete", "mutatingwebhookconfigurations/someone-else"], "no"),
        (["delete", "mutatingwebhookconfigurations"], "no"),
        (["deletecollection", "mutatingwebhookconfigurations"], "no"),
        (["patch", "mutatingwebhookconfigurations/airtrust-inject"], "no"),
        (["delete", "validatingwebhookconfigurations/airtrust-inject"], "no"),
        (["get", "secrets", "-n", NS], "no"),
        (["delete", "pods", "-n", NS], "no"),
        (["*", "*"], "no"),
    ],
    "airtrust-node": [
        (["get", "secrets/runai-ca-cert", "-n", NS], "yes"),
        (["patch", "nodes"], "yes"),
        (["get", "secrets/airtrust-inject-tls", "-n", NS], "no"),
        (["list", "secrets", "-n", NS], "no"),
        (["get", "secrets/runai-ca-cert", "-n", "runai"], "no"),
        (["delete", "nodes"], "no"),
        (["*", "*"], "no"),
    ],
}


def test_each_service_account_can_do_what_it_needs_and_nothing_more(release: Release) -> None:
    """`kubectl auth can-i --as=system:serviceaccount:NS:SA`, the apiserver's own RBAC
    evaluation, for each of the chart's accounts."""
    release.installed()
    wrong = []
    for account, checks in PERMISSIONS.items():
        for args, expected in checks:
            proc = release.kubectl(
                "auth", "can-i", *args, f"--as=system:serviceaccount:{NS}:{account}",
                check=False,
            )  # fmt: skip
            answer = proc.stdout.decode().strip()
            if answer != expected:
                wrong.append(f"{account}: can-i {' '.join(args)} -> {answer!r}, want {expected}")
    assert not wrong, "\n".join(wrong)


def test_install_without_the_secrets_apply_writes_stops_and_names_them(
    node: Node, local_ca: Path, tmp_path: Path
) -> None:
    """Against a cluster (`lookup` answers; `--dry-run=server` renders there and creates
    nothing), in a namespace `airtrust apply` never wrote: helm stops, naming the
    missing CA source and the command that writes it; with the source made by the chart,
    the webhook's serving certificate. `helm template` (no cluster) is not guarded."""
    bundle = (local_ca / "ca-bundle.pem").read_text()
    values = ["--set", "webhook.enabled=true", "--set-string", f"ca.bundle={bundle}"]
    install = ["install", "guarded", CHART, "-n", "chart-guard", "--dry-run=server",
               "--kubeconfig", node.cluster.kubeconfig, *values]  # fmt: skip
    env = helm_env(tmp_path)
    proc = helm(*install, check=False, env=env)
    assert proc.returncode != 0, proc.stdout
    assert (
        "the CA source secret chart-guard/runai-ca-cert does not exist: run `airtrust apply"
        " -c airtrust.yaml` with inject_namespace: chart-guard"
    ) in proc.stderr, proc.stderr
    proc = helm(*install, "--set", "ca.source.create=true", check=False, env=env)
    assert proc.returncode != 0, proc.stdout
    assert "secret chart-guard/airtrust-inject-tls does not exist" in proc.stderr, proc.stderr
    assert "with inject_namespace: chart-guard" in proc.stderr
    assert helm("template", "guarded", CHART, "-n", "chart-guard", *values).returncode == 0


def test_an_upgrade_with_one_changed_value_changes_only_its_object(release: Release) -> None:
    """`helm upgrade --reuse-values --set controller.replicas=1`: of every live object of
    the release only the controller's Deployment differs, and only in spec.replicas;
    then back, so the release is as the module installed it."""
    release.installed()
    key = ("Deployment", NS, "airtrust-sync")
    before = release.objects()
    try:
        release.helm(
            "upgrade", RELEASE, release.chart_ref, "--version", CHART_VERSION, "-n", NS,
            "--reuse-values", "--set", "controller.replicas=1", "--ca-file",
            release.node.registry_ca, "--wait", "--timeout", "180s",
        )  # fmt: skip
        after = release.objects()
        assert sorted(after) == sorted(before)
        changed = sorted(k for k in before if before[k] != after[k])
        assert changed == [key], changed
        assert before[key]["spec"]["replicas"] == 2 and after[key]["spec"]["replicas"] == 1
        after[key]["spec"]["replicas"] = 2
        assert after[key] == before[key]
    finally:
        release.helm(
            "upgrade", RELEASE, release.chart_ref, "--version", CHART_VERSION, "-n", NS,
            "--reuse-values", "--set", "controller.replicas=2", "--ca-file",
            release.node.registry_ca, "--wait", "--timeout", "180s",
        )  # fmt: skip


@dataclass
class _Uninstalling:
    """What was seen while `helm uninstall` ran: pods created in scope (admitted, or
    refused with kubectl's text) and snapshots (webhook pods going?, configuration
    still there?), each listed pods first, so "going and still there" is a real order."""

    admitted: list[str]
    refused: list[str]
    snapshots: list[tuple[bool, bool]]


def _uninstall_under_load(release: Release, ns: str) -> _Uninstalling:
    seen = _Uninstalling([], [], [])
    done = threading.Event()
    deadline = time.monotonic() + 300

    def create() -> None:
        n = 0
        while not done.is_set() and time.monotonic() < deadline:
            name = f"during-{n}"
            n += 1
            proc = release.kubectl(
                "create", "-f", "-", stdin=json.dumps(held(name, ns)).encode(), check=False
            )
            if proc.returncode == 0:
                seen.admitted.append(name)
            else:
                seen.refused.append(f"{name}: {proc.stderr.decode().strip()}")
            done.wait(0.2)

    def snapshot() -> None:
        while not done.is_set() and time.monotonic() < deadline:
            pods = release.kubectl(
                "get", "pods", "-n", NS, "-l", "app.kubernetes.io/name=airtrust-inject",
                "-o", "json", check=False,
            )  # fmt: skip
            config = release.kubectl(
                "get", "mutatingwebhookconfiguration", "airtrust-inject", "--ignore-not-found",
                "-o", "name", check=False,
            )  # fmt: skip
            if pods.returncode == 0 and config.returncode == 0:
                serving = [
                    p
                    for p in json.loads(pods.stdout)["items"]
                    if not p["metadata"].get("deletionTimestamp")
                ]
                seen.snapshots.append((len(serving) < 2, bool(config.stdout.strip())))
            done.wait(0.1)

    threads = [threading.Thread(target=f, daemon=True) for f in (create, snapshot)]
    for thread in threads:
        thread.start()
    try:
        wait_for(
            "both loops to have run once before helm starts",
            lambda: bool(seen.snapshots) and bool(seen.admitted or seen.refused),
            timeout=30,
        )
        proc = release.helm("uninstall", RELEASE, "-n", NS, "--timeout", "240s", check=False)
        release.live = False
        if proc.returncode != 0:
            logs = release.kubectl("logs", "-n", NS, f"job/{UNREGISTER}", check=False)
            pytest.fail(f"helm uninstall failed: {proc.stderr}\nhook: {logs.stdout.decode()}")
        wait_for(
            "the webhook's pods to be gone, not only terminating",
            lambda: (
                not release.node.cluster.get(
                    "pods", "-n", NS, "-l", "app.kubernetes.io/name=airtrust-inject"
                )["items"]
            ),
            timeout=180,
        )
    finally:
        done.set()
        for thread in threads:
            thread.join(timeout=60)
    return seen


def test_uninstall_under_fail_admits_every_pod_and_keeps_the_ca_secrets(
    release: Release,
) -> None:
    """`helm uninstall` with the webhook under failurePolicy Fail, while pods are created
    in scope in a loop: none is refused (kubectl would say `failed calling webhook`),
    because the pre-delete hook (`airtrust inject unregister`) deletes the
    MutatingWebhookConfiguration before helm deletes anything; helm's own UninstallOrder
    would delete it last, after the Deployment. Snapshots, pods listed before the
    configuration, never show a webhook pod going while the configuration is still
    there. A pod created after is admitted uninjected; the CA secrets the chart does not
    own stay (the source apply keeps, the webhook's serving certificate); unregister
    again finds nothing and is fine."""
    release.installed()
    config = release.node.cluster.get("mutatingwebhookconfiguration", "airtrust-inject")
    assert config["webhooks"][0]["failurePolicy"] == "Fail"
    ns = _scoped_namespace(release, "chart-after")
    wait_for("the namespace's bundle ConfigMap", lambda: release.node.cluster.exists(
        "configmap", "airtrust-ca-bundle", ns), timeout=60)  # fmt: skip
    started = time.monotonic()
    seen = _uninstall_under_load(release, ns)
    going = [registered for pods_going, registered in seen.snapshots if pods_going]
    print(
        f"\nuninstall under load in {time.monotonic() - started:.1f} s: {len(seen.admitted)} pods"
        f" admitted, {len(seen.refused)} refused; {len(seen.snapshots)} snapshots,"
        f" {len(going)} with webhook pods going"
    )
    assert not seen.refused, "\n".join(seen.refused)
    assert len(seen.admitted) >= 3, seen.admitted
    assert going, "no snapshot saw the webhook's pods go"
    assert not any(going), "a webhook pod went while its configuration was registered"
    assert seen.snapshots[0] == (False, True), seen.snapshots[0]
    created = release.kubectl(
        "create", "-f", "-", stdin=json.dumps(held("right-after", ns)).encode(), check=False
    )
    assert created.returncode == 0, created.stderr.decode()
    stored = release.node.cluster.get("pod", "-n", ns, "right-after")
    assert "airtrust.io/injected" not in (stored["metadata"].get("annotations") or {})
    assert not release.node.cluster.exists("mutatingwebhookconfiguration", "airtrust-inject")
    assert not release.node.cluster.exists("job", UNREGISTER, NS)  # hook-succeeded
    for secret in ("runai-ca-cert", "airtrust-inject-tls"):
        assert release.node.cluster.exists("secret", secret, NS), secret
    again = run_cli(
        "inject", "unregister", "--name", "airtrust-inject", "--kubeconfig",
        release.node.cluster.kubeconfig, "--context", "admin",
    )  # fmt: skip
    assert again.code == 0, again.err
    assert "mutatingwebhookconfiguration airtrust-inject was not there" in again.out


def _secret_pem(release: Release, ns: str, name: str, key: str = "runai-ca.pem") -> str | None:
    found = release.kubectl("get", "secret", "-n", ns, name, "-o", "json", check=False)
    if found.returncode != 0:
        return None
    return base64.b64decode(json.loads(found.stdout)["data"][key]).decode()


def test_the_controller_holds_one_lease_and_converges_every_deleted_ca_secret(
    release: Release,
) -> None:
    """Two controller replicas, one holder in the Lease (read from the Lease object, not
    airtrust's metric); every CA target of the config (both roles: runai and
    runai-backend, and the workload namespace in scope.namespaces), deleted by hand,
    comes back from the controller with exactly the source's PEM. The controller reads
    only that secret by name (its RBAC), so this is also its RBAC's proof."""
    release.installed()
    controllers = [
        p["metadata"]["name"]
        for p in _pods(release)
        if p["metadata"]["labels"]["app.kubernetes.io/name"] == "airtrust-sync"
    ]
    assert len(controllers) == 2, controllers

    def holders() -> list[str]:
        holder = str(_lease(release).get("holderIdentity") or "")
        return [name for name in controllers if holder.startswith(name)]

    # The Lease outlives an uninstall (it is the controllers' state, not the chart's):
    # a replica of this install takes it once the last holder's term ran out.
    wait_for("one replica of this install to hold the Lease", lambda: bool(holders()), 120)
    assert len(holders()) == 1, (_lease(release), controllers)
    source = _secret_pem(release, NS, "runai-ca-cert")
    assert source and "BEGIN CERTIFICATE" in source
    profile = load_profile()
    scope = SyncScope.from_config(load_config(release.config), profile, "admin")
    targets = sorted(scope.targets(profile, openshift=False))
    values = yaml.safe_load(release.values.read_text())
    assert {"runai", "runai-backend", *values["scope"]["namespaces"]} <= set(targets), targets
    assert WORKLOADS in values["scope"]["namespaces"], values["scope"]
    for ns in targets:
        release.kubectl("delete", "secret", "-n", ns, "runai-ca-cert")

    def restored() -> list[str]:
        return [ns for ns in targets if _secret_pem(release, ns, "runai-ca-cert") != source]

    wait_for(f"the controller to write runai-ca-cert again in {targets}", lambda: not restored(),
             timeout=60)  # fmt: skip


def _lease(release: Release) -> dict[str, Any]:
    found = release.node.cluster.get("lease", "-n", NS, "airtrust-sync")
    return dict(found.get("spec") or {})


def _upgrade(release: Release, values: Path) -> None:
    release.helm(
        "upgrade", RELEASE, release.chart_ref, "--version", CHART_VERSION, "-n", NS,
        "-f", values, "--ca-file", release.node.registry_ca, "--wait", "--timeout", "300s",
    )  # fmt: skip
    release.values = values
    release.ready()


def _certificates(pem: str) -> int:
    return pem.count("-----BEGIN CERTIFICATE-----")


def test_helm_upgrade_after_rotate_start_carries_the_new_ca_to_every_part(
    release: Release, tmp_path: Path
) -> None:
    """`rotate start`, then `chart values` (which follows the rotation recorded in the
    cluster) and `helm upgrade`: the webhook's caBundle, the bundle it writes into a
    namespace in scope, what the controller writes into a CA target and the CA file
    the node agent writes on the node all hold old + new, and pods are still admitted
    injected under Fail; the registry re-issued from the new CA serves the node's pulls
    through start and finish. Then `rotate finish` and one more upgrade: the new CA
    alone everywhere, as the module's release goes on."""
    release.installed()
    island = release.island
    new_ca = tmp_path / "new-ca"
    assert run_cli("ca", "create", "--out", new_ca, "--name", "Chart Rotated Root").code == 0
    ns = _scoped_namespace(release, f"chart-rot-{int(time.monotonic() * 1000) % 100000}")
    ca_file = release.node.folder / "node" / "certs.d" / island.name / "airtrust-ca.crt"

    old_pem = (release.node.pki / "ca.crt").read_text().strip()
    new_pem = (new_ca / "ca.crt").read_text().strip()
    seen: dict[str, str] = {}

    def everywhere(*wanted: str) -> bool:
        """Each part holds exactly ``wanted`` of old and new (the namespace's merged
        bundle also holds the base's public roots, so only old and new are counted)."""
        hook = release.node.cluster.get("mutatingwebhookconfiguration", "airtrust-inject")
        mapped = release.node.cluster.get("configmap", "-n", ns, "airtrust-ca-bundle")
        parts = {
            "caBundle": base64.b64decode(hook["webhooks"][0]["clientConfig"]["caBundle"]).decode(),
            "namespace bundle": mapped["data"]["ca-bundle.pem"],
            "controller's target": _secret_pem(release, "runai", "runai-ca-cert") or "",
            "node agent's file": ca_file.read_text() if ca_file.exists() else "",
        }
        for part, pem in parts.items():
            held = [name for name, ca in (("old", old_pem), ("new", new_pem)) if ca in pem]
            seen[part] = "+".join(held) or "neither"
        return all(seen[part] == "+".join(wanted) for part in parts)

    def admitted(name: str) -> None:
        created = release.kubectl(
            "create", "-f", "-", stdin=json.dumps(held(name, ns)).encode(), check=False
        )
        assert created.returncode == 0, created.stderr.decode()
        stored = release.node.cluster.get("pod", "-n", ns, name)
        assert "airtrust.io/injected" in stored["metadata"]["annotations"]

    wait_for("the namespace's bundle ConfigMap", lambda: release.node.cluster.exists(
        "configmap", "airtrust-ca-bundle", ns), timeout=60)  # fmt: skip
    started = run_cli("rotate", "start", "-c", release.config, "--new-ca", new_ca)
    assert started.code == 0, started.out + started.err
    image = f"{release.values_image()}"
    both = values_for(
        release.node, release.config, image, island, tmp_path / "both.yaml", release.airtrust
    )
    assert _certificates(yaml.safe_load(both.read_text())["ca"]["bundle"]) == 2
    _upgrade(release, both)
    try:
        wait_for("old + new in every part", lambda: everywhere("old", "new"), timeout=180)
    finally:
        print(f"\nafter the upgrade with old + new: {seen}")
    admitted("during")
    # The registry now serves a certificate from the new CA (re-issued after start, as
    # an admin does): the node, holding old + new, still pulls.
    island.reissue(new_ca)
    ran, events = pulls(release.node, "chart-pulls", f"during-{ns}", island.image,
                        tolerations=ANY_TAINT)  # fmt: skip
    assert ran, events
    live = release.node.cluster.get("secret", "-n", "runai-backend", "runai-backend-tls")["data"]
    for key in ("tls.crt", "tls.key"):
        (tmp_path / key).write_bytes(base64.b64decode(live[key]))
    with openssl_server(tmp_path / "tls.crt", tmp_path / "tls.key") as server:
        finished = run_cli("rotate", "finish", "-c", release.config,
                           "--connect-to", f"{HOST}:443:127.0.0.1:{server.port}")  # fmt: skip
    assert finished.code == 0, finished.out + finished.err
    alone = values_for(
        release.node, release.config, image, island, tmp_path / "new.yaml", release.airtrust
    )
    assert _certificates(yaml.safe_load(alone.read_text())["ca"]["bundle"]) == 1
    _upgrade(release, alone)
    try:
        wait_for("the new CA alone in every part", lambda: everywhere("new"), timeout=180)
    finally:
        print(f"after the upgrade with the new CA: {seen}")
    assert (new_ca / "ca.crt").read_text().strip() in ca_file.read_text()
    admitted("after")
    ran, events = pulls(release.node, "chart-pulls", f"finished-{ns}", island.image,
                        tolerations=ANY_TAINT)  # fmt: skip
    assert ran, events


def test_runai_projects_scope_is_render_with_the_profiles_project_selector(
    local_ca: Path, tmp_path: Path
) -> None:
    """scope.runaiProjects: both the controller and the webhook take the profile's
    project namespaces (`runai/queue`), as render does given that selector."""
    bundle = (local_ca / "ca-bundle.pem").read_text()
    image = ["--set", f"image.repository={IMAGE.rsplit(':', 1)[0]}"]
    projects = ["--set", "scope.runaiProjects=true", *image]
    controller = template(*projects)
    assert_same(
        controller,
        rendered(
            tmp_path / "c", "--controller", "--image", IMAGE, "--selector", "runai/queue",
            "--source", f"secret/{NS}/runai-ca-cert",
        ),
    )  # fmt: skip
    webhook = template(
        *projects, *_off("controller"), "--set", "webhook.enabled=true",
        "--set-string", f"ca.bundle={bundle}",
    )  # fmt: skip
    assert_same(
        webhook,
        rendered(
            tmp_path / "w", "--inject", "--service", f"{NS}/airtrust-inject", "--image", IMAGE,
            "--ca", local_ca / "ca-bundle.pem", "--selector", "runai/queue",
        ),
    )  # fmt: skip
    refused = helm(
        "template", "airtrust", CHART, *projects, "--set", "webhook.enabled=true",
        "--set-string", f"ca.bundle={bundle}", "--set-string", "scope.selector=team=ml",
        check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "scope.selector and scope.runaiProjects exclude each other" in refused.stderr
