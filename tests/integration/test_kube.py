"""plan / apply / render / helm against real kube-apiservers (scripts/testcluster)."""

from __future__ import annotations

import base64
import json
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import DATA, assert_one_line_error, run_cli
from tests.integration.conftest import CACHE
from tests.integration.kube import KubeCluster, merged_kubeconfig, started_cluster

pytestmark = pytest.mark.integration
DOMAIN = "runai.example.test"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki") / "qs"
    result = run_cli("quickstart", "--domain", DOMAIN, "--out", folder)
    assert result.code == 0, result.err
    return folder


def write_config(folder: Path, pki: Path, kubeconfig: Path, **extra: Any) -> Path:
    config: dict[str, Any] = {
        "profile": "runai",
        "version": "2.20",
        "domain": DOMAIN,
        "ca": {"bundle": [str(pki / "ca-bundle.pem")]},
        "tls": {"cert": str(pki / "tls.crt"), "key": str(pki / "tls.key")},
        "kubeconfig": str(kubeconfig),
        "control_plane": {"context": "admin"},
        "clusters": [{"context": "admin"}],
    }
    config.update(extra)
    path = folder / "airtrust.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def secrets(cluster: KubeCluster) -> dict[tuple[str, str], dict[str, Any]]:
    items = cluster.get("secrets", "-A")["items"]
    return {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in items}


def versions(cluster: KubeCluster) -> dict[tuple[str, str], str]:
    return {k: v["metadata"]["resourceVersion"] for k, v in secrets(cluster).items()}


def test_apply_creates_what_the_documented_kubectl_commands_create(
    tidy_cluster: KubeCluster, pki: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path, pki, tidy_cluster.kubeconfig)
    plan = run_cli("plan", "-c", config, "--exit-code", "-o", "json")
    assert plan.code == 4, plan.err
    actions = {
        (c["kind"], c["namespace"], c["name"]): c["action"] for c in json.loads(plan.out)["changes"]
    }
    assert actions[("Namespace", None, "runai")] == "create"
    assert actions[("Secret", "runai", "runai-ca-cert")] == "create"
    assert not any(ns == "openshift-monitoring" for _, ns, _ in actions)

    applied = run_cli("apply", "-c", config, "-o", "json")
    assert applied.code == 0, applied.err
    live = secrets(tidy_cluster)
    reference = json.loads(
        tidy_cluster.kubectl(
            "create",
            "secret",
            "generic",
            "runai-ca-cert",
            f"--from-file=runai-ca.pem={pki / 'ca-bundle.pem'}",
            "--dry-run=client",
            "-o",
            "json",
        ).stdout
    )
    for namespace in ("runai-backend", "runai"):
        secret = live[(namespace, "runai-ca-cert")]
        assert secret["data"] == reference["data"]
        assert secret["type"] == "Opaque"
        assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "airtrust"
    labels = live[("runai", "runai-ca-cert")]["metadata"]["labels"]
    assert labels["run.ai/cluster-wide"] == "true" and labels["run.ai/name"] == "runai-ca-cert"
    assert "run.ai/name" not in live[("runai-backend", "runai-ca-cert")]["metadata"]["labels"]
    tls_reference = json.loads(
        tidy_cluster.kubectl(
            "create",
            "secret",
            "tls",
            "runai-backend-tls",
            f"--cert={pki / 'tls.crt'}",
            f"--key={pki / 'tls.key'}",
            "--dry-run=client",
            "-o",
            "json",
        ).stdout
    )
    tls = live[("runai-backend", "runai-backend-tls")]
    assert tls["type"] == "kubernetes.io/tls" and tls["data"] == tls_reference["data"]
    key_pem = base64.b64decode(live[("runai", "runai-ca-cert")]["data"]["runai-ca.pem"])
    assert b"PRIVATE KEY" not in key_pem

    # Re-apply: nothing is written, no resourceVersion moves, plan is clean.
    before = versions(tidy_cluster)
    again = run_cli("apply", "-c", config, "-o", "json")
    assert again.code == 0 and json.loads(again.out)["writes"] == 0
    assert versions(tidy_cluster) == before
    assert run_cli("plan", "-c", config, "--exit-code").code == 0


def test_older_version_has_no_labels_and_dry_run_stores_nothing(
    tidy_cluster: KubeCluster, pki: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path, pki, tidy_cluster.kubeconfig, version="2.17")
    dry = run_cli("apply", "-c", config, "--dry-run=server", "-o", "json")
    assert dry.code == 0, dry.err
    assert json.loads(dry.out)["dry_run"] is True
    assert not tidy_cluster.exists("namespace", "runai")
    assert run_cli("apply", "-c", config).code == 0
    labels = secrets(tidy_cluster)[("runai", "runai-ca-cert")]["metadata"]["labels"]
    assert "run.ai/cluster-wide" not in labels


@pytest.mark.parametrize("mode", ["secret", "file"])
def test_foreign_secret_conflict_and_backup(
    tidy_cluster: KubeCluster, pki: Path, tmp_path: Path, mode: str
) -> None:
    other = DATA / "bad-input" / "ok-two-cas.pem"
    tidy_cluster.kubectl("create", "namespace", "runai")
    tidy_cluster.kubectl(
        "-n",
        "runai",
        "create",
        "secret",
        "generic",
        "runai-ca-cert",
        f"--from-file=runai-ca.pem={other}",
    )
    config = write_config(
        tmp_path,
        pki,
        tidy_cluster.kubeconfig,
        backup={"mode": mode, "dir": str(tmp_path / "backups")},
    )
    plan = run_cli("plan", "-c", config, "-o", "json")
    change = next(
        c
        for c in json.loads(plan.out)["changes"]
        if c["namespace"] == "runai" and c["name"] == "runai-ca-cert"
    )
    assert change["action"] == "update"
    assert change["foreign_managers"] == ["kubectl-create"]
    assert any("certificates" in r for r in change["reasons"])

    refused = run_cli("apply", "-c", config)
    assert refused.code == 1 and len(refused.error_lines) == 1, refused.err
    assert "kubectl-create" in refused.error_lines[0] and "--force-conflicts" in refused.err
    assert "airtrust: warning: backed up the old data" in refused.err
    old = base64.b64encode(other.read_bytes()).decode()
    assert secrets(tidy_cluster)[("runai", "runai-ca-cert")]["data"]["runai-ca.pem"] == old
    if mode == "secret":
        backups = [
            s
            for (ns, name), s in secrets(tidy_cluster).items()
            if ns == "runai" and name.startswith("runai-ca-cert-backup-")
        ]
        assert len(backups) == 1 and backups[0]["data"]["runai-ca.pem"] == old
    else:
        files = list((tmp_path / "backups").rglob("*.yaml"))
        assert len(files) == 1 and stat.S_IMODE(files[0].stat().st_mode) == 0o600
        assert yaml.safe_load(files[0].read_text())["data"]["runai-ca.pem"] == old

    forced = run_cli("apply", "-c", config, "--force-conflicts")
    assert forced.code == 0, forced.err
    bundle = base64.b64encode((pki / "ca-bundle.pem").read_bytes()).decode()
    assert secrets(tidy_cluster)[("runai", "runai-ca-cert")]["data"]["runai-ca.pem"] == bundle
    assert run_cli("plan", "-c", config, "--exit-code").code == 0


def test_rbac_preflight_lists_missing_permissions_and_changes_nothing(
    cluster: KubeCluster, pki: Path, tmp_path: Path
) -> None:
    bob = cluster.user("bob")
    config = write_config(
        tmp_path, pki, bob, control_plane={"context": "bob"}, clusters=[{"context": "bob"}]
    )
    before = {n["metadata"]["name"] for n in cluster.get("namespaces")["items"]}
    result = run_cli("apply", "-c", config)
    assert_one_line_error(result, 3, "[forbidden]", "get namespaces", "get secrets in runai")
    # Read rights only: now the write permissions are what is missing.
    cluster.kubectl(
        "create", "clusterrole", "airtrust-read", "--verb=get,list", "--resource=namespaces,secrets"
    )
    cluster.kubectl(
        "create", "clusterrolebinding", "bob-read", "--clusterrole=airtrust-read", "--user=bob"
    )
    second = run_cli("apply", "-c", config)
    assert_one_line_error(
        second, 3, "create namespaces", "create secrets in runai", "patch secrets in runai-backend"
    )
    assert {n["metadata"]["name"] for n in cluster.get("namespaces")["items"]} == before
    assert not any(ns.startswith("runai") for ns, _ in secrets(cluster))


def test_openshift_group_adds_monitoring_copy(
    cluster: KubeCluster, pki: Path, tmp_path: Path
) -> None:
    cluster.install_crd("openshift-clusterversion.yaml")
    cluster.kubectl("create", "namespace", "openshift-monitoring")
    config = write_config(tmp_path, pki, cluster.kubeconfig)
    assert run_cli("apply", "-c", config).code == 0
    live = secrets(cluster)
    assert ("openshift-monitoring", "runai-ca-cert") in live
    assert ("runai-backend", "runai-backend-tls") not in live  # the router's certificate rules
    forced_off = write_config(
        tmp_path, pki, cluster.kubeconfig, clusters=[{"context": "admin", "openshift": False}]
    )
    plan = json.loads(run_cli("plan", "-c", forced_off, "-o", "json").out)
    assert not any(c["namespace"] == "openshift-monitoring" for c in plan["changes"])


def _helm() -> str:
    helm = CACHE / "bin" / "helm"
    if not helm.exists():
        pytest.fail("helm is missing; run scripts/build-testbins (scripts/test does)")
    return str(helm)


def test_helm_release_reader_and_run(tidy_cluster: KubeCluster, pki: Path, tmp_path: Path) -> None:
    kube = ["--kubeconfig", str(tidy_cluster.kubeconfig), "--kube-context", "admin"]
    subprocess.run(
        [
            _helm(),
            "install",
            "runai-backend",
            str(DATA / "charts" / "control-plane"),
            "-n",
            "runai-backend",
            "--create-namespace",
            *kube,
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            _helm(),
            "install",
            "runai-cluster",
            str(DATA / "charts" / "runai-cluster"),
            "-n",
            "runai",
            "--create-namespace",
            "--set",
            "global.customCA.enabled=true",
            *kube,
        ],
        check=True,
        capture_output=True,
    )
    config = write_config(tmp_path, pki, tidy_cluster.kubeconfig)
    shown = run_cli("helm", "-c", config, "-o", "json", "--out", tmp_path / "values")
    assert shown.code == 0, shown.err
    releases = {r["release"]: r for r in json.loads(shown.out)["releases"]}
    assert releases["runai-backend"]["enabled"] is False
    assert releases["runai-backend"]["installed"].startswith("control-plane-2.20.0")
    assert releases["runai-cluster"]["enabled"] is True
    assert "--set global.customCA.enabled=true" in releases["runai-backend"]["command"]
    fragment = yaml.safe_load(
        (tmp_path / "values" / "admin" / "runai-backend.values.yaml").read_text()
    )
    assert fragment == {"global": {"customCA": {"enabled": True}}}

    archive_dir = tmp_path / "charts"
    archive_dir.mkdir()
    for chart in ("control-plane", "runai-cluster"):
        subprocess.run(
            [_helm(), "package", str(DATA / "charts" / chart), "-d", str(archive_dir)],
            check=True,
            capture_output=True,
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        )
    env_path = f"{CACHE / 'bin'}:/usr/bin:/bin"
    ran = run_cli(
        "helm",
        "-c",
        config,
        "--run",
        "-o",
        "json",
        "--chart",
        f"control-plane={archive_dir / 'control-plane-2.20.0.tgz'}",
        "--chart",
        f"runai-cluster={archive_dir / 'runai-cluster-2.20.0.tgz'}",
        env={"PATH": env_path, "HOME": str(tmp_path)},
    )
    assert ran.code == 0, ran.err
    after = {r["release"]: r for r in json.loads(ran.out)["releases"]}
    assert after["runai-backend"]["enabled"] is True
    cm = tidy_cluster.get("configmap", "runai-backend-values", "-n", "runai-backend")
    assert cm["data"]["customCA"] == "true"


def test_render_applied_by_kubectl_equals_apply(
    tidy_cluster: KubeCluster, pki: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path, pki, tidy_cluster.kubeconfig)
    rendered = run_cli("render", "-c", config, "--out", tmp_path / "out", "--with-namespaces")
    assert rendered.code == 0, rendered.err
    folder = tmp_path / "out" / "admin"
    namespaces = [yaml.safe_load(p.read_text()) for p in folder.glob("*-namespace-*.yaml")]
    assert sorted(n["metadata"]["name"] for n in namespaces) == ["runai", "runai-backend"]
    for ns in namespaces:
        assert ns["metadata"]["annotations"] == {
            "argocd.argoproj.io/sync-options": "Prune=false,Delete=false",
            "kustomize.toolkit.fluxcd.io/prune": "disabled",
        }
    tls_files = [p for p in folder.iterdir() if "runai-backend-tls" in p.name]
    assert len(tls_files) == 1 and stat.S_IMODE(tls_files[0].stat().st_mode) == 0o600
    assert (tmp_path / "out" / "helm" / "commands.sh").read_text().count(
        "customCA.enabled=true"
    ) == 2
    # Researcher authentication: the apiserver flags and a kubeconfig kubectl accepts.
    flags = (tmp_path / "out" / "oidc" / "kube-apiserver-flags.txt").read_text()
    assert f"--oidc-issuer-url=https://{DOMAIN}/auth/realms/runai" in flags
    assert "--oidc-ca-file=" in flags
    user_kubeconfig = tmp_path / "out" / "oidc" / "kubeconfig-user.yaml"
    viewed = tidy_cluster.kubectl(
        "config", "view", "--raw", "-o", "json", kubeconfig=user_kubeconfig
    ).stdout
    provider = json.loads(viewed)["users"][0]["user"]["auth-provider"]["config"]
    assert (
        base64.b64decode(provider["idp-certificate-authority-data"])
        == (pki / "ca-bundle.pem").read_bytes()
    )
    tidy_cluster.kubectl("apply", "--server-side", "--field-manager=airtrust", "-k", folder)
    # What kubectl stored from the rendered files is exactly what apply wants.
    plan = run_cli("plan", "-c", config, "--exit-code", "-o", "json")
    assert plan.code == 0, plan.out
    before = versions(tidy_cluster)
    assert json.loads(run_cli("apply", "-c", config, "-o", "json").out)["writes"] == 0
    assert versions(tidy_cluster) == before
    offline = run_cli(
        "render", "-c", config, "--out", tmp_path / "offline", "--offline", "--with-namespaces"
    )
    assert offline.code == 0, offline.err
    for path in folder.iterdir():
        assert (tmp_path / "offline" / "admin" / path.name).read_bytes() == path.read_bytes()


def test_render_never_writes_system_namespaces(
    tidy_cluster: KubeCluster, pki: Path, tmp_path: Path
) -> None:
    """An Argo CD or Flux prune of the rendered app must not be able to delete
    openshift-monitoring or knative-serving (or, by default, any namespace)."""
    config = write_config(
        tmp_path,
        pki,
        tidy_cluster.kubeconfig,
        issue_from=str(pki),
        clusters=[
            {
                "context": "admin",
                "openshift": True,
                "domain": "gpu1.example.test",
                "inference_domain": "runai-inference.gpu1.example.test",
            }
        ],
    )
    for flags in ([], ["--with-namespaces"]):
        out = tmp_path / ("out" + "".join(flags))
        rendered = run_cli("render", "-c", config, "--out", out, *flags)
        assert rendered.code == 0, rendered.err
        docs = [yaml.safe_load(p.read_text()) for p in (out / "admin").glob("0*.yaml")]
        kinds = {(d["kind"], d["metadata"].get("namespace")) for d in docs}
        assert ("Secret", "openshift-monitoring") in kinds
        assert ("Secret", "knative-serving") in kinds
        names = {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"}
        assert names == (set() if not flags else {"runai", "runai-backend"}), names
        for doc in docs:
            assert doc["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "airtrust", doc


RUNAI_CONFIG = {
    "apiVersion": "run.ai/v1",
    "kind": "RunaiConfig",
    "metadata": {"name": "runai", "namespace": "runai"},
    "spec": {
        "global": {"image": {"registry": "registry.local:5000"}},
        "s3": {"sidecar": {"image": "registry.local:5000/run-ai-prod/goofys:master"}},
        "workloads": [
            {"name": "git", "containers": [{"image": "registry.k8s.io/git-sync/git-sync:v4.4.0"}]},
            {"name": "pause", "containers": [{"image": "registry.k8s.io/pause:3.9"}]},
        ],
        "notes": "goofys and git-sync are sidecars",
    },
}


def test_cluster_config_sidecar_images_are_patched_exactly(
    cluster: KubeCluster, pki: Path, tmp_path: Path
) -> None:
    cluster.install_crd("runaiconfig.yaml")
    cluster.kubectl("create", "namespace", "runai")
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(RUNAI_CONFIG).encode())
    new_s3 = "127.0.0.1:5000/runai/goofys:master-ca-1a2b3c"
    new_git = "127.0.0.1:5000/runai/git-sync:v4.4.0-ca-1a2b3c"
    config = write_config(
        tmp_path,
        pki,
        cluster.kubeconfig,
        images={
            "references": {
                "gcr.io/run-ai-prod/goofys": new_s3,
                "registry.k8s.io/git-sync/git-sync": new_git,
            }
        },
    )
    plan = json.loads(run_cli("plan", "-c", config, "-o", "json").out)
    patch = next(c for c in plan["changes"] if c["kind"] == "RunaiConfig")
    assert patch["action"] == "update" and len(patch["reasons"]) == 2
    assert run_cli("apply", "-c", config).code == 0
    spec = cluster.get("runaiconfig", "runai", "-n", "runai")["spec"]
    expected = json.loads(json.dumps(RUNAI_CONFIG["spec"]))
    expected["s3"]["sidecar"]["image"] = new_s3
    expected["workloads"][0]["containers"][0]["image"] = new_git
    assert spec == expected
    again = json.loads(run_cli("plan", "-c", config, "-o", "json").out)
    assert next(c for c in again["changes"] if c["kind"] == "RunaiConfig")["action"] == "unchanged"


def test_pinned_image_paths(cluster: KubeCluster, pki: Path, tmp_path: Path) -> None:
    cluster.install_crd("runaiconfig.yaml")
    cluster.kubectl("create", "namespace", "runai")
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(RUNAI_CONFIG).encode())
    config = write_config(
        tmp_path,
        pki,
        cluster.kubeconfig,
        images={
            "references": {
                "gcr.io/run-ai-prod/goofys": "127.0.0.1:5000/goofys:x",
                "registry.k8s.io/git-sync/git-sync": "127.0.0.1:5000/git-sync:x",
            }
        },
        cluster_config={"image_paths": ["/spec/s3/sidecar/image"]},
    )
    assert run_cli("apply", "-c", config).code == 0
    spec = cluster.get("runaiconfig", "runai", "-n", "runai")["spec"]
    assert spec["s3"]["sidecar"]["image"] == "127.0.0.1:5000/goofys:x"
    assert spec["workloads"][0]["containers"][0]["image"].startswith("registry.k8s.io/git-sync")


def test_control_plane_and_gpu_clusters_on_separate_apiservers(
    cluster: KubeCluster, second_cluster: KubeCluster, pki: Path, tmp_path: Path
) -> None:
    kubeconfig = merged_kubeconfig(tmp_path / "kubeconfig", {"cp": cluster, "gpu1": second_cluster})
    second_cluster.kubectl("create", "namespace", "team-a")
    second_cluster.kubectl("label", "namespace", "team-a", "airtrust.io/ca=true")
    second_cluster.kubectl("create", "namespace", "team-b")
    config = write_config(
        tmp_path,
        pki,
        kubeconfig,
        control_plane={"context": "cp"},
        clusters=[{"context": "gpu1"}],
        workloads={"namespaces": ["team-c"], "selector": "airtrust.io/ca=true"},
    )
    result = run_cli("apply", "-c", config, "-o", "json")
    assert result.code == 0, result.err
    cp, gpu = set(secrets(cluster)), set(secrets(second_cluster))
    assert cp == {("runai-backend", "runai-ca-cert"), ("runai-backend", "runai-backend-tls")}
    assert gpu == {
        ("runai", "runai-ca-cert"),
        ("team-a", "runai-ca-cert"),
        ("team-c", "runai-ca-cert"),
    }


def test_quickstart_with_context_then_plan_is_clean(
    tidy_cluster: KubeCluster, tmp_path: Path
) -> None:
    out = tmp_path / "qs"
    args = ["quickstart", "--domain", DOMAIN, "--out", out, "--context", "admin"]
    args += ["--kubeconfig", tidy_cluster.kubeconfig, "-o", "json"]
    first = run_cli(*args)
    assert first.code == 0, first.err
    assert (out / "airtrust.yaml").exists()
    assert json.loads(first.out)["apply"]["writes"] == 5
    plan = run_cli("plan", "-c", out / "airtrust.yaml", "--exit-code")
    assert plan.code == 0, plan.out + plan.err
    second = run_cli(*args)
    assert json.loads(second.out)["apply"]["writes"] == 0


def test_bad_config_and_unknown_context(tmp_path: Path, pki: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("domain: x.example.com\nca: {bundle: []}\ncontrol_plane: {context: a}\n")
    assert_one_line_error(run_cli("plan", "-c", bad), 2, "ca.bundle", "[bad-config]")
    bad.write_text("domain: [unclosed\n")
    assert_one_line_error(run_cli("plan", "-c", bad), 2, "not valid YAML")
    bad.write_text(
        yaml.safe_dump(
            {
                "domain": DOMAIN,
                "ca": {"bundle": [str(pki / "ca-bundle.pem")]},
                "control_plane": {"context": "nope"},
                "kubeconfig": str(tmp_path / "missing"),
            }
        )
    )
    assert_one_line_error(run_cli("plan", "-c", bad), 2, "kubeconfig", "does not exist")
    assert_one_line_error(run_cli("plan", "-c", tmp_path / "none.yaml"), 2, "airtrust init")


def test_init_writes_a_valid_commented_config(tmp_path: Path) -> None:
    out = tmp_path / "airtrust.yaml"
    result = run_cli(
        "init", "--domain", DOMAIN, "--context", "cp", "--cluster-context", "gpu1", "--out", out
    )
    assert result.code == 0, result.err
    text = out.read_text()
    assert text.count("#") > 10 and "context: gpu1" in text
    assert run_cli("init", "--domain", DOMAIN, "--context", "cp", "--out", out).code == 2


def test_unreachable_cluster_exits_3(tmp_path: Path, pki: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "admin", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "admin",
            }
        )
    )
    config = write_config(tmp_path, pki, kubeconfig)
    assert_one_line_error(
        run_cli("plan", "-c", config), 3, "context 'admin'", "[cluster-unreachable]"
    )


def test_cluster_tls_secrets_issued_then_reused(
    tidy_cluster: KubeCluster, pki: Path, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path,
        pki,
        tidy_cluster.kubeconfig,
        issue_from=str(pki),
        clusters=[
            {
                "context": "admin",
                "domain": "gpu1.example.test",
                "inference_domain": "runai-inference.example.test",
            }
        ],
    )
    first = run_cli("apply", "-c", config, "-o", "json")
    assert first.code == 0, first.err
    live = secrets(tidy_cluster)
    expected = {
        ("runai", "runai-cluster-domain-tls-secret"): "gpu1.example.test",
        ("runai", "runai-cluster-domain-star-tls-secret"): "*.gpu1.example.test",
        ("knative-serving", "runai-cluster-inference-tls-secret"): "*.runai-inference.example.test",
    }
    from cryptography import x509 as cx509

    for key, name in expected.items():
        secret = live[key]
        assert secret["type"] == "kubernetes.io/tls"
        leaf = cx509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
        san = leaf.extensions.get_extension_for_class(cx509.SubjectAlternativeName).value
        assert san.get_values_for_type(cx509.DNSName) == [name]
    before = versions(tidy_cluster)
    again = run_cli("apply", "-c", config, "-o", "json")
    assert json.loads(again.out)["writes"] == 0, again.out
    assert versions(tidy_cluster) == before
    no_ca = write_config(
        tmp_path,
        pki,
        tidy_cluster.kubeconfig,
        clusters=[{"context": "admin", "domain": "gpu2.example.test"}],
    )
    assert_one_line_error(run_cli("plan", "-c", no_ca), 2, "issue_from")


def test_parallel_applies_under_cpu_load_share_no_connection(
    shared_cluster: KubeCluster,
) -> None:
    """Seen once under load: 'tlsv1 alert decode error' from the apiserver during a parallel
    apply (a TLS record garbled by two threads writing one connection). 32 threads write 300
    secrets three times while two processes hog the CPU; every request must succeed."""
    import subprocess
    import sys

    from airtrust.kube.api import KubeAPI
    from airtrust.plan.manifests import secret_manifest
    from airtrust.usecases.parallel import parallel

    cluster = shared_cluster
    cluster.kubectl("create", "namespace", "stress")
    hogs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import time\nend = time.time() + 120\nwhile time.time() < end: pass",
            ]
        )
        for _ in range(2)
    ]
    api = KubeAPI.connect("admin", kubeconfig=cluster.kubeconfig)
    try:
        for round_ in range(3):
            manifests = [
                secret_manifest(
                    "stress",
                    f"s{i}",
                    secret_type="Opaque",
                    data={"n": f"{round_}-{i}".encode() * 200},
                )
                for i in range(300)
            ]
            applied = parallel(manifests, lambda m: api.apply(m, force=True), workers=32)
            assert len(applied) == 300
        listed = list(api.list_objects("v1", "secrets", "stress"))
        assert len([s for s in listed if s["metadata"]["name"].startswith("s")]) == 300
    finally:
        api.close()
        for hog in hogs:
            hog.kill()
            hog.wait()


def _chart_archive(tmp_path: Path, version: str, new_default: bool = False) -> Path:
    """The test runai-cluster chart packaged at ``version`` (optionally with a new default)."""
    import shutil

    src = tmp_path / f"src-{version}-{new_default}" / "runai-cluster"
    shutil.copytree(DATA / "charts" / "runai-cluster", src, dirs_exist_ok=True)
    meta = yaml.safe_load((src / "Chart.yaml").read_text())
    meta["version"] = version
    (src / "Chart.yaml").write_text(yaml.safe_dump(meta))
    if new_default:
        values = yaml.safe_load((src / "values.yaml").read_text())
        values["newInThisVersion"] = {"enabled": True}
        (src / "values.yaml").write_text(yaml.safe_dump(values))
    out = tmp_path / f"archives-{version}-{new_default}"
    out.mkdir(exist_ok=True)
    subprocess.run(
        [_helm(), "package", str(src), "-d", str(out)],
        check=True,
        capture_output=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    return out / f"runai-cluster-{version}.tgz"


def test_helm_run_keeps_every_user_value(
    tidy_cluster: KubeCluster, pki: Path, tmp_path: Path
) -> None:
    """The release's own values (URL, uid, client secret) survive enabling the custom CA,
    with the same chart version and with a newer chart; helm itself is the judge."""
    kube = ["--kubeconfig", str(tidy_cluster.kubeconfig), "--kube-context", "admin"]
    user = {
        "controlPlane": {"url": "https://cp.example.test", "clientSecret": "s3cr3t-value"},
        "cluster": {"uid": "4f1c-uid", "url": "https://gpu1.example.test"},
    }
    (tmp_path / "user.yaml").write_text(yaml.safe_dump(user))
    subprocess.run(
        [
            _helm(),
            "install",
            "runai-cluster",
            str(_chart_archive(tmp_path, "2.20.0")),
            "-n",
            "runai",
            "--create-namespace",
            "-f",
            str(tmp_path / "user.yaml"),
            *kube,
        ],
        check=True,
        capture_output=True,
    )
    config = write_config(tmp_path, pki, tidy_cluster.kubeconfig)
    env = {"PATH": f"{CACHE / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}

    def helm_json(*args: str) -> Any:
        proc = subprocess.run(
            [_helm(), *args, "-o", "json", *kube], check=True, capture_output=True, text=True
        )
        return json.loads(proc.stdout)

    shown = json.loads(run_cli("helm", "-c", config, "-o", "json").out)
    step = next(r for r in shown["releases"] if r["release"] == "runai-cluster")
    assert "--reuse-values" in step["command"] and "--version 2.20.0" in step["command"]
    assert "runai/runai-cluster" in step["command"]
    assert "s3cr3t" not in json.dumps(shown)
    missing = next(r for r in shown["releases"] if r["release"] == "runai-backend")
    assert missing["installed"] is None and "global.domain" in missing["note"]
    assert "--version '~2.20.0'" in missing["command"]

    same = run_cli(
        "helm",
        "-c",
        config,
        "--run",
        "-o",
        "json",
        "--chart",
        f"runai-cluster={_chart_archive(tmp_path, '2.20.0')}",
        env=env,
    )
    assert same.code == 0, same.err
    assert "s3cr3t" not in same.out + same.err
    ran = next(r for r in json.loads(same.out)["ran"] if r["release"] == "runai-cluster")
    assert ran["path"] == "reuse-values" and ran["values_lost"] == []
    assert helm_json("get", "values", "runai-cluster", "-n", "runai") == {
        **user,
        "global": {"customCA": {"enabled": True}},
    }
    assert helm_json("list", "-n", "runai")[0]["chart"] == "runai-cluster-2.20.0"

    newer = _chart_archive(tmp_path, "2.21.0", new_default=True)
    upgraded = run_cli(
        "helm", "-c", config, "--run", "-o", "json", "--chart", f"runai-cluster={newer}", env=env
    )
    assert upgraded.code == 0, upgraded.err
    ran = next(r for r in json.loads(upgraded.out)["ran"] if r["release"] == "runai-cluster")
    assert ran["path"] == "saved values (-f)" and ran["values_lost"] == []
    assert ran["chart_version"] == "2.20.0 -> 2.21.0"
    assert helm_json("get", "values", "runai-cluster", "-n", "runai") == {
        **user,
        "global": {"customCA": {"enabled": True}},
    }
    effective = helm_json("get", "values", "runai-cluster", "-n", "runai", "--all")
    assert effective["newInThisVersion"] == {"enabled": True}  # the new chart's default
    assert helm_json("list", "-n", "runai")[0]["chart"] == "runai-cluster-2.21.0"
    # Nothing secret was left behind by the saved-values path.
    assert not list(tmp_path.glob("**/runai-tidy_cluster.values.yaml"))


def _runai_objects(cluster: KubeCluster) -> dict[tuple[str, str], tuple[Any, ...]]:
    """The documented objects as a judge compares them: type, data, Run:ai's labels."""
    out = {}
    for (ns, name), secret in secrets(cluster).items():
        if ns in ("runai", "runai-backend") and name.startswith("runai-"):
            labels = {
                k: v
                for k, v in (secret["metadata"].get("labels") or {}).items()
                if k.startswith("run.ai/")
            }
            out[(ns, name)] = (secret["type"], secret["data"], labels)
    return out


def test_next_steps_run_line_by_line_give_what_apply_gives(
    tidy_cluster: KubeCluster, second_cluster: KubeCluster, tmp_path: Path
) -> None:
    folder = tmp_path / "qs"
    shown = run_cli(
        "quickstart",
        "--domain",
        DOMAIN,
        "--out",
        folder,
        "--shell",
        tmp_path / "steps.sh",
        env={"COLUMNS": "80"},
    )
    assert shown.code == 0, shown.err
    listed = json.loads(
        run_cli("quickstart", "--domain", DOMAIN, "--out", folder, "-o", "json").out
    )
    steps = listed["next_steps"]
    printed = shown.out.split("Next steps (one command per line):\n", 1)[1].splitlines()
    # Every command is printed whole on its own line, however narrow the terminal.
    for step in steps:
        assert step["command"] in printed, step["command"]
    assert any(len(line) > 80 for line in printed)
    assert "run.ai/cluster-wide=true" in shown.out and "openshift-monitoring" in shown.out
    env = {
        "PATH": f"{CACHE / 'bin'}:/usr/bin:/bin",
        "KUBECONFIG": str(tidy_cluster.kubeconfig),
        "HOME": str(tmp_path),
    }
    for step in steps:
        if step["when"] in ("always", "kubernetes") and step["command"].startswith("kubectl"):
            ran = subprocess.run(
                ["sh", "-c", step["command"]], env=env, capture_output=True, text=True, check=False
            )
            assert ran.returncode == 0, (step["command"], ran.stderr)
    config = write_config(tmp_path, folder, second_cluster.kubeconfig)
    assert run_cli("apply", "-c", config).code == 0
    by_hand, by_airtrust = _runai_objects(tidy_cluster), _runai_objects(second_cluster)
    assert set(by_hand) == {
        ("runai-backend", "runai-ca-cert"),
        ("runai-backend", "runai-backend-tls"),
        ("runai", "runai-ca-cert"),
    }
    assert by_hand == by_airtrust
    # The script form does the same on a third, fresh tidy_cluster (not OpenShift: the TLS
    # secret is created, openshift-monitoring is not touched).
    with started_cluster(tmp_path / "third") as third:
        script = subprocess.run(
            ["sh", str(tmp_path / "steps.sh")],
            env={**env, "KUBECONFIG": str(third.kubeconfig)},
            capture_output=True,
            text=True,
            check=False,
        )
        assert script.returncode == 0, script.stderr
        assert _runai_objects(third) == by_airtrust
        assert not third.exists("namespace", "openshift-monitoring")


def test_preflight_asks_only_for_what_the_roles_need(
    shared_cluster: KubeCluster, pki: Path, tmp_path: Path
) -> None:
    """A control-plane-only context is never asked for rights in the cluster namespaces
    (runai, knative-serving): only what its role reads and writes."""
    import re

    cluster = shared_cluster
    carol = cluster.user("carol")
    config = write_config(
        tmp_path,
        pki,
        carol,
        control_plane={"context": "carol"},
        clusters=[],
        issue_from=str(pki),
    )
    result = run_cli("apply", "-c", config)
    assert_one_line_error(result, 3, "[forbidden]", "get secrets in runai-backend")
    assert "knative-serving" not in result.err
    assert not re.search(r"in runai(?![-\w])", result.err), result.err


def test_sidecar_fields_not_found_absent_or_offline_are_told_never_exit_70(
    cluster: KubeCluster, pki: Path, tmp_path: Path
) -> None:
    cluster.install_crd("runaiconfig.yaml")
    cluster.kubectl("create", "namespace", "runai")
    empty = {**RUNAI_CONFIG, "spec": {}}
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(empty).encode())
    references = {
        "gcr.io/run-ai-prod/goofys": "127.0.0.1:5000/goofys:x",
        "registry.k8s.io/git-sync/git-sync": "127.0.0.1:5000/git-sync:x",
    }
    config = write_config(tmp_path, pki, cluster.kubeconfig, images={"references": references})
    # 1. An empty spec: a finding with the fix, not "unchanged".
    plan = run_cli("plan", "-c", config, "-o", "json")
    assert plan.code == 0, plan.err
    warnings = json.loads(plan.out)["warnings"]
    assert any("names no S3/Git sidecar image" in w and "image_paths" in w for w in warnings)
    table = run_cli("plan", "-c", config)
    assert "image_paths" in table.out and table.code == 0
    # 2. A pinned path that does not exist and names no sidecar: told, never exit 70.
    for sub in ("list", "named"):
        (tmp_path / sub).mkdir()
    pinned_list = write_config(
        tmp_path / "list",
        pki,
        cluster.kubeconfig,
        images={"references": references},
        cluster_config={"image_paths": ["/spec/s3/sidecar/image"]},
    )
    for command in ("plan", "apply"):
        result = run_cli(command, "-c", pinned_list, "-o", "json")
        assert result.code == 0 and "internal error" not in result.err, result.err
        assert "/spec/s3/sidecar/image does not exist" in result.out + result.err, result.out
    # 3. Pinned with its sidecar: the field is added, parents created; kubectl is the judge.
    pinned = write_config(
        tmp_path / "named",
        pki,
        cluster.kubeconfig,
        images={"references": references},
        cluster_config={
            "image_paths": {"/spec/s3/sidecar/image": "s3", "/spec/gitSync/image": "git"}
        },
    )
    assert run_cli("apply", "-c", pinned).code == 0
    spec = cluster.get("runaiconfig", "runai", "-n", "runai")["spec"]
    assert spec == {
        "s3": {"sidecar": {"image": "127.0.0.1:5000/goofys:x"}},
        "gitSync": {"image": "127.0.0.1:5000/git-sync:x"},
    }
    again = json.loads(run_cli("plan", "-c", pinned, "-o", "json").out)
    change = next(c for c in again["changes"] if c["kind"] == "RunaiConfig")
    assert change["action"] == "unchanged" and again["warnings"] == []
    # 4. render --offline: the same fields from the named pins, or why it cannot.
    offline = run_cli("render", "-c", pinned, "--offline", "--out", tmp_path / "r1", "-o", "json")
    assert offline.code == 0, offline.err
    ops = json.loads((tmp_path / "r1" / "admin" / "image-patches.json").read_text())[0]["patch"]
    assert {(o["op"], o["path"], o["value"]) for o in ops} == {
        ("add", "/spec/s3/sidecar/image", "127.0.0.1:5000/goofys:x"),
        ("add", "/spec/gitSync/image", "127.0.0.1:5000/git-sync:x"),
    }
    unpinned = run_cli("render", "-c", config, "--offline", "--out", tmp_path / "r2")
    assert unpinned.code == 0, unpinned.err
    assert "render --offline cannot find the sidecar image fields" in unpinned.err
    assert not (tmp_path / "r2" / "admin" / "image-patches.json").exists()
