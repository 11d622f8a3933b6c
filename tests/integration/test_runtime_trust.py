"""Every client in an AI workload image trusts the CA after one `image patch`.

The image (tests/integration/aiimage.py) is real: Debian bookworm with a JRE,
Node.js, curl and git, a venv where pip installed requests, certifi and
grpcio from PyPI wheels, and a conda-style prefix. It is pushed to Debian's
docker-registry on 127.0.0.1, patched by airtrust, read back by skopeo +
umoci, and each client runs in a chroot of the unpacked root filesystem with
the environment of the image's config (as umoci hands it to a runtime):
Python requests, pip, a grpcio client, Java's HttpsURLConnection, Node's
https, curl and git, against servers on 127.0.0.1 whose certificates the
local CA issued (openssl s_server, git http-backend, a grpcio server). The
unpatched image is the control: each client fails there with its own certificate
error (``UNTRUSTED`` in tests/integration/conftest.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.integration.aiimage import ai_layers, extra_layer, gzip_layer, push_oci, wheels
from tests.integration.conftest import (
    TLS_HOST,
    TOOLS,
    assert_untrusted,
    bare_repository,
    free_port,
    git_https_server,
    openssl_server,
    require,
    wait_for_port,
)
from tests.integration.registry import Registry, openssl_verifies, unpack

pytestmark = pytest.mark.integration
HOST = TLS_HOST
GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
PATH = "/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Which client's words judge each command of :func:`clients` when it refuses.
SPEAKS = {
    "python requests": "python",
    "pip download": "python",
    "grpcio": "grpc",
    "java HttpsURLConnection": "java",
    "node https": "node",
    "curl": "curl",
    "git": "git",
}


@dataclass
class Rootfs:
    root: Path
    env: dict[str, str]  # the process environment umoci derived from the image config


@pytest.fixture(scope="module")
def layers() -> list[tuple[Path, str, str]]:
    base, opt = ai_layers()
    return [(*gzip_layer(base), GZIP), (*gzip_layer(opt), GZIP)]


@pytest.fixture(scope="module")
def ai_image(registry: Registry, layers: list[tuple[Path, str, str]]) -> str:
    ref = registry.ref("research/notebook:cuda")
    push_oci(ref, layers, [f"PATH={PATH}"])
    return ref


@pytest.fixture(scope="module")
def patched_ref(ai_image: str, registry: Registry, pki: Path) -> str:
    dest = registry.ref("research/notebook:cuda-ca")
    result = run_cli(
        "image", "patch", ai_image, "--ca", pki / "ca-bundle.pem", "--to", dest, "-o", "json"
    )
    assert result.code == 0, result.err
    return dest


def _unpacked(ref: str, into: Path, java_classes: Path) -> Rootfs:
    root = unpack(ref, into)
    spec = json.loads((root.parent / "config.json").read_text())
    env = dict(item.split("=", 1) for item in spec["process"]["env"])
    (root / "etc" / "hosts").write_text(f"127.0.0.1 localhost {HOST}\n")
    shutil.copytree(wheels(), root / "tmp" / "wheels", dirs_exist_ok=True)
    shutil.copytree(java_classes, root / "tmp" / "classes", dirs_exist_ok=True)
    shutil.copy(TOOLS / "grpc_echo.py", root / "tmp" / "grpc_echo.py")
    return Rootfs(root, env)


@pytest.fixture(scope="module")
def plain(
    ai_image: str, tmp_path_factory: pytest.TempPathFactory, fetch_java_classes: Path
) -> Rootfs:
    return _unpacked(ai_image, tmp_path_factory.mktemp("plain"), fetch_java_classes)


@pytest.fixture(scope="module")
def patched(
    patched_ref: str, tmp_path_factory: pytest.TempPathFactory, fetch_java_classes: Path
) -> Rootfs:
    return _unpacked(patched_ref, tmp_path_factory.mktemp("patched"), fetch_java_classes)


def in_root(
    rootfs: Path, env: dict[str, str], *cmd: str, timeout: int = 180
) -> subprocess.CompletedProcess[str]:
    """``cmd`` in a chroot with only ``env`` set and /proc mounted (the JVM reads it),
    in a private mount namespace so nothing leaks onto the host."""
    script = 'mount -t proc proc "$1/proc" && root="$1" && shift && exec chroot "$root" "$@"'
    return subprocess.run(
        [
            require("unshare"), "-m", "sh", "-c", script, "sh", str(rootfs),
            "env", "-i", *(f"{k}={v}" for k, v in env.items()), *cmd,
        ],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def www(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """openssl s_server -WWW: a file for the HTTP clients and a find-links page for pip."""
    root = tmp_path_factory.mktemp("www")
    (root / "hello.txt").write_text("hello from the local CA\n")
    wheel = next(wheels().glob("idna-*.whl"))
    shutil.copy(wheel, root / wheel.name)
    (root / "links.html").write_text(f'<html><body><a href="{wheel.name}">idna</a></body></html>\n')
    with openssl_server(pki / "tls.crt", pki / "tls.key", www_root=root) as server:
        yield server.port


@pytest.fixture(scope="module")
def git_port(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    root = tmp_path_factory.mktemp("git")
    bare_repository(root, "airtrust\n")
    with git_https_server(pki / "tls.crt", pki / "tls.key", root) as server:
        yield server.port


@pytest.fixture(scope="module")
def grpc_port(plain: Rootfs, pki: Path) -> Iterator[int]:
    """A grpcio TLS server (the image's own grpcio, in the unpatched chroot)."""
    shutil.copy(pki / "tls.crt", plain.root / "tmp" / "tls.crt")
    shutil.copy(pki / "tls.key", plain.root / "tmp" / "tls.key")
    port = free_port()
    proc = subprocess.Popen(
        [
            require("chroot"), str(plain.root), "/opt/venv/bin/python", "/tmp/grpc_echo.py",
            "serve", str(port), "/tmp/tls.crt", "/tmp/tls.key",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for_port(port, proc, timeout=30)
        yield port
    finally:
        proc.kill()
        proc.wait(10)


def fetch(url: str) -> str:
    """Python: GET with requests, raising on any error."""
    return f"import requests; requests.get('{url}', timeout=10).raise_for_status()"


def clients(www: int, git_port: int, grpc_port: int) -> dict[str, list[str]]:
    url = f"https://{HOST}:{www}"
    node = (
        f"require('https').get('{url}/hello.txt', r => process.exit(r.statusCode === 200 ? 0 : 1))"
        ".on('error', e => { console.error(e.code, e.message); process.exit(2); })"
    )
    return {
        "python requests": ["python", "-c", fetch(f"{url}/hello.txt")],
        "pip download": [
            "pip", "download", "--no-index", "--disable-pip-version-check", "-q",
            "--find-links", f"{url}/links.html", "-d", "/tmp/downloaded", "idna",
        ],
        "grpcio": ["python", "/tmp/grpc_echo.py", "call", f"{HOST}:{grpc_port}"],
        "java HttpsURLConnection": ["java", "-cp", "/tmp/classes", "Fetch", f"{url}/hello.txt"],
        "node https": ["node", "-e", node],
        "curl": ["curl", "-sSf", "-o", "/dev/null", f"{url}/hello.txt"],
        "git": ["git", "ls-remote", f"https://{HOST}:{git_port}/repo.git"],
    }  # fmt: skip


def test_every_client_trusts_the_patched_image_and_none_the_unpatched(
    plain: Rootfs, patched: Rootfs, www: int, git_port: int, grpc_port: int
) -> None:
    for name, cmd in clients(www, git_port, grpc_port).items():
        good = in_root(patched.root, patched.env, *cmd)
        assert good.returncode == 0, f"{name} in the patched image: {good.stdout}{good.stderr}"
        bad = in_root(plain.root, plain.env, *cmd)
        assert_untrusted(SPEAKS[name], bad, f"{name} in the unpatched image")


def test_patched_files_alone_make_clients_trust(
    patched: Rootfs, plain: Rootfs, www: int, git_port: int, grpc_port: int, pki: Path
) -> None:
    """Without the variables (a pod spec that drops them), every store airtrust rewrote
    is still trusted by the client reading it: certifi, pip's copy, grpcio's roots,
    Java's cacerts, the OS bundle (also read by Debian's Node.js build)."""
    bare = {"PATH": PATH, "HOME": "/tmp"}
    for name, cmd in clients(www, git_port, grpc_port).items():
        ran = in_root(patched.root, bare, *cmd)
        assert ran.returncode == 0, f"{name} without the variables: {ran.stderr}"
    # The conda-style prefix: its certifi for its Python, its ssl/cacert.pem for its OpenSSL
    # (read here the way conda's OPENSSLDIR makes it the default: as the CA file).
    conda_python = [
        "/opt/conda/bin/python", "-c",
        f"import requests; requests.get('https://{HOST}:{www}/hello.txt', timeout=10)",
    ]  # fmt: skip
    conda_ssl = ["curl", "-sSf", "--cacert", "/opt/conda/ssl/cert.pem", f"https://{HOST}:{www}/"]
    for client, cmd in (("python", conda_python), ("curl", conda_ssl)):
        assert in_root(patched.root, bare, *cmd).returncode == 0, in_root(patched.root, bare, *cmd)
        assert_untrusted(client, in_root(plain.root, bare, *cmd), f"conda's {client} unpatched")
    # The venv is the notebook user's: the rewritten files keep their owner.
    certifi = next(patched.root.glob("opt/venv/lib/python3*/site-packages/certifi/cacert.pem"))
    assert (certifi.stat().st_uid, certifi.stat().st_gid) == (1000, 1000)
    assert openssl_verifies(certifi, pki / "tls.crt")
    # Java's store: keytool (a real reader) lists the CA as a trusted entry, the rest kept.
    store = patched.root / "etc/ssl/certs/java/cacerts"
    before = _keytool_entries(plain.root / "etc/ssl/certs/java/cacerts")
    after = _keytool_entries(store)
    assert before < after and len(after - before) == 1


def _keytool_entries(store: Path) -> set[str]:
    listing = subprocess.run(
        [require("keytool"), "-list", "-keystore", str(store), "-storepass", "changeit"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert listing.returncode == 0, listing.stderr
    return {
        line.split(",")[0] for line in listing.stdout.splitlines() if "trustedCertEntry" in line
    }


def test_a_fresh_venv_after_the_patch_trusts_through_the_variables(
    patched: Rootfs, www: int, pki: Path
) -> None:
    """What a notebook installs later brings certifi without the CA; the config's
    variables still point requests (and pip) at the patched bundle."""
    fresh = [
        "sh", "-ec",
        "python3 -m venv /tmp/fresh && /tmp/fresh/bin/pip install -q --no-index "
        "--find-links /tmp/wheels requests certifi urllib3 idna charset-normalizer && "
        f'/tmp/fresh/bin/python -c "{fetch(f"https://{HOST}:{www}/hello.txt")}"',
    ]  # fmt: skip
    ran = in_root(patched.root, patched.env, *fresh)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    new_certifi = next(patched.root.glob("tmp/fresh/lib/python3*/site-packages/certifi/cacert.pem"))
    assert not openssl_verifies(new_certifi, pki / "tls.crt")  # trust came from the variables
    without = in_root(
        patched.root,
        {"PATH": PATH, "HOME": "/tmp"},
        "/tmp/fresh/bin/python", "-c",
        f"import requests; requests.get('https://{HOST}:{www}/hello.txt', timeout=10)",
    )  # fmt: skip
    assert_untrusted("python", without, "the fresh venv without the variables")


def _config(ref: str) -> dict[str, object]:
    proc = subprocess.run(
        [require("skopeo"), "inspect", "--config", "--tls-verify=false", f"docker://{ref}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    config: dict[str, object] = json.loads(proc.stdout)["config"]
    return config


def test_the_config_gets_the_variables_unless_no_env(
    ai_image: str, patched_ref: str, registry: Registry, pki: Path
) -> None:
    env = dict(str(item).split("=", 1) for item in _config(patched_ref)["Env"])  # type: ignore[attr-defined]
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    for var in (
        "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT", "CURL_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS", "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", "AWS_CA_BUNDLE",
    ):  # fmt: skip
        assert env[var] == bundle, var
    assert env["PATH"] == PATH
    dest = registry.ref("research/notebook:cuda-ca-noenv")
    result = run_cli(
        "image", "patch", ai_image, "--ca", pki / "ca-bundle.pem", "--to", dest, "--no-env",
        "-o", "json",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert _config(dest)["Env"] == _config(ai_image)["Env"]
    reported = json.loads(result.out)["results"][0]["platforms"][0]["clients"]
    assert reported and all(c["status"] == "ok" for c in reported), reported


def test_a_variable_the_image_sets_is_kept_and_its_file_patched(
    registry: Registry,
    layers: list[tuple[Path, str, str]],
    pki: Path,
    tmp_path: Path,
    www: int,
    fetch_java_classes: Path,
) -> None:
    corp = Path("/etc/ssl/certs/ca-certificates.crt").read_bytes()
    extra = extra_layer(tmp_path / "corp.tar", {"opt/certs/corp.pem": corp})
    source = registry.ref("research/preset:1")
    env = [f"PATH={PATH}", "REQUESTS_CA_BUNDLE=/opt/certs/corp.pem"]
    push_oci(source, [*layers, (*gzip_layer(extra), GZIP)], env)
    dest = registry.ref("research/preset:1-ca")
    result = run_cli(
        "image", "patch", source, "--ca", pki / "ca-bundle.pem", "--to", dest, "-o", "json"
    )
    assert result.code == 0, result.err
    values = dict(str(item).split("=", 1) for item in _config(dest)["Env"])  # type: ignore[attr-defined]
    assert values["REQUESTS_CA_BUNDLE"] == "/opt/certs/corp.pem"
    assert values["SSL_CERT_FILE"] == "/etc/ssl/certs/ca-certificates.crt"
    rootfs = _unpacked(dest, tmp_path / "preset", fetch_java_classes)
    assert openssl_verifies(rootfs.root / "opt/certs/corp.pem", pki / "tls.crt")
    get = ["python", "-c", fetch(f"https://{HOST}:{www}/hello.txt")]
    assert in_root(rootfs.root, rootfs.env, *get).returncode == 0
    # The control: the same variable in the unpatched image names a file without the CA.
    with tarfile.open(extra) as tar:
        original = tar.extractfile("opt/certs/corp.pem")
        assert original is not None
        (tmp_path / "original.pem").write_bytes(original.read())
    assert not openssl_verifies(tmp_path / "original.pem", pki / "tls.crt")


def test_inspect_names_each_client_and_fails_on_the_unpatched(
    ai_image: str, patched_ref: str, pki: Path
) -> None:
    before = run_cli("image", "inspect", ai_image, "--ca", pki / "ca-bundle.pem", "-o", "json")
    assert before.code == 1, before.err
    clients = json.loads(before.out)["platforms"][0]["clients"]
    status = {c["where"]: c["status"] for c in clients}
    site = "/opt/venv/lib/python3.11/site-packages"
    assert status[f"{site}/certifi/cacert.pem"] == "missing"
    assert status[f"{site}/pip/_vendor/certifi/cacert.pem"] == "missing"
    assert status[f"{site}/grpc/_cython/_credentials/roots.pem"] == "missing"
    assert status["/opt/conda/ssl/cacert.pem"] == "missing"
    assert [s for w, s in status.items() if "etc/ssl/certs/java/cacerts" in w] == ["missing"]
    assert "$NODE_EXTRA_CA_CERTS" not in status  # Debian's node reads the OS bundle
    assert "lack the CA" in before.err
    after = run_cli("image", "inspect", patched_ref, "--ca", pki / "ca-bundle.pem")
    assert after.code == 0, after.err
    for shown in ("requests, httpx", "grpcio", "Java", "conda", "NODE_EXTRA_CA_CERTS", "ok"):
        assert shown in after.out, shown
    data = run_cli("image", "inspect", patched_ref, "--ca", pki / "ca-bundle.pem", "-o", "json")
    assert all(c["status"] == "ok" for c in json.loads(data.out)["platforms"][0]["clients"])


def test_patch_from_file_goes_on_past_a_failure(
    ai_image: str, registry: Registry, pki: Path, tmp_path: Path
) -> None:
    listing = tmp_path / "images.txt"
    listing.write_text(
        "# images to patch\n"
        f"{ai_image} {registry.ref('batch/a:1')}\n"
        f"127.0.0.1:{free_port()}/missing/image:1 {registry.ref('batch/b:1')}\n"
        f"{ai_image}   {registry.ref('batch/c:1')}  # same source, another name\n"
    )
    result = run_cli(
        "image", "patch", "--from", listing, "--ca", pki / "ca-bundle.pem", "-o", "json"
    )
    assert result.code == 1, result.err
    data = json.loads(result.out)
    assert sorted(r["destination"] for r in data["results"]) == [
        registry.ref("batch/a:1"),
        registry.ref("batch/c:1"),
    ]
    assert [f["destination"] for f in data["failures"]] == [registry.ref("batch/b:1")]
    assert "unreachable" in data["failures"][0]["error"]
    assert "1 of 3 images failed" in result.err
    for name in ("batch/a:1", "batch/c:1"):
        labels = subprocess.run(
            [require("skopeo"), "inspect", "--tls-verify=false", f"docker://{registry.ref(name)}"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert "dev.airtrust.ca-sha256" in json.loads(labels.stdout)["Labels"]
    table = run_cli("image", "patch", "--from", listing, "--ca", pki / "ca-bundle.pem")
    assert table.code == 1 and "FAILED" in table.out and "2 patched, 1 failed of 3" in table.out
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{ai_image}\n")
    wrong = run_cli("image", "patch", "--from", bad, "--ca", pki / "ca-bundle.pem")
    assert wrong.code == 2 and "bad.txt:1: expected 'SRC DEST'" in wrong.err
