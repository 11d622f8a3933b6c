"""airtrust across the air gap: the offline bundle and the controller image, no Docker.

The bundle is built by scripts/release (the connected side: it downloads wheels
from the package index), then installed and run in a network namespace with
no network at all. The controller image is built from a Debian bookworm base
with python3 in a real registry, unpacked by skopeo + umoci and run in a chroot
as its config says, against a real apiserver.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli
from tests.integration.conftest import require, wait_for
from tests.integration.gitsync import prepare_runtime
from tests.integration.kube import KubeCluster
from tests.integration.registry import (
    Registry,
    crane,
    debian_rootfs,
    make_tar,
    push_tar,
    started_registry,
    unpack,
)

pytestmark = pytest.mark.integration


def _release(out: Path, *extra: str) -> Path:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "release"), str(out), *extra],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"scripts/release failed: {proc.stderr[-2000:] or proc.stdout[-2000:]}")
    (bundle,) = out.glob("airtrust-offline-*.tar.gz")
    return bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default offline bundle (linux x86_64 + aarch64, CPython 3.11-3.13), unpacked."""
    out = tmp_path_factory.mktemp("release")
    archive = _release(out / "dist")
    with tarfile.open(archive) as tar:
        tar.extractall(out / "unpacked", filter="data")
    (folder,) = (out / "unpacked").iterdir()
    return folder


def test_offline_bundle_installs_and_runs_with_no_network(bundle: Path, tmp_path: Path) -> None:
    wheels = sorted(p.name for p in (bundle / "wheels").iterdir())
    for arch in ("x86_64", "aarch64"):
        for py in ("cp311", "cp312", "cp313"):
            assert any("pydantic_core" in w and py in w and arch in w for w in wheels), (arch, py)
        assert any(w.startswith("cryptography-") and arch in w for w in wheels), arch
    assert any(w.startswith("airtrust-") for w in wheels)
    sums = subprocess.run(
        ["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=bundle, capture_output=True, text=True
    )
    assert sums.returncode == 0, sums.stdout + sums.stderr
    sbom = json.loads((bundle / "sbom.cdx.json").read_text())
    listed = {c["properties"][0]["value"] for c in sbom["components"]}
    assert listed == set(wheels) and all(c["version"] for c in sbom["components"])
    venv, out = tmp_path / "venv", tmp_path / "qs"
    script = (
        f"{bundle / 'install.sh'} {venv} && {venv / 'bin' / 'airtrust'} --version && "
        f"{venv / 'bin' / 'airtrust'} quickstart --domain runai.example.test --out {out}"
    )
    proc = subprocess.run(
        [require("unshare"), "-n", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=600,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "airtrust " in proc.stdout and (out / "ca-bundle.pem").exists()


def test_two_builds_of_one_commit_are_the_same(bundle: Path, tmp_path: Path) -> None:
    again = _release(tmp_path / "again")
    with tarfile.open(again) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    (second,) = (tmp_path / "unpacked").iterdir()
    ours = [n for n in os.listdir(bundle / "wheels") if n.startswith("airtrust-")]
    for name in ["install.sh", *(f"wheels/{n}" for n in ours)]:
        assert (bundle / name).read_bytes() == (second / name).read_bytes(), name
    # Third-party wheels come from the index as they are; the same versions here.
    assert (bundle / "SHA256SUMS").read_text() == (second / "SHA256SUMS").read_text()


@dataclass
class Built:
    registry: Registry
    base: str
    ref: str
    result: dict[str, object]
    layout: Path


@pytest.fixture(scope="module")
def built(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    folder = tmp_path_factory.mktemp("controller")
    with started_registry(folder / "registry", access_log=True) as registry:
        base = registry.ref("base/debian-python:bookworm")
        push_tar(base, debian_rootfs())
        ref = registry.ref("airtrust/controller:0.1")
        result = run_cli(
            "image", "build-controller", "--base", base, "--to", ref,
            "--wheels", bundle / "wheels", "-o", "json",
        )  # fmt: skip
        assert result.code == 0, result.err
        layout = folder / "controller.oci.tar"
        offline = run_cli(
            "image", "build-controller", "--base", base, "--to", f"oci:{layout}",
            "--wheels", bundle / "wheels", "-o", "json",
        )  # fmt: skip
        assert offline.code == 0, offline.err
        yield Built(registry, base, ref, json.loads(result.out), layout)


def test_controller_image_runs_as_its_config_says_and_converges(
    built: Built, cluster: KubeCluster, tmp_path: Path
) -> None:
    config = json.loads(crane("config", built.ref, "--insecure"))["config"]
    assert config["Entrypoint"] == ["/usr/local/bin/airtrust"] and config["Cmd"] == ["sync"]
    assert config["User"] == "65532:65532"
    labels = json.loads(
        subprocess.run(
            [require("skopeo"), "inspect", "--tls-verify=false", f"docker://{built.ref}"],
            capture_output=True, text=True, check=True,
        ).stdout
    )["Labels"]  # fmt: skip
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert labels["org.opencontainers.image.revision"]
    assert labels["org.opencontainers.image.source"] == "airtrust"
    rootfs = unpack(built.ref, tmp_path / "controller")
    prepare_runtime(rootfs)
    shutil.copy(cluster.kubeconfig, rootfs / "kubeconfig")  # "mounted as a file"
    (rootfs / "kubeconfig").chmod(0o644)
    for ns in ("airtrust-system", "runai", "team-a"):
        cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("label", "namespace", "team-a", "airtrust.io/ca=true")
    pem = (ROOT / "tests" / "data" / "bad-input" / "ok-two-cas.pem").read_bytes()
    cluster.kubectl(
        "-n", "airtrust-system", "create", "secret", "generic", "local-ca",
        "--from-file=runai-ca.pem=/dev/stdin", stdin=pem,
    )  # fmt: skip
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    env.update(dict(item.split("=", 1) for item in config.get("Env") or []))
    args = [
        "--kubeconfig", "/kubeconfig", "--source", "secret/airtrust-system/local-ca",
        "--selector", "airtrust.io/ca=true", "--once",
    ]  # fmt: skip
    proc = subprocess.run(
        [require("chroot"), f"--userspec={config['User']}", str(rootfs),
         *config["Entrypoint"], *config["Cmd"], *args],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    for ns in ("runai", "team-a"):
        secret = cluster.get("secret", "runai-ca-cert", "-n", ns)
        assert secret["data"]["runai-ca.pem"], ns
    # The same as airtrust sync on the host writes: a second host pass changes nothing.
    host = run_cli(
        "sync", "--kubeconfig", cluster.kubeconfig, "--source",
        "secret/airtrust-system/local-ca", "--selector", "airtrust.io/ca=true", "--once",
    )  # fmt: skip
    assert host.code == 0 and "0 object(s) written" in host.err, host.err


def test_second_build_uploads_nothing_and_the_layout_pushes_the_same_digest(
    built: Built, bundle: Path
) -> None:
    tag = ("PUT", "/v2/airtrust/controller/manifests/0.1")
    assert tag in built.registry.requests()  # the judge saw the first build's push
    tags, uploads = built.registry.requests().count(tag), len(built.registry.blob_uploads())
    again = run_cli(
        "image", "build-controller", "--base", built.base, "--to", built.ref,
        "--wheels", bundle / "wheels", "-o", "json",
    )  # fmt: skip
    assert again.code == 0, again.err
    second = json.loads(again.out)
    assert second["digest"] == built.result["digest"]
    assert second["blobs_uploaded"] == 0
    # The registry's own log, up to the second build's tag: no blob upload started.
    wait_for(
        "the registry to log the second build's tag",
        lambda: built.registry.requests().count(tag) > tags,
    )
    assert built.registry.blob_uploads()[uploads:] == []
    pushed = run_cli(
        "image", "push", f"oci:{built.layout}", built.registry.ref("carried/controller:0.1"),
        "-o", "json",
    )  # fmt: skip
    assert pushed.code == 0, pushed.err
    assert json.loads(pushed.out)["digest"] == built.result["digest"]
    assert (
        crane("digest", built.registry.ref("carried/controller:0.1"), "--insecure")
        == (built.result["digest"])
    )


@pytest.mark.parametrize(
    ("layout", "needle", "reference"),
    [
        ({"etc": "dir", "etc/os-release": "ID=debian\n"}, "has no Python", "base-without-python"),
        (
            {"usr": "dir", "usr/bin": "dir", "usr/bin/python3.9": "\x7fELF",
             "usr/bin/python3": ("symlink", "python3.9")},
            "has Python 3.9",
            "base-python-too-old",
        ),
    ],
)  # fmt: skip
def test_bases_without_a_usable_python_are_refused(
    built: Built,
    bundle: Path,
    tmp_path: Path,
    layout: dict[str, object],
    needle: str,
    reference: str,
) -> None:
    base = built.registry.ref(f"bad/{reference}:1")
    push_tar(base, make_tar(tmp_path / "l.tar", layout))  # type: ignore[arg-type]
    dest = built.registry.ref(f"never/{reference}:1")
    result = run_cli(
        "image", "build-controller", "--base", base, "--to", dest, "--wheels", bundle / "wheels"
    )
    assert result.code == 2 and needle in result.err and f"[{reference}]" in result.err
    assert len(result.err.strip().splitlines()) == 1, result.err
    # Nothing may be pushed for a refused base: the registry's log has no request for
    # the destination at all, and the registry knows no manifest by that name.
    repository = f"/v2/never/{reference}/"
    assert [r for r in built.registry.requests() if r[1].startswith(repository)] == []
    from tests.integration.registry import CRANE

    asked = subprocess.run(
        [str(CRANE), "manifest", dest, "--insecure"], capture_output=True, text=True, check=False
    )
    assert asked.returncode != 0 and "MANIFEST_UNKNOWN" in asked.stderr, asked.stderr


def test_an_index_base_gives_an_index_with_each_platforms_wheels(
    built: Built, bundle: Path, tmp_path: Path
) -> None:
    """amd64 and arm64 entries of one base index: each gets the wheels of its platform."""
    amd, arm = built.registry.ref("multi/python:amd64"), built.registry.ref("multi/python:arm64")
    push_tar(amd, debian_rootfs(), platform="linux/amd64")
    push_tar(arm, debian_rootfs(), platform="linux/arm64")
    index = built.registry.ref("multi/python:bookworm")
    crane("index", "append", "-m", amd, "-m", arm, "-t", index, "--insecure")
    dest = built.registry.ref("multi/controller:0.1")
    result = run_cli(
        "image", "build-controller", "--base", index, "--to", dest,
        "--wheels", bundle / "wheels", "-o", "json",
    )  # fmt: skip
    assert result.code == 0, result.err
    manifest = json.loads(crane("manifest", dest, "--insecure"))
    platforms = {m["platform"]["architecture"]: m["digest"] for m in manifest["manifests"]}
    assert set(platforms) == {"amd64", "arm64"}
    machines = {"amd64": 62, "arm64": 183}  # ELF e_machine: x86-64, AArch64
    for arch, digest in platforms.items():
        ref = f"{dest.rsplit(':', 1)[0]}@{digest}"
        layer = json.loads(crane("manifest", ref, "--insecure"))["layers"][-1]["digest"]
        blob = tmp_path / f"{arch}.tar.gz"
        blob.write_bytes(_blob(dest, layer))
        with tarfile.open(blob) as tar:
            (native,) = [m for m in tar.getmembers() if m.name.endswith("_rust.abi3.so")]
            head = tar.extractfile(native).read(20)  # type: ignore[union-attr]
        assert int.from_bytes(head[18:20], "little") == machines[arch], arch


def _blob(ref: str, digest: str) -> bytes:
    from tests.integration.registry import CRANE

    proc = subprocess.run(
        [str(CRANE), "blob", f"{ref.rsplit(':', 1)[0]}@{digest}", "--insecure"],
        capture_output=True,
        check=True,
    )
    return proc.stdout
