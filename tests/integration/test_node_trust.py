"""`airtrust node install` judged by the runtimes themselves.

containerd on the real test node decides whether an image pull from a registry whose
CA it did not know works (the kubelet's event text before, a running pod after);
skopeo (containers/image, as CRI-O and podman read it) judges the certs.d layout with
--cert-dir against the same registry. Docker's and k3s/RKE2's layouts are judged by
reading the files as those tools do (a PEM file; YAML), said plainly here: neither
runtime runs on this machine.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_cli
from tests.integration.conftest import require, wait_for
from tests.integration.node import (
    X509,
    Node,
    Untrusted,
    build_airtrust_image,
    island_registry,
    pulls,
    started_node,
)
from tests.integration.registry import debian_rootfs, push_tar

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with started_node(tmp_path_factory.mktemp("node")) as n:
        yield n


@pytest.fixture(scope="module")
def untrusted(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Untrusted]:
    folder = tmp_path_factory.mktemp("other-registry")
    assert run_cli("ca", "create", "--out", folder / "ca", "--name", "Registry Island CA").code == 0
    with island_registry(node, folder / "ca", folder) as registry:
        yield registry


def test_containerd_pulls_from_an_unknown_ca_registry_only_after_node_install(
    node: Node, untrusted: Untrusted, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The node's containerd refuses the pull with the x509 text; `node install` sets only
    the ca of the matching host in an existing hosts.toml (a mirror and capabilities
    stay); the same pull then runs. A re-run writes nothing; --remove restores the file."""
    certs_d = node.folder / "node" / "certs.d"
    folder = certs_d / untrusted.name
    folder.mkdir(parents=True)
    # The folder is this test's: other tests expect no hosts.toml for the registry.
    request.addfinalizer(lambda: shutil.rmtree(folder, ignore_errors=True))
    # Someone's hosts.toml: a mirror first (the node's own registry, trusted; it does not
    # hold this image, so containerd falls through to the host), then the host itself.
    existing = (
        "# managed by the platform team\n"
        f'server = "https://{untrusted.name}"\n\n'
        f'[host."https://{node.registry}"]\n'
        '  capabilities = ["pull", "resolve"]\n'
        f'  ca = "{node.registry_ca}"\n\n'
        f'[host."https://{untrusted.name}"]\n'
        '  capabilities = ["pull", "resolve"]\n'
    )
    (folder / "hosts.toml").write_text(existing)
    node.cluster.kubectl("create", "namespace", "pull-before")
    ran, events = pulls(node, "pull-before", "before", untrusted.image)
    assert not ran, events
    assert X509 in events, events
    install = [
        "node", "install", "--root", "/", "--runtime", "containerd",
        "--containerd-config", node.folder / "node" / "containerd.toml",
        "--registry", untrusted.name, "--ca", untrusted.ca, "-o", "json",
    ]  # fmt: skip
    first = run_cli(*install)
    assert first.code == 0, first.err
    assert json.loads(first.out)["writes"] == 2
    written = tomllib.loads((folder / "hosts.toml").read_text())
    before = tomllib.loads(existing)
    assert written["host"][f"https://{node.registry}"] == before["host"][f"https://{node.registry}"]
    host = written["host"][f"https://{untrusted.name}"]
    assert host["capabilities"] == ["pull", "resolve"]
    assert host["ca"] == str(folder / "airtrust-ca.crt")
    assert (folder / "hosts.toml.airtrust-backup").read_text() == existing
    node.cluster.kubectl("create", "namespace", "pull-after")
    ran, events = pulls(node, "pull-after", "after", untrusted.image)
    assert ran, events
    again = run_cli(*install)
    assert again.code == 0 and json.loads(again.out)["writes"] == 0, again.out
    removed = run_cli("node", "install", "--root", "/", "--remove", "-o", "json")
    assert removed.code == 0, removed.err
    assert (folder / "hosts.toml").read_text() == existing
    assert not (folder / "airtrust-ca.crt").exists()
    assert not (folder / "hosts.toml.airtrust-backup").exists()
    node.cluster.kubectl("create", "namespace", "pull-removed")
    ran, events = pulls(node, "pull-removed", "removed", untrusted.image)
    assert not ran and X509 in events, events


def test_the_containers_layout_is_what_skopeo_reads(untrusted: Untrusted, tmp_path: Path) -> None:
    """CRI-O/podman's certs.d, judged by skopeo (containers/image) with --cert-dir."""
    root = tmp_path / "root"
    (root / "etc" / "crio").mkdir(parents=True)
    name = untrusted.registry.host  # 127.0.0.1:PORT, as this machine reaches it
    skopeo = require("skopeo")
    ref = f"docker://{name}/library/debian:bookworm"
    plain = subprocess.run([skopeo, "inspect", ref], capture_output=True, text=True, check=False)
    assert plain.returncode != 0 and X509 in plain.stderr, plain.stderr
    result = run_cli("node", "install", "--root", root, "--registry", name, "--ca", untrusted.ca)
    assert result.code == 0, result.err
    assert "(crio)" in result.out, result.out
    cert_dir = root / "etc" / "containers" / "certs.d" / name
    judged = subprocess.run(
        [skopeo, "inspect", "--cert-dir", str(cert_dir), ref],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert judged.returncode == 0, judged.stderr
    assert json.loads(judged.stdout)["Name"].endswith("library/debian")


def test_docker_and_k3s_layouts_hold_the_ca_where_those_tools_read_it(
    untrusted: Untrusted, tmp_path: Path
) -> None:
    """Read as Docker (certs.d/HOST:PORT/ca.crt, PEM) and k3s (registries.yaml, YAML) read
    them; an existing ca.crt keeps its certificate, an existing registries.yaml its
    mirrors. Neither runtime runs on this machine."""
    ca_pem = untrusted.ca.read_text()
    other = tmp_path / "other"
    assert run_cli("ca", "create", "--out", other, "--name", "Someone Else").code == 0
    docker = tmp_path / "docker"
    (docker / "etc" / "docker" / "certs.d" / "reg.local:5000").mkdir(parents=True)
    theirs = (other / "ca.crt").read_text()
    (docker / "etc" / "docker" / "certs.d" / "reg.local:5000" / "ca.crt").write_text(theirs)
    r = run_cli(
        "node", "install", "--root", docker, "--registry", "reg.local:5000", "--ca", untrusted.ca
    )
    assert r.code == 0, r.err
    ca_crt = docker / "etc" / "docker" / "certs.d" / "reg.local:5000" / "ca.crt"
    held = ca_crt.read_text()
    assert theirs.strip() in held and ca_pem.strip() in held
    openssl = subprocess.run(
        ["openssl", "storeutl", "-noout", "-certs", str(ca_crt)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert "Total found: 2" in openssl.stdout, openssl.stdout + openssl.stderr
    k3s = tmp_path / "k3s"
    (k3s / "etc" / "rancher" / "k3s").mkdir(parents=True)
    mirrors = {"mirrors": {"docker.io": {"endpoint": ["https://reg.local:5000"]}}}
    (k3s / "etc" / "rancher" / "k3s" / "registries.yaml").write_text(yaml.safe_dump(mirrors))
    r = run_cli(
        "node", "install", "--root", k3s, "--registry", "reg.local:5000", "--ca", untrusted.ca
    )
    assert r.code == 0, r.err
    assert "restart k3s" in r.out, r.out
    doc = yaml.safe_load((k3s / "etc" / "rancher" / "k3s" / "registries.yaml").read_text())
    assert doc["mirrors"] == mirrors["mirrors"]
    ca_file = doc["configs"]["reg.local:5000"]["tls"]["ca_file"]
    assert (k3s / ca_file.lstrip("/")).read_text() == ca_pem


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--runtime", "kata"], "Invalid value for '--runtime'"),
        (["--registry", "https://reg.local:5000"], "has a scheme"),
        (["--registry", "reg.local:5000/team"], "has a path"),
        (["--registry", "reg.local:99999"], "is not 1-65535"),
        (["--ca", "KEY"], "private key"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    args: list[str], said: str, untrusted: Untrusted, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    (root / "etc" / "docker").mkdir(parents=True)
    key = untrusted.ca.with_name("ca.key")
    given = {"--registry": "reg.local:5000", "--ca": str(untrusted.ca)}
    pairs = dict(zip(args[::2], args[1::2], strict=True))
    if pairs.get("--ca") == "KEY":
        pairs["--ca"] = str(key)
    given.update(pairs)
    flat = [x for k, v in given.items() for x in (k, v)]
    result = run_cli("node", "install", "--root", root, *flat)
    assert result.code == 2, result.out + result.err
    assert said in result.err, result.err
    assert "Traceback" not in result.err
    assert "-----BEGIN" not in result.err + result.out  # nothing of the key is shown
    assert [p for p in root.rglob("*") if p.is_file()] == []


def test_node_sync_follows_the_ca_secret_and_the_node_says_what_it_holds(
    node: Node, untrusted: Untrusted, tmp_path: Path
) -> None:
    """The agent's pass, run from here with the node's name: the runtime's files follow
    the secret (a second CA added, as during a rotation), the Node's annotation holds the
    sha256 of what the runtime trusts, and containerd pulls at each step."""
    import hashlib

    certs_d = node.folder / "node" / "certs.d"
    record = certs_d / ".airtrust-node-trust.json"
    node.cluster.kubectl("create", "namespace", "node-agent")
    secret = ["-n", "node-agent", "create", "secret", "generic", "registry-ca"]
    node.cluster.kubectl(*secret, f"--from-file=runai-ca.pem={untrusted.ca}")
    sync = [
        "node", "sync", "--source", "secret/node-agent/registry-ca", "--registry", untrusted.name,
        "--node", "airtrust-node", "--root", "/", "--certs-dir", certs_d, "--once",
        "--kubeconfig", node.cluster.kubeconfig, "--context", "admin",
    ]  # fmt: skip
    ca_file = certs_d / untrusted.name / "airtrust-ca.crt"
    try:
        first = run_cli(*sync)
        assert first.code == 0, first.err
        annotations = node.cluster.get("node", "airtrust-node")["metadata"]["annotations"]
        digest = hashlib.sha256(ca_file.read_bytes()).hexdigest()
        assert annotations["airtrust.io/registry-ca-sha256"] == digest
        ran, events = pulls(node, "node-agent", "synced", untrusted.image)
        assert ran, events
        # A rotation's old + new in the source: the file follows, the node says so.
        newer = tmp_path / "newer"
        assert run_cli("ca", "create", "--out", newer, "--name", "Registry Island CA 2").code == 0
        both = tmp_path / "both.pem"
        both.write_bytes(untrusted.ca.read_bytes() + (newer / "ca.crt").read_bytes())
        replaced = node.cluster.kubectl(
            *secret, f"--from-file=runai-ca.pem={both}", "--dry-run=client", "-o", "json"
        ).stdout
        node.cluster.kubectl("replace", "-f", "-", stdin=replaced)
        second = run_cli(*sync)
        assert second.code == 0, second.err
        held = subprocess.run(
            ["openssl", "storeutl", "-noout", "-certs", str(ca_file)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert "Total found: 2" in held.stdout, held.stdout
        annotations = node.cluster.get("node", "airtrust-node")["metadata"]["annotations"]
        assert annotations["airtrust.io/registry-ca-sha256"] != digest
        ran, events = pulls(node, "node-agent", "rotated", untrusted.image)
        assert ran, events
    finally:
        run_cli("node", "install", "--root", "/", "--remove", "--state", record)
    assert not ca_file.exists() and not record.exists()


GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


@pytest.fixture(scope="module")
def airtrust_image(node: Node, offline_bundle: Path) -> str:
    """The airtrust image as an admin builds it across the gap (the session's offline
    bundle's wheels on the Debian base), in the node's own registry. The base goes under a
    name of its own: the node's registry is a mirror in the hosts.toml the first test
    writes, and must never hold library/debian, the image the untrusted registry serves."""
    base = node.ref("node-agent-base/debian:bookworm")
    push_tar(base, debian_rootfs())
    return build_airtrust_image(node, base, offline_bundle / "wheels", "node-agent")


def test_the_rendered_agent_runs_on_a_gpu_tainted_node_and_containerd_thenpulls(
    node: Node, untrusted: Untrusted, airtrust_image: str, tmp_path: Path
) -> None:
    """`render --node-trust` applied as is (kubectl apply -k) on a node tainted like a GPU
    node: the agent's pod runs there (every taint tolerated), writes containerd's files
    as root with every capability dropped and a read-only root filesystem, and annotates
    the Node; a pull from the registry whose CA the node did not know goes from the
    kubelet's x509 refusal to a running pod. containerd decides, not airtrust."""
    import hashlib

    from tests.integration.node import HOST

    certs_d = node.folder / "node" / "certs.d"
    record = certs_d / ".airtrust-node-trust.json"
    ca_file = certs_d / untrusted.name / "airtrust-ca.crt"
    out = tmp_path / "node-agent"
    rendered = run_cli(
        "render", "--node-trust", "--image", airtrust_image,
        "--source", "secret/airtrust-nodes/registry-ca", "--registry", untrusted.name,
        "--runtime", "containerd", "--certs-dir", certs_d, "--ca", untrusted.ca, "--out", out,
    )  # fmt: skip
    assert rendered.code == 0, rendered.err
    taint = f"{GPU_TAINT['key']}={GPU_TAINT['value']}:{GPU_TAINT['effect']}"
    tolerate = [{"operator": "Exists"}]
    config = tmp_path / "airtrust.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "domain": HOST,
                "version": "2.20",
                "ca": {"bundle": [str(untrusted.ca)]},
                "kubeconfig": str(node.cluster.kubeconfig),
                "clusters": [{"context": "admin"}],
                "registries": [untrusted.name],
                "node_trust": {
                    "runtime": "containerd",
                    "certs_dir": str(certs_d),
                    "source": "secret/airtrust-nodes/registry-ca",
                    "probe_images": [untrusted.image],
                },
            }
        )
    )

    def doctor(name: str) -> dict[str, str]:
        """doctor --probe's verdict for the node: its pull pod, judged by the kubelet's
        events (or the annotation check, for node-registry)."""
        result = run_cli("doctor", "-c", config, "--probe", "-o", "json")
        assert "Traceback" not in result.err, result.err
        (check,) = [c for c in json.loads(result.out)["checks"] if c["name"] == name]
        assert check["target"] == f"Node airtrust-node registry {untrusted.name}", check
        return check

    node.cluster.kubectl("create", "namespace", "agent-pulls")
    node.cluster.kubectl("create", "namespace", "airtrust-nodes")  # doctor's pull pods run there
    node.cluster.kubectl("taint", "node", "airtrust-node", taint)
    try:
        ran, events = pulls(node, "agent-pulls", "before", untrusted.image, tolerations=tolerate)
        assert not ran, events
        assert X509 in events, events
        refused = doctor("node-registry-pull")
        assert refused["status"] == "fail" and X509 in refused["evidence"], refused
        assert "airtrust node install --root / --runtime containerd" in refused["fix"], refused
        # Only the agent may write what is judged next: no annotation, no file before it.
        node.cluster.kubectl(
            "annotate", "node", "airtrust-node", "airtrust.io/registry-ca-sha256-", check=False
        )
        assert not ca_file.exists()
        node.cluster.kubectl("apply", "-k", out)

        def agent_pod() -> dict[str, object] | None:
            pods = node.cluster.get(
                "pods", "-n", "airtrust-nodes", "-l", "app.kubernetes.io/name=airtrust-node"
            )["items"]
            return pods[0] if pods else None

        def annotated() -> bool:
            live = node.cluster.get("node", "airtrust-node")["metadata"].get("annotations", {})
            return ca_file.exists() and live.get("airtrust.io/registry-ca-sha256") == (
                hashlib.sha256(ca_file.read_bytes()).hexdigest()
            )

        def done() -> bool:
            """Running, and Ready: its readiness probe (node sync's /readyz) says the last
            sync pass succeeded, not merely that the process started."""
            status = (agent_pod() or {}).get("status", {})
            ready = any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions", [])  # type: ignore[attr-defined]
            )
            return status.get("phase") == "Running" and ready and annotated()  # type: ignore[attr-defined]

        try:
            wait_for("the agent Ready, its files written and the node annotated", done, 180)
        except BaseException:
            print(node.cluster.kubectl("-n", "airtrust-nodes", "describe", "pods", check=False))
            print(node.logs("airtrust-nodes", "daemonset/airtrust-node"))
            raise
        running = agent_pod()
        assert running is not None
        assert running["spec"]["nodeName"] == "airtrust-node"  # type: ignore[index]
        assert running["status"]["phase"] == "Running", running["status"]  # type: ignore[index]
        assert untrusted.ca.read_text().strip() in ca_file.read_text()
        ran, events = pulls(node, "agent-pulls", "after", untrusted.image, tolerations=tolerate)
        assert ran, events
        pulled = doctor("node-registry-pull")
        assert pulled["status"] == "ok", pulled
        assert "Successfully pulled image" in pulled["evidence"], pulled
        held = doctor("node-registry")
        assert held["status"] == "ok", held
        left = node.cluster.get(
            "pods", "-n", "airtrust-nodes", "-l", "app.kubernetes.io/name=airtrust-pull-probe"
        )
        assert all(p["metadata"].get("deletionTimestamp") for p in left["items"]), left
    finally:
        node.cluster.kubectl("delete", "-k", out, "--wait=true", check=False)
        wait_for(
            "the agent's pods to be gone",
            lambda: not node.cluster.exists("namespace", "airtrust-nodes"),
            timeout=120,
        )
        node.cluster.kubectl("taint", "node", "airtrust-node", f"{GPU_TAINT['key']}-", check=False)
        run_cli("node", "install", "--root", "/", "--remove", "--state", record)
    assert not ca_file.exists() and not record.exists()


def test_doctor_and_rotate_judge_what_each_agent_node_holds(node: Node, tmp_path: Path) -> None:
    """The agent's pass (node sync, run from here for the node) annotates the Node with
    what its runtime holds and for which registries. doctor's node-registry check
    compares it with the bundle airtrust distributes and the registries airtrust.yaml
    names. rotate start distributes old + new, then waits for the node: no agent pass
    comes, so it refuses naming the node with nothing re-issued, and rotate finish is
    refused too; after the agent's next pass puts old + new on the node, the same rotate
    start continues and finish goes through. The registry name is one no test pulls
    from: these files touch no other test's pulls."""
    from tests.integration.node import HOST

    certs_d = node.folder / "node" / "certs.d"
    record = certs_d / ".airtrust-node-trust.json"
    registry = "rotation.test:5000"
    old, new = tmp_path / "old", tmp_path / "new"
    for folder, name in ((old, "Node Rotation Old CA"), (new, "Node Rotation New CA")):
        assert run_cli("ca", "create", "--out", folder, "--name", name).code == 0

    def write_config(path: Path, *registries: str) -> Path:
        path.write_text(
            yaml.safe_dump(
                {
                    "domain": HOST,
                    "version": "2.20",
                    "ca": {"bundle": [str(old / "ca.crt")]},
                    "kubeconfig": str(node.cluster.kubeconfig),
                    "clusters": [{"context": "admin", "registries": list(registries)}],
                    "node_trust": {
                        "runtime": "containerd",
                        "certs_dir": str(certs_d),
                        "source": "secret/runai/runai-ca-cert",
                    },
                }
            )
        )
        return path

    config = write_config(tmp_path / "airtrust.yaml", registry)
    sync = [
        "node", "sync", "--source", "secret/runai/runai-ca-cert", "--registry", registry,
        "--node", "airtrust-node", "--root", "/", "--certs-dir", certs_d, "--once",
        "--kubeconfig", node.cluster.kubeconfig, "--context", "admin",
    ]  # fmt: skip

    def node_checks(path: Path = config) -> list[dict[str, str]]:
        result = run_cli("doctor", "-c", path, "-o", "json")
        assert "Traceback" not in result.err, result.err
        return [c for c in json.loads(result.out)["checks"] if c["name"] == "node-registry"]

    try:
        applied = run_cli("apply", "-c", config)
        assert applied.code == 0, applied.err
        synced = run_cli(*sync)
        assert synced.code == 0, synced.err
        annotations = node.cluster.get("node", "airtrust-node")["metadata"]["annotations"]
        assert annotations["airtrust.io/registry-ca-registries"] == registry
        (check,) = node_checks()
        assert check["target"] == f"Node airtrust-node registry {registry}"
        assert check["status"] == "ok", check
        # A registry added to airtrust.yaml, the agent not told: doctor names it.
        more = write_config(tmp_path / "more.yaml", registry, "added.test:5000")
        added, kept = node_checks(more)
        assert added["target"] == "Node airtrust-node registry added.test:5000"
        assert added["status"] == "fail" and "does not write the CA for" in added["evidence"]
        assert "airtrust render --node-trust" in added["fix"], added
        assert kept["status"] == "ok", kept
        start = ["rotate", "start", "--new-ca", new, "-c", config]
        waited = run_cli(*start, "--node-timeout", "3")
        assert waited.code == 1, waited.out + waited.err
        assert "re-issued nothing" in waited.err, waited.err
        assert "node(s) airtrust-node do not hold old + new CA" in waited.err, waited.err
        assert len(waited.err.strip().splitlines()) == 1, waited.err
        (check,) = node_checks()
        assert check["status"] == "fail", check
        assert "node airtrust-node holds bundle sha256" in check["evidence"], check
        assert "spec.nodeName=airtrust-node" in check["fix"], check
        refused = run_cli("rotate", "finish", "-c", config)
        assert refused.code == 1, refused.out + refused.err
        assert "node(s) airtrust-node do not hold the new CA" in refused.err, refused.err
        assert "Traceback" not in refused.err
        again = run_cli(*sync)  # the agent's next pass: the secret now holds old + new
        assert again.code == 0, again.err
        ca_file = certs_d / registry / "airtrust-ca.crt"
        held = subprocess.run(
            ["openssl", "storeutl", "-noout", "-certs", str(ca_file)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert "Total found: 2" in held.stdout, held.stdout
        (check,) = node_checks()
        assert check["status"] == "ok", check
        started = run_cli(*start, "--node-timeout", "3", "-o", "json")  # it continues
        assert started.code == 0, started.err
        assert json.loads(started.out)["phase"] == "started"
        finished = run_cli("rotate", "finish", "-c", config)
        assert finished.code == 0, finished.err
    finally:
        node.cluster.kubectl("-n", "runai", "delete", "configmap", "airtrust-rotation", check=False)
        run_cli("node", "install", "--root", "/", "--remove", "--state", record)
    assert not (certs_d / registry).exists() and not record.exists()
