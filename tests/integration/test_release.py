"""airtrust across the air gap: the offline bundle and the controller image, no Docker.

The bundle is built by scripts/release (the connected side: it downloads wheels
from the package index), then installed and run in a network namespace with
no network at all. The controller image is built from a Debian bookworm base
with python3 in a real registry, unpacked by skopeo + umoci and run in a chroot
as its config says, against a real apiserver.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, run_cli
from tests.integration.conftest import build_offline_bundle, require, wait_for
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


def test_offline_bundle_installs_and_runs_with_no_network(
    offline_bundle: Path, tmp_path: Path
) -> None:
    wheels = sorted(p.name for p in (offline_bundle / "wheels").iterdir())
    for arch in ("x86_64", "aarch64"):
        for py in ("cp311", "cp312", "cp313"):
            assert any("pydantic_core" in w and py in w and arch in w for w in wheels), (arch, py)
        assert any(w.startswith("cryptography-") and arch in w for w in wheels), arch
    assert any(w.startswith("airtrust-") for w in wheels)
    sums = subprocess.run(
        ["sha256sum", "-c", "--quiet", "SHA256SUMS"],
        cwd=offline_bundle,
        capture_output=True,
        text=True,
    )
    assert sums.returncode == 0, sums.stdout + sums.stderr
    sbom = json.loads((offline_bundle / "sbom.cdx.json").read_text())
    listed = {
        c["properties"][0]["value"] for c in sbom["components"] if c["purl"].startswith("pkg:pypi")
    }
    assert listed == set(wheels) and all(c["version"] for c in sbom["components"])
    venv, out = tmp_path / "venv", tmp_path / "qs"
    script = (
        f"{offline_bundle / 'install.sh'} {venv} && {venv / 'bin' / 'airtrust'} --version && "
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


def test_two_builds_of_one_commit_are_the_same(
    offline_bundle_archive: Path, tmp_path: Path
) -> None:
    """The archive itself, byte for byte: what an admin checks against a published
    checksum. Third-party wheels come from the index as they are (the same versions)."""
    again = build_offline_bundle(tmp_path / "again")
    first, second = (
        hashlib.sha256(p.read_bytes()).hexdigest() for p in (offline_bundle_archive, again)
    )
    assert first == second, _differences(offline_bundle_archive, again)
    # The image inside, as skopeo reads it from each archive's layout tarball.
    digests = []
    for archive in (offline_bundle_archive, again):
        folder = tmp_path / f"open-{len(digests)}"
        with tarfile.open(archive) as tar:
            tar.extractall(folder, filter="data")
        (image,) = folder.glob("*/images/airtrust-*.oci.tar")
        digests.append(_inspect(f"oci-archive:{image}")["Digest"])
    assert digests[0] == digests[1]


def _image(bundle: Path) -> Path:
    (image,) = (bundle / "images").glob("airtrust-*.oci.tar")
    return image


def _inspect(*args: str) -> dict[str, object]:
    proc = subprocess.run(
        [require("skopeo"), "inspect", *args], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    data: dict[str, object] = json.loads(proc.stdout)
    return data


def test_the_bundles_image_is_what_its_sbom_says_and_runs_with_no_network(
    offline_bundle: Path, tmp_path: Path
) -> None:
    """skopeo reads the image's digest and labels from the layout tarball, umoci unpacks
    it, dpkg-query (the host's, pointed at the image's dpkg database) lists its Debian
    packages: the SBOM lists exactly those, and the digest. Its entrypoint runs in a
    chroot as its config's user, in a network namespace with no network."""
    image = _image(offline_bundle)
    inspected = _inspect(f"oci-archive:{image}")
    sbom = json.loads((offline_bundle / "sbom.cdx.json").read_text())
    (container,) = [c for c in sbom["components"] if c["type"] == "container"]
    said = {p["name"]: p["value"] for p in container["properties"]}
    assert inspected["Digest"] == said["digest"] and said["file"] == f"images/{image.name}"
    labels = inspected["Labels"]
    assert isinstance(labels, dict) and labels["org.opencontainers.image.version"] == "0.1.0"
    assert labels["org.opencontainers.image.base.name"] == "oci:debian-bookworm.oci.tar"
    assert inspected["Architecture"] == "amd64" and inspected["Os"] == "linux"
    rootfs = unpack(f"oci-archive:{image}", tmp_path / "image")
    query = subprocess.run(
        ["dpkg-query", f"--admindir={rootfs / 'var/lib/dpkg'}", "-W",
         "-f", "${db:Status-Abbrev} ${Package} ${Version} ${Architecture}\n"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    installed = {line[4:] for line in query.stdout.splitlines() if line.startswith("ii ")}
    debs = {
        f"{c['name']} {c['version']} {c['purl'].split('arch=')[1].split('&')[0]}"
        for c in sbom["components"]
        if c["purl"].startswith("pkg:deb/debian/")
    }
    assert debs == installed
    names = {d.split()[0] for d in debs}
    assert {"python3", "ca-certificates", "libc6"} <= names and "apt" in names
    config = _inspect("--config", f"oci-archive:{image}")["config"]
    assert isinstance(config, dict)
    prepare_runtime(rootfs)
    proc = subprocess.run(
        [require("unshare"), "-n", require("chroot"), f"--userspec={config['User']}",
         str(rootfs), *config["Entrypoint"], "--version"],
        capture_output=True, text=True, timeout=120, check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"},
    )  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.strip() == "airtrust 0.1.0", proc.stderr
    layers = _inspect("--raw", f"oci-archive:{image}")["layers"]
    assert isinstance(layers, list)
    size = sum(int(layer["size"]) for layer in layers)
    unpacked = sum(
        f.stat().st_size for f in rootfs.rglob("*") if f.is_file() and not f.is_symlink()
    )
    print(f"\nbundle image: {len(layers)} layers, {size / 2**20:.1f} MiB compressed, "
          f"{unpacked / 2**20:.1f} MiB unpacked, {len(debs)} Debian packages")  # fmt: skip


def test_the_bundles_chart_is_charts_airtrust(offline_bundle: Path) -> None:
    """helm reads the archive: its Chart.yaml, and the objects it renders, which are the
    objects charts/airtrust renders."""
    from tests.integration.test_chart import CHART, helm

    (archive,) = offline_bundle.glob("airtrust-*.tgz")
    shown = yaml.safe_load(helm("show", "chart", archive).stdout)
    assert shown["name"] == "airtrust" and shown["version"] == shown["appVersion"] == "0.1.0"
    lint = helm("lint", "--strict", archive, check=False)
    assert lint.returncode == 0 and "1 chart(s) linted, 0 chart(s) failed" in lint.stdout
    assert "[WARNING]" not in lint.stdout, lint.stdout
    args = ("template", "airtrust", "-n", "airtrust-system")
    assert helm(*args, archive).stdout == helm(*args, CHART).stdout


def test_an_image_layout_that_is_missing_or_damaged_is_refused_and_pushes_nothing(
    offline_bundle: Path, tmp_path: Path
) -> None:
    """A layout copied wrong: missing, not a tarball, or a blob whose bytes no longer
    match its digest. One line naming the file and the fix; the registry (its own
    log) never saw a manifest for the destination."""
    image = _image(offline_bundle)
    damaged = tmp_path / "damaged.oci.tar"
    with tarfile.open(image) as src, tarfile.open(damaged, "w") as out:
        for member in src:
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.size > 1 << 20:  # a layer: one byte changed near its end
                data = data[:-100] + bytes([data[-100] ^ 1]) + data[-99:]
            out.addfile(member, io.BytesIO(data))
    (tmp_path / "not.oci.tar").write_text("hello\n")
    with started_registry(tmp_path / "registry", access_log=True) as registry:
        dest = registry.ref("carried/airtrust:0.1.0")
        cases = {
            "missing": (tmp_path / "nope.oci.tar", "no such file"),
            "not a tarball": (tmp_path / "not.oci.tar", "is not an OCI layout tarball"),
            "damaged": (damaged, "does not match its digest (the file is damaged)"),
        }
        for what, (path, needle) in cases.items():
            pushed = run_cli("image", "push", f"oci:{path}", dest)
            assert pushed.code == 2 and needle in pushed.err, (what, pushed.err)
            assert str(path) in pushed.err and len(pushed.err.strip().splitlines()) == 1, what
            assert "Traceback" not in pushed.err
        manifests = [r for r in registry.requests() if "/manifests/" in r[1] and r[0] == "PUT"]
        assert manifests == []
    out = tmp_path / "never.oci.tar"
    built = run_cli(
        "image", "build-controller", "--base", f"oci:{damaged}", "--to", f"oci:{out}",
        "--wheels", offline_bundle / "wheels",
    )  # fmt: skip
    assert built.code == 2 and "does not match its digest" in built.err, built.err
    assert not out.exists() and not list(tmp_path.glob(".never.oci.tar*"))


def _differences(first: Path, second: Path) -> str:
    """What differs between two bundle archives, for the failure message: the gzip header,
    each member's header fields and content, and inside airtrust's own wheel (the one
    file built here) each entry's time, mode and CRC."""
    said = []
    heads = [p.read_bytes()[:10] for p in (first, second)]  # RFC 1952: MTIME at bytes 4-7
    if heads[0] != heads[1]:
        said.append(f"gzip header {heads[0].hex()} != {heads[1].hex()}")
    members: list[dict[str, tuple[object, ...]]] = []
    wheels: list[dict[str, tuple[object, ...]]] = []
    for path in (first, second):
        entries: dict[str, tuple[object, ...]] = {}
        with tarfile.open(path) as tar:
            for m in tar.getmembers():
                data = tar.extractfile(m).read() if m.isfile() else b""  # type: ignore[union-attr]
                entries[m.name] = (m.mode, m.uid, m.gid, m.uname, m.gname, m.mtime, m.size,
                                   hashlib.sha256(data).hexdigest()[:12])  # fmt: skip
                if "/wheels/airtrust-" in m.name:
                    with zipfile.ZipFile(io.BytesIO(data)) as wheel:
                        wheels.append({
                            i.filename: (i.date_time, oct(i.external_attr >> 16), i.CRC)
                            for i in wheel.infolist()
                        })  # fmt: skip
        members.append(entries)
    if list(members[0]) != list(members[1]):
        said.append(f"member order or names: {list(members[0])} != {list(members[1])}")
    for name in sorted(set(members[0]) & set(members[1])):
        if members[0][name] != members[1][name]:
            said.append(f"{name}: {members[0][name]} != {members[1][name]}")
    if len(wheels) == 2:
        for name in sorted(set(wheels[0]) | set(wheels[1])):
            if wheels[0].get(name) != wheels[1].get(name):
                said.append(
                    f"  airtrust wheel {name}: {wheels[0].get(name)} != {wheels[1].get(name)}"
                )
    return "the two archives differ:\n" + "\n".join(said or ["(only in the tar stream)"])


@dataclass
class Built:
    registry: Registry
    base: str
    ref: str
    result: dict[str, object]
    layout: Path


@pytest.fixture(scope="module")
def built(offline_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    folder = tmp_path_factory.mktemp("controller")
    with started_registry(folder / "registry", access_log=True) as registry:
        base = registry.ref("base/debian-python:bookworm")
        push_tar(base, debian_rootfs())
        ref = registry.ref("airtrust/controller:0.1")
        result = run_cli(
            "image", "build-controller", "--base", base, "--to", ref,
            "--wheels", offline_bundle / "wheels", "-o", "json",
        )  # fmt: skip
        assert result.code == 0, result.err
        layout = folder / "controller.oci.tar"
        offline = run_cli(
            "image", "build-controller", "--base", base, "--to", f"oci:{layout}",
            "--wheels", offline_bundle / "wheels", "-o", "json",
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
    built: Built, offline_bundle: Path
) -> None:
    tag = ("PUT", "/v2/airtrust/controller/manifests/0.1")
    assert tag in built.registry.requests()  # the judge saw the first build's push
    tags, uploads = built.registry.requests().count(tag), len(built.registry.blob_uploads())
    again = run_cli(
        "image", "build-controller", "--base", built.base, "--to", built.ref,
        "--wheels", offline_bundle / "wheels", "-o", "json",
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
    offline_bundle: Path,
    tmp_path: Path,
    layout: dict[str, object],
    needle: str,
    reference: str,
) -> None:
    base = built.registry.ref(f"bad/{reference}:1")
    push_tar(base, make_tar(tmp_path / "l.tar", layout))  # type: ignore[arg-type]
    dest = built.registry.ref(f"never/{reference}:1")
    result = run_cli(
        "image",
        "build-controller",
        "--base",
        base,
        "--to",
        dest,
        "--wheels",
        offline_bundle / "wheels",
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


@pytest.mark.shared_layer_cache  # reads the module's Debian base again; counts no reads
def test_an_index_base_gives_an_index_with_each_platforms_wheels(
    built: Built, offline_bundle: Path, tmp_path: Path
) -> None:
    """amd64 and arm64 entries of one base index: each gets the wheels of its platform.
    Both entries are the module's Debian base, its config set to each platform by crane
    (the layer is mounted, not pushed again: the base is only read)."""
    amd, arm = built.registry.ref("multi/python:amd64"), built.registry.ref("multi/python:arm64")
    for ref, platform in ((amd, "linux/amd64"), (arm, "linux/arm64")):
        crane("mutate", built.base, "-t", ref, "--set-platform", platform, "--insecure")
    index = built.registry.ref("multi/python:bookworm")
    crane("index", "append", "-m", amd, "-m", arm, "-t", index, "--insecure")
    dest = built.registry.ref("multi/controller:0.1")
    result = run_cli(
        "image", "build-controller", "--base", index, "--to", dest,
        "--wheels", offline_bundle / "wheels", "-o", "json",
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
