"""Image patching against a real registry, judged by real clients inside the images.

Base images are built with real tools (mmdebstrap, crane), pushed to
Debian's docker-registry on 127.0.0.1, patched by airtrust, read back with
skopeo and umoci, and the clients inside the unpacked root filesystems
(curl, git, openssl, python3, a Go program) connect under chroot to a TLS
server whose certificate airtrust issued.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import assert_one_line_error, run_cli
from tests.integration.conftest import (
    TLS_HOST,
    assert_untrusted,
    bare_repository,
    git_https_server,
    require,
    wait_for,
)
from tests.integration.registry import (
    Registry,
    alpine_layout,
    count_certificates,
    crane,
    debian_rootfs,
    gitsync_layout,
    host_bundle,
    make_tar,
    openssl_verifies,
    push_tar,
    push_zstd,
    rhel_layout,
    started_registry,
    unpack,
    unpack_layers,
)

pytestmark = pytest.mark.integration
HOST = TLS_HOST


@pytest.fixture(scope="module")
def tls_server(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    root = tmp_path_factory.mktemp("git")
    bare_repository(root, "airtrust\n")
    with git_https_server(pki / "tls.crt", pki / "tls.key", root) as server:
        yield server.port


def chroot(rootfs: Path, *cmd: str) -> subprocess.CompletedProcess[str]:
    (rootfs / "etc").mkdir(exist_ok=True)
    (rootfs / "etc" / "hosts").write_text(f"127.0.0.1 localhost {HOST}\n")
    return subprocess.run(
        [require("chroot"), str(rootfs), *cmd],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": "/"},
    )


def patch(source: str, dest: str, pki: Path, *extra: str) -> dict[str, object]:
    result = run_cli(
        "image", "patch", source, "--ca", pki / "ca-bundle.pem", "--to", dest, "-o", "json", *extra
    )
    assert result.code == 0, result.err
    data: dict[str, object] = json.loads(result.out)["results"][0]
    return data


@pytest.fixture(scope="module")
def debian_image(registry: Registry) -> str:
    ref = registry.ref("base/debian:bookworm")
    push_tar(ref, debian_rootfs())
    return ref


def test_debian_clients_trust_the_patched_image_only(
    debian_image: str, registry: Registry, pki: Path, tls_server: int, tmp_path: Path
) -> None:
    dest = registry.ref("patched/debian:bookworm-ca")
    result = patch(debian_image, dest, pki)
    assert result["noop"] is False
    inspect = subprocess.run(
        [require("skopeo"), "inspect", "--tls-verify=false", f"docker://{dest}"],
        capture_output=True,
        text=True,
        check=True,
    )
    labels = json.loads(inspect.stdout)["Labels"]
    assert labels["dev.airtrust.ca-sha256"]
    url = f"https://{HOST}:{tls_server}"
    checks = {
        "curl": ["curl", "-sSf", "-o", "/dev/null", f"{url}/"],
        "git": ["git", "ls-remote", f"{url}/repo.git"],
        "openssl": [
            "openssl",
            "s_client",
            "-connect",
            f"{HOST}:{tls_server}",
            "-servername",
            HOST,
            "-verify_return_error",
            "-verify_hostname",
            HOST,
            "-brief",
        ],
        "python3": ["python3", "-c", f"import urllib.request; urllib.request.urlopen('{url}/')"],
    }
    patched = unpack(dest, tmp_path / "patched")
    plain = unpack(debian_image, tmp_path / "plain")
    speaks = {"curl": "curl", "git": "git", "openssl": "openssl", "python3": "python"}
    for name, cmd in checks.items():
        good = chroot(patched, *cmd)
        assert good.returncode == 0, f"{name} in the patched image: {good.stderr}"
        assert_untrusted(speaks[name], chroot(plain, *cmd), f"{name} in the unpatched image")
    # update-ca-certificates inside the image keeps the CA (it is in the anchor folder).
    rerun = chroot(patched, "/usr/sbin/update-ca-certificates", "--fresh")
    assert rerun.returncode == 0, rerun.stderr
    assert chroot(patched, *checks["curl"]).returncode == 0


@pytest.mark.parametrize("layout", ["alpine", "rhel", "git-sync"])
def test_distro_layouts(
    layout: str,
    registry: Registry,
    pki: Path,
    tls_server: int,
    tmp_path: Path,
    go_tlsclient: Path,
) -> None:
    files = {"alpine": alpine_layout, "rhel": rhel_layout, "git-sync": gitsync_layout}[layout](
        go_tlsclient
    )
    ref = registry.ref(f"base/{layout}:1")
    kwargs = {"entrypoint": ["/git-sync"], "user": "65533:65533"} if layout == "git-sync" else {}
    push_tar(ref, make_tar(tmp_path / "layer.tar", files), **kwargs)  # type: ignore[arg-type]
    dest = registry.ref(f"patched/{layout}:1")
    result = patch(ref, dest, pki)
    platform = result["platforms"][0]  # type: ignore[index]
    rootfs = unpack(dest, tmp_path / "patched")
    plain = unpack(ref, tmp_path / "plain")
    ca_pem = (pki / "ca-bundle.pem").read_bytes()
    if layout == "rhel":
        assert "rhel" in platform["layout"]
        assert (rootfs / "etc/ssl/certs").is_symlink(), "a directory replaced the base's symlink"
        assert ca_pem in (rootfs / "etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem").read_bytes()
        assert list((rootfs / "etc/pki/ca-trust/source/anchors").glob("airtrust-*.pem"))
    elif layout == "alpine":
        assert ca_pem in (rootfs / "etc/ssl/certs/ca-certificates.crt").read_bytes()
        assert (rootfs / "etc/ssl/cert.pem").is_symlink()
        assert list((rootfs / "usr/local/share/ca-certificates").glob("airtrust-*.crt"))
    else:
        assert ca_pem in (rootfs / "etc/ssl/certs/ca-certificates.crt").read_bytes()
        config = json.loads(crane("config", dest, "--insecure"))["config"]
        assert config["User"] == "65533:65533" and config["Entrypoint"] == ["/git-sync"]
    # OpenSSL with the image's hash directory, and with its bundle.
    leaf = str(pki / "tls.crt")
    # (the RHEL link /etc/ssl/certs -> /etc/pki/tls/certs is absolute: follow it in the rootfs)
    cert_dir = rootfs / ("etc/pki/tls/certs" if layout == "rhel" else "etc/ssl/certs")
    capath = subprocess.run(
        ["openssl", "verify", "-no-CAfile", "-no-CAstore", "-CApath", str(cert_dir), leaf],
        capture_output=True,
        text=True,
        check=False,
    )
    assert capath.returncode == 0, capath.stdout + capath.stderr
    # Go, the way git-sync and goofys read system roots, inside the image.
    go = "/git-sync" if layout == "git-sync" else "/usr/bin/tlsclient"
    cmd = [go, "-connect", f"127.0.0.1:{tls_server}", "-servername", HOST]
    assert chroot(rootfs, *cmd).returncode == 0, chroot(rootfs, *cmd).stderr
    assert_untrusted("go", chroot(plain, *cmd), f"Go in the unpatched {layout} image")


def test_image_without_trust_store_gets_one(
    registry: Registry, pki: Path, tmp_path: Path, go_tlsclient: Path, tls_server: int
) -> None:
    ref = registry.ref("base/empty:1")
    push_tar(ref, make_tar(tmp_path / "l.tar", {"app": go_tlsclient.read_bytes()}))
    dest = registry.ref("patched/empty:1")
    patch(ref, dest, pki)
    rootfs = unpack(dest, tmp_path / "u")
    assert (rootfs / "etc/ssl/certs/ca-certificates.crt").read_bytes() == (
        pki / "ca-bundle.pem"
    ).read_bytes()
    ok = chroot(rootfs, "/app", "-connect", f"127.0.0.1:{tls_server}", "-servername", HOST)
    assert ok.returncode == 0, ok.stderr


def test_deterministic_noop_and_replacement(
    registry: Registry, pki: Path, tmp_path: Path, go_tlsclient: Path
) -> None:
    ref = registry.ref("base/gitsync:v4")
    push_tar(ref, make_tar(tmp_path / "l.tar", gitsync_layout(go_tlsclient)))
    first = patch(ref, registry.ref("det/a:1"), pki)
    second = patch(ref, registry.ref("det/b:1"), pki)
    assert first["result_digest"] == second["result_digest"]
    again = patch(registry.ref("det/a:1"), registry.ref("det/a:1"), pki)
    assert again["noop"] is True and again["platforms"][0]["action"] == "unchanged"  # type: ignore[index]
    # A new CA set replaces airtrust's layer instead of stacking a second one.
    other = tmp_path / "other"
    assert run_cli("ca", "create", "--out", other, "--name", "Second CA").code == 0
    both = tmp_path / "both.pem"
    both.write_bytes((pki / "ca-bundle.pem").read_bytes() + (other / "ca.crt").read_bytes())
    result = run_cli(
        "image",
        "patch",
        registry.ref("det/a:1"),
        "--ca",
        both,
        "--to",
        registry.ref("det/a:2"),
        "-o",
        "json",
    )
    assert result.code == 0, result.err
    replaced = json.loads(result.out)["results"][0]["platforms"][0]
    assert replaced["action"] == "replaced-previous"
    base_digest = crane("digest", ref, "--insecure")
    base_layers = json.loads(crane("manifest", ref, "--insecure"))["layers"]
    manifest_1 = json.loads(crane("manifest", registry.ref("det/a:1"), "--insecure"))
    manifest_2 = json.loads(crane("manifest", registry.ref("det/a:2"), "--insecure"))
    layers_1, layers_2 = manifest_1["layers"], manifest_2["layers"]
    # The base layer is kept byte for byte; airtrust's layer is replaced, not stacked.
    assert [d["digest"] for d in layers_1[:-1]] == [d["digest"] for d in base_layers]
    assert [d["digest"] for d in layers_2[:-1]] == [d["digest"] for d in base_layers]
    assert layers_1[-1]["digest"] != layers_2[-1]["digest"]
    # What the layers hold, read by skopeo + umoci and judged by openssl.
    leaf_other = tmp_path / "other-leaf"
    issued = run_cli("cert", "issue", "--ca-dir", other, "--domain", HOST, "--out", leaf_other)
    assert issued.code == 0, issued.err
    bundle = "etc/ssl/certs/ca-certificates.crt"
    rootfs_1 = unpack(registry.ref("det/a:1"), tmp_path / "u1")
    rootfs_2 = unpack(registry.ref("det/a:2"), tmp_path / "u2")
    host = len(host_bundle().decode().split("-----BEGIN CERTIFICATE-----")) - 1
    assert count_certificates(rootfs_1 / bundle) == host + 1
    assert count_certificates(rootfs_2 / bundle) == host + 2
    assert openssl_verifies(rootfs_1 / bundle, pki / "tls.crt")
    assert not openssl_verifies(rootfs_1 / bundle, leaf_other / "tls.crt")
    assert openssl_verifies(rootfs_2 / bundle, pki / "tls.crt")
    assert openssl_verifies(rootfs_2 / bundle, leaf_other / "tls.crt")
    # The history says what was done, once; labels and annotations name the base.
    config_2 = json.loads(crane("config", registry.ref("det/a:2"), "--insecure"))
    ours = [h for h in config_2["history"] if "airtrust" in h.get("created_by", "")]
    assert len(ours) == 1 and ours[0] is config_2["history"][-1]
    fingerprints = sorted(
        fp for fp in config_2["config"]["Labels"]["dev.airtrust.ca-sha256"].split(",")
    )
    assert len(fingerprints) == 2
    assert ours[0]["created_by"] == "airtrust image patch: add CA sha256 " + ",".join(fingerprints)
    assert ours[0]["comment"].startswith("trust store: ") and bundle in ours[0]["comment"]
    assert config_2["config"]["Labels"]["dev.airtrust.base-digest"] == base_digest
    assert manifest_2["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest_2["annotations"]["org.opencontainers.image.base.digest"] == crane(
        "digest", registry.ref("det/a:1"), "--insecure"
    )
    assert manifest_2["annotations"]["dev.airtrust.ca-sha256"] == ",".join(fingerprints)


def test_multi_arch_index(
    registry: Registry, pki: Path, tmp_path: Path, go_tlsclient: Path
) -> None:
    tar = make_tar(tmp_path / "l.tar", alpine_layout(go_tlsclient))
    amd = registry.ref("multi/app:amd64")
    arm = registry.ref("multi/app:arm64")
    push_tar(amd, tar, platform="linux/amd64")
    push_tar(arm, tar, platform="linux/arm64")
    index = registry.ref("multi/app:1")
    crane("index", "append", "-m", amd, "-m", arm, "-t", index, "--insecure")
    all_platforms = patch(index, registry.ref("multi/app:1-ca"), pki)
    assert sorted(p["platform"] for p in all_platforms["platforms"]) == [  # type: ignore[union-attr]
        "linux/amd64",
        "linux/arm64",
    ]
    new_index = json.loads(crane("manifest", registry.ref("multi/app:1-ca"), "--insecure"))
    assert len(new_index["manifests"]) == 2
    one = patch(index, registry.ref("multi/app:1-amd"), pki, "--platform", "linux/amd64")
    actions = {p["platform"]: p["action"] for p in one["platforms"]}  # type: ignore[union-attr]
    assert actions == {"linux/amd64": "patched", "linux/arm64": "copied"}
    # Every platform unpacked by skopeo + umoci; its trust store judged by openssl.
    bundle = "etc/ssl/certs/ca-certificates.crt"
    for platform in ("linux/amd64", "linux/arm64"):
        arch = platform.split("/")[1]
        both = unpack(registry.ref("multi/app:1-ca"), tmp_path / f"all-{arch}", platform)
        assert openssl_verifies(both / bundle, pki / "tls.crt"), platform
        assert openssl_verifies(both / "etc/ssl/cert.pem", pki / "tls.crt"), platform
        only = unpack(registry.ref("multi/app:1-amd"), tmp_path / f"amd-{arch}", platform)
        assert openssl_verifies(only / bundle, pki / "tls.crt") is (arch == "amd64"), platform
    inspect = run_cli(
        "image",
        "inspect",
        registry.ref("multi/app:1-ca"),
        "--ca",
        pki / "ca-bundle.pem",
        "-o",
        "json",
    )
    assert inspect.code == 0 and json.loads(inspect.out)["trusted"] is True
    partial = run_cli(
        "image", "inspect", registry.ref("multi/app:1-amd"), "--ca", pki / "ca-bundle.pem"
    )
    assert partial.code == 1 and "[image-untrusted]" in partial.err


def test_sidecars_and_dockerfile(
    registry: Registry,
    pki: Path,
    tmp_path: Path,
    go_tlsclient: Path,
    debian_image: str,
    tls_server: int,
) -> None:
    tar = make_tar(tmp_path / "l.tar", gitsync_layout(go_tlsclient))
    push_tar(registry.ref("run-ai-prod/goofys:master"), tar)
    push_tar(
        registry.ref("git-sync/git-sync:v4.4.0"), tar, entrypoint=["/git-sync"], user="65533:65533"
    )
    result = run_cli(
        "image",
        "patch",
        "--sidecars",
        "--registry",
        registry.host,
        "--ca",
        pki / "ca-bundle.pem",
        "-o",
        "json",
    )
    assert result.code == 0, result.err
    references = json.loads(result.out)["references"]
    assert set(references) == {"gcr.io/run-ai-prod/goofys", "registry.k8s.io/git-sync/git-sync"}
    for upstream, new in references.items():
        checked = run_cli("image", "inspect", new, "--ca", pki / "ca-bundle.pem")
        assert checked.code == 0, checked.err
        # Judged without airtrust: the image unpacked as a runtime does (skopeo + umoci),
        # its bundle by openssl, its Go binary (the layout's /git-sync) by connecting.
        rootfs = unpack(new, tmp_path / upstream.rsplit("/", 1)[1])
        bundle = rootfs / "etc/ssl/certs/ca-certificates.crt"
        assert openssl_verifies(bundle, pki / "tls.crt"), new
        assert host_bundle() in bundle.read_bytes(), "the base's roots were dropped"
        cmd = ["/git-sync", "-connect", f"127.0.0.1:{tls_server}", "-servername", HOST]
        ran = chroot(rootfs, *cmd)
        assert ran.returncode == 0, f"{new}: {ran.stderr}"
    config = json.loads(
        crane("config", references["registry.k8s.io/git-sync/git-sync"], "--insecure")
    )
    assert config["config"]["User"] == "65533:65533"
    assert config["config"]["Entrypoint"] == ["/git-sync"]
    scratch = run_cli(
        "image",
        "dockerfile",
        registry.ref("git-sync/git-sync:v4.4.0"),
        "--ca",
        pki / "ca-bundle.pem",
        "--out",
        tmp_path / "ctx",
    )
    assert scratch.code == 0 and "no shell" in scratch.err
    dockerfile = (tmp_path / "ctx" / "Dockerfile").read_text()
    assert "RUN" not in dockerfile and "COPY files/" in dockerfile
    debian = run_cli(
        "image",
        "dockerfile",
        debian_image,
        "--ca",
        pki / "ca-bundle.pem",
        "--out",
        tmp_path / "ctx2",
    )
    assert debian.code == 0, debian.err
    text = (tmp_path / "ctx2" / "Dockerfile").read_text()
    assert "COPY anchors/ /usr/local/share/ca-certificates/" in text
    assert "RUN update-ca-certificates" in text
    assert list((tmp_path / "ctx2" / "anchors").glob("*.crt"))


def test_missing_image_and_bad_reference(registry: Registry, pki: Path) -> None:
    missing = run_cli(
        "image",
        "patch",
        registry.ref("nope/x:1"),
        "--ca",
        pki / "ca-bundle.pem",
        "--to",
        registry.ref("nope/y:1"),
    )
    assert_one_line_error(missing, 2, "[image-not-found]")
    bad = run_cli("image", "patch", "UPPER/Case", "--ca", pki / "ca-bundle.pem", "--to", "x/y")
    assert_one_line_error(bad, 2, "not an image reference")


def test_layer_is_minimal_and_never_shadows_symlinks(
    registry: Registry, pki: Path, tmp_path: Path, go_tlsclient: Path
) -> None:
    ref = registry.ref("base/rhel-min:1")
    push_tar(ref, make_tar(tmp_path / "l.tar", rhel_layout(go_tlsclient)))
    result = patch(ref, registry.ref("patched/rhel-min:1"), pki)
    layer = result["platforms"][0]["layer_digest"]  # type: ignore[index]
    blob = tmp_path / "layer.tgz"
    subprocess.run(
        [
            str(require("curl")),
            "-sf",
            "-o",
            str(blob),
            f"http://{registry.host}/v2/patched/rhel-min/blobs/{layer}",
        ],
        check=True,
    )
    with tarfile.open(blob) as tar:
        names = {m.name: m for m in tar.getmembers()}
    assert "etc/ssl/certs" not in names and "etc/ssl" not in names
    assert all(m.uid == 0 and m.mtime == 0 for m in names.values())
    assert any(n.startswith("etc/pki/tls/certs/") and names[n].issym() for n in names)


def test_attestations_of_patched_platforms_are_dropped_and_reported(
    registry: Registry, pki: Path, tmp_path: Path, go_tlsclient: Path
) -> None:
    from airtrust.registry.client import OCI_INDEX, OCI_MANIFEST, RegistryClient, sha256_digest

    amd = registry.ref("attest/app:amd64")
    push_tar(amd, make_tar(tmp_path / "l.tar", alpine_layout(go_tlsclient)), platform="linux/amd64")
    with RegistryClient(registry.host) as client:
        client.ping()
        image = client.manifest("attest/app", "amd64")
        statement = json.dumps({"_type": "https://in-toto.io/Statement/v0.1"}).encode()
        config = b"{}"
        for blob in (statement, config):
            client.upload_blob("attest/app", blob)
        attestation = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": sha256_digest(config),
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.in-toto+json",
                        "digest": sha256_digest(statement),
                        "size": len(statement),
                    }
                ],
            }
        ).encode()
        client.put_manifest("attest/app", sha256_digest(attestation), attestation, OCI_MANIFEST)
        index = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [
                    {
                        "mediaType": image.media_type,
                        "digest": image.digest,
                        "size": len(image.raw),
                        "platform": {"os": "linux", "architecture": "amd64"},
                    },
                    {
                        "mediaType": OCI_MANIFEST,
                        "digest": sha256_digest(attestation),
                        "size": len(attestation),
                        "platform": {"os": "unknown", "architecture": "unknown"},
                        "annotations": {
                            "vnd.docker.reference.type": "attestation-manifest",
                            "vnd.docker.reference.digest": image.digest,
                        },
                    },
                ],
                "annotations": {"org.opencontainers.image.source": "https://example.test/app"},
            }
        ).encode()
        client.put_manifest("attest/app", "1", index, OCI_INDEX)
    result = run_cli(
        "image",
        "patch",
        registry.ref("attest/app:1"),
        "--ca",
        pki / "ca-bundle.pem",
        "--to",
        registry.ref("attest/app:1-ca"),
        "-o",
        "json",
    )
    assert result.code == 0, result.err
    assert json.loads(result.out)["results"][0]["dropped_attestations"] == 1
    assert "attestation" in result.err
    new_index = json.loads(crane("manifest", registry.ref("attest/app:1-ca"), "--insecure"))
    assert len(new_index["manifests"]) == 1
    assert new_index["annotations"] == {
        "org.opencontainers.image.source": "https://example.test/app"
    }


@pytest.mark.cold_layer_cache  # the bars show the base layer read; its runs name a cache each
def test_progress_bars_on_a_terminal_only(registry: Registry, pki: Path, tmp_path: Path) -> None:
    ref = registry.ref("base/bars:1")
    files: dict[str, bytes | str | tuple[str, str]] = {
        "etc": "dir",
        "etc/os-release": b"ID=debian\n",
        "payload.bin": os.urandom(3 << 20),  # incompressible: the read takes a while
    }
    push_tar(ref, make_tar(tmp_path / "l.tar", files))
    base_layer = json.loads(crane("manifest", ref, "--insecure"))["layers"][0]
    args = ["image", "patch", ref, "--ca", str(pki / "ca-bundle.pem")]
    env = {**os.environ, "AIRTRUST_LAYER_CACHE": str(tmp_path / "cache"), "COLUMNS": "120"}
    dest = registry.ref("bars/a:1")
    command = shlex.join([sys.executable, "-m", "airtrust", *args, "--to", dest])
    # `script` gives the CLI a real pseudo-terminal, as a person at a shell has.
    proc = subprocess.run(
        [require("script"), "-qec", command, "/dev/null"],
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )
    screen = proc.stdout.decode("utf-8", "replace")
    assert proc.returncode == 0, screen
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)
    reads = re.findall(r"read layer (\w{12}) .*?([\d.]+)/([\d.]+) MB", plain)
    assert reads, plain
    layer, done, total = reads[-1]
    assert layer == base_layer["digest"][7:19]
    assert done == total == f"{base_layer['size'] / 1e6:.1f}", reads[-1]
    assert re.search(r"push layer \w{12} .*?(\d+)/\1 bytes", plain), plain
    # Piped (not a terminal): no bars, only the result.
    fresh = {"AIRTRUST_LAYER_CACHE": str(tmp_path / "c2")}
    piped = run_cli(*args, "--to", registry.ref("bars/b:1"), env=fresh)
    assert piped.code == 0, piped.err
    assert "read layer" not in piped.err and "━" not in piped.err


def test_zstd_base_layers_are_read(
    registry: Registry, pki: Path, tmp_path: Path, go_tlsclient: Path, tls_server: int
) -> None:
    ref = registry.ref("base/zstd:1")
    push_zstd(ref, make_tar(tmp_path / "l.tar", gitsync_layout(go_tlsclient)), tmp_path / "oci")
    base = json.loads(crane("manifest", ref, "--insecure"))
    assert base["layers"][0]["mediaType"].endswith("+zstd"), base
    dest = registry.ref("patched/zstd:1")
    result = patch(ref, dest, pki)
    assert result["platforms"][0]["action"] == "patched"  # type: ignore[index]
    layers = json.loads(crane("manifest", dest, "--insecure"))["layers"]
    assert [d["mediaType"].rsplit("+", 1)[1] for d in layers] == ["zstd", "gzip"]
    rootfs = unpack_layers(dest, tmp_path / "u")
    bundle = (rootfs / "etc/ssl/certs/ca-certificates.crt").read_bytes()
    # The base's own bundle, read through zstd, is kept; the CA is added.
    assert host_bundle().strip() in bundle and (pki / "ca-bundle.pem").read_bytes() in bundle
    cmd = ["/git-sync", "-connect", f"127.0.0.1:{tls_server}", "-servername", HOST]
    assert chroot(rootfs, *cmd).returncode == 0, chroot(rootfs, *cmd).stderr


@pytest.mark.cold_layer_cache  # judged by the registry's access log
def test_patch_from_one_registry_into_another(
    registry: Registry, pki: Path, tmp_path: Path, go_tlsclient: Path, tls_server: int
) -> None:
    tar = make_tar(tmp_path / "l.tar", gitsync_layout(go_tlsclient))
    ref = registry.ref("cross/app:1")
    push_tar(ref, tar, entrypoint=["/git-sync"])
    amd, arm = registry.ref("cross/multi:amd64"), registry.ref("cross/multi:arm64")
    push_tar(amd, tar, platform="linux/amd64")
    push_tar(arm, tar, platform="linux/arm64")
    index = registry.ref("cross/multi:1")
    crane("index", "append", "-m", amd, "-m", arm, "-t", index, "--insecure")
    with started_registry(tmp_path / "release", access_log=True) as release:
        dest = release.ref("patched/app:1")
        first = patch(ref, dest, pki)
        assert first["platforms"][0]["action"] == "patched"  # type: ignore[index]
        # The judge is the registry's own access log; it is shown to see the first copy.
        tag_put = ("PUT", "/v2/patched/app/manifests/1")
        wait_for("the registry to log the first copy", lambda: tag_put in release.requests())
        uploads = len(release.blob_uploads())
        assert uploads >= 3, release.blob_uploads()  # base layer, airtrust's layer, config
        rootfs = unpack(dest, tmp_path / "u")
        cmd = ["/git-sync", "-connect", f"127.0.0.1:{tls_server}", "-servername", HOST]
        assert chroot(rootfs, *cmd).returncode == 0, chroot(rootfs, *cmd).stderr
        # Where the result goes does not change it; a second copy uploads no blob again.
        within = patch(ref, registry.ref("cross/app:1-ca"), pki)
        assert within["result_digest"] == first["result_digest"]
        again = patch(ref, dest, pki)
        assert again["result_digest"] == first["result_digest"]
        wait_for(
            "the registry to log the second copy's tag",
            lambda: release.requests().count(tag_put) == 2,
        )
        assert release.blob_uploads()[uploads:] == [], "the second copy uploaded blobs again"
        # An index with one platform patched: the other is copied across, blobs and all.
        multi = patch(index, release.ref("patched/multi:1"), pki, "--platform", "linux/amd64")
        actions = {p["platform"]: p["action"] for p in multi["platforms"]}  # type: ignore[union-attr]
        assert actions == {"linux/amd64": "patched", "linux/arm64": "copied"}
        copied = unpack(
            f"{release.host}/patched/multi@{crane('digest', arm, '--insecure')}", tmp_path / "a"
        )
        assert (copied / "git-sync").exists()
