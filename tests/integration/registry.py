"""A real OCI registry (Debian's docker-registry, i.e. distribution 2.8) on 127.0.0.1,
and real tools (crane, mmdebstrap, skopeo, umoci) to build and read test images."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import CACHE, UNTRUSTED, free_port, require, wait_for_port

CRANE = CACHE / "bin" / "crane"
IMAGES = CACHE / "images"
DEBIAN_PACKAGES = "ca-certificates,curl,git,python3,openssl"


@dataclass
class Registry:
    host: str
    folder: Path
    process: subprocess.Popen[bytes] | None = None
    config: Path | None = None
    tls: bool = False
    ca: Path | None = None
    credentials: tuple[str, str] | None = None
    extra: dict[str, object] = field(default_factory=dict)
    access_log: bool = False

    def ref(self, path: str) -> str:
        return f"{self.host}/{path}"

    def requests(self) -> list[tuple[str, str]]:
        """(method, path) of every request the registry has answered, from its own access
        log: what reached the registry, whatever a client reports about itself."""
        if not self.access_log:
            pytest.fail("this registry was started without access_log=True")
        log = (self.folder / "registry.log").read_text(errors="replace")
        return [(m[1], m[2]) for m in re.finditer(r'"([A-Z]+) (/v2/\S*) HTTP/[\d.]+"', log)]

    def blob_uploads(self) -> list[tuple[str, str]]:
        """The requests that start, carry or finish a blob upload (POST, PATCH, PUT of
        /v2/NAME/blobs/uploads/), cross-repository mounts included."""
        return [r for r in self.requests() if "/blobs/uploads/" in r[1]]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def start(self) -> None:
        assert self.config is not None
        log = open(self.folder / "registry.log", "ab")
        self.process = subprocess.Popen(
            [require("docker-registry"), "serve", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(int(self.host.rsplit(":", 1)[1]), self.process)


@contextlib.contextmanager
def started_registry(
    folder: Path,
    *,
    tls: tuple[Path, Path] | None = None,
    htpasswd: Path | None = None,
    token: dict[str, object] | None = None,
    port: int | None = None,
    access_log: bool = False,
) -> Iterator[Registry]:
    """Debian's docker-registry on 127.0.0.1; with ``access_log`` it logs every request to
    ``folder/registry.log`` (read by :meth:`Registry.requests`)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    config: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": not access_log}},
        "storage": {
            "filesystem": {"rootdirectory": str(folder / "data")},
            "delete": {"enabled": True},
        },
        "http": {"addr": f"127.0.0.1:{port}", "headers": {"X-Content-Type-Options": ["nosniff"]}},
    }
    if tls is not None:
        config["http"]["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}  # type: ignore[index]
    if htpasswd is not None:
        config["auth"] = {"htpasswd": {"realm": "airtrust-test", "path": str(htpasswd)}}
    if token is not None:
        config["auth"] = {"token": token}
    path = folder / "config.yml"
    path.write_text(yaml.safe_dump(config))
    registry = Registry(
        f"127.0.0.1:{port}", folder, config=path, tls=tls is not None, access_log=access_log
    )
    registry.start()
    try:
        yield registry
    finally:
        registry.stop()


def crane(*args: str, env: dict[str, str] | None = None) -> str:
    if not CRANE.exists():
        pytest.fail(f"{CRANE} is missing; run scripts/build-testbins (scripts/test does)")
    proc = subprocess.run(
        [str(CRANE), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"crane {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout.strip()


def push_tar(
    ref: str,
    tar: Path,
    *,
    entrypoint: list[str] | None = None,
    user: str | None = None,
    platform: str = "linux/amd64",
    oci: bool = True,
    env: dict[str, str] | None = None,
) -> str:
    """An image FROM scratch with ``tar`` as its only layer, pushed with crane; its digest."""
    args = ["append", "-f", str(tar), "-t", ref, "--insecure"]
    if oci:
        args.append("--oci-empty-base")
    crane(*args, env=env)
    mutate = ["mutate", ref, "-t", ref, "--insecure"]
    if entrypoint:
        mutate += ["--entrypoint", ",".join(entrypoint)]
    if user:
        mutate += ["--user", user]
    mutate += ["--set-platform", platform]  # crane's empty base has no os/arch
    crane(*mutate, env=env)
    return crane("digest", ref, "--insecure", env=env)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Serialise builds of one cached artifact across processes (CI and a developer at
    once): one build at a time, the others then reuse it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / (path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def debian_rootfs(packages: str = DEBIAN_PACKAGES) -> Path:
    """A Debian bookworm minbase with ``packages`` (default: what the tests run), cached."""
    key = hashlib.sha256(packages.encode()).hexdigest()[:12]
    out = IMAGES / f"debian-bookworm-{key}.tar"
    if out.exists():
        return out
    with locked(out):
        if not out.exists():
            _mmdebstrap(packages, out)
    return out


def _mmdebstrap(packages: str, out: Path) -> None:
    # mmdebstrap writes a tarball only when the name ends in .tar (else a directory).
    tmp = out.parent / f"{out.stem}.{os.getpid()}.tmp.tar"
    proc = subprocess.run(
        [
            require("mmdebstrap"),
            "--variant=minbase",
            f"--include={packages}",
            "--mode=root",
            "--quiet",
            "bookworm",
            str(tmp),
            "http://deb.debian.org/debian",
        ],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"mmdebstrap could not build the Debian base: {proc.stderr[-2000:]}")
    tmp.replace(out)


def make_tar(path: Path, files: dict[str, bytes | str | tuple[str, str]]) -> Path:
    """A layer tarball: bytes are files, 'dir' a folder, ('symlink', target) a link."""
    with tarfile.open(path, "w") as tar:
        for name in sorted(files):
            value = files[name]
            info = tarfile.TarInfo(name)
            info.mtime = 0
            if value == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            elif isinstance(value, tuple):
                info.type = tarfile.SYMTYPE
                info.linkname = value[1]
                tar.addfile(info)
            else:
                data = value if isinstance(value, bytes) else value.encode()
                info.size = len(data)
                executable = (
                    "git-sync",
                    "update-ca-certificates",
                    "tlsclient",
                    "update-ca-trust",
                    "app",
                )
                info.mode = 0o755 if name.endswith(executable) else 0o644
                tar.addfile(info, io.BytesIO(data))
    return path


def host_bundle() -> bytes:
    return Path("/etc/ssl/certs/ca-certificates.crt").read_bytes()


def alpine_layout(go_client: Path) -> dict[str, bytes | str | tuple[str, str]]:
    return {
        "etc": "dir",
        "etc/ssl": "dir",
        "etc/ssl/certs": "dir",
        "etc/os-release": 'NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.20.0\n',
        "etc/ssl/certs/ca-certificates.crt": host_bundle(),
        "etc/ssl/cert.pem": ("symlink", "certs/ca-certificates.crt"),
        "usr": "dir",
        "usr/local": "dir",
        "usr/local/share": "dir",
        "usr/local/share/ca-certificates": "dir",
        "usr/sbin/update-ca-certificates": "#!/bin/sh\n",
        "bin": "dir",
        "bin/sh": b"\x7fELF stand-in",
        "usr/bin/tlsclient": go_client.read_bytes(),
    }


def rhel_layout(go_client: Path) -> dict[str, bytes | str | tuple[str, str]]:
    bundle = "etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem"
    return {
        "etc": "dir",
        "etc/pki": "dir",
        "etc/pki/tls": "dir",
        "etc/pki/tls/certs": "dir",
        "etc/pki/ca-trust": "dir",
        "etc/pki/ca-trust/extracted": "dir",
        "etc/pki/ca-trust/extracted/pem": "dir",
        "etc/pki/ca-trust/source": "dir",
        "etc/pki/ca-trust/source/anchors": "dir",
        "etc/os-release": 'NAME="Red Hat Enterprise Linux"\nID="rhel"\nID_LIKE="fedora"\n',
        bundle: host_bundle(),
        "etc/pki/tls/certs/ca-bundle.crt": ("symlink", f"/{bundle}"),
        "etc/ssl": "dir",
        "etc/ssl/certs": ("symlink", "/etc/pki/tls/certs"),
        "usr": "dir",
        "usr/bin": "dir",
        "usr/bin/update-ca-trust": "#!/bin/sh\n",
        "usr/bin/tlsclient": go_client.read_bytes(),
    }


def gitsync_layout(go_client: Path) -> dict[str, bytes | str | tuple[str, str]]:
    """Like git-sync v4: FROM scratch, staged Debian files, no shell, no find, no openssl."""
    return {
        "etc": "dir",
        "etc/ssl": "dir",
        "etc/ssl/certs": "dir",
        "etc/ssl/certs/ca-certificates.crt": host_bundle(),
        "usr": "dir",
        "usr/sbin": "dir",
        "usr/sbin/update-ca-certificates": "#!/bin/sh\n# staged, but no shell to run it\n",
        "git-sync": go_client.read_bytes(),
    }


def skopeo_copy(*args: str, what: str) -> None:
    """``skopeo copy ARGS``; the test fails saying what could not be done, and why."""
    cmd = [require("skopeo"), "copy", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        pytest.fail(f"skopeo could not {what}: {proc.stderr[-1500:]}")


def push_zstd(ref: str, tar: Path, layout: Path) -> None:
    """An image whose one layer skopeo compresses with zstd while pushing it.

    skopeo recompresses only layers that arrive uncompressed, so the source is
    an OCI layout holding ``tar`` as is.
    """

    def blob(data: bytes) -> dict[str, object]:
        digest = hashlib.sha256(data).hexdigest()
        (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (layout / "blobs" / "sha256" / digest).write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    data = tar.read_bytes()
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar", **blob(data)}
    config = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
        "config": {},
    }
    config_desc = {
        "mediaType": "application/vnd.oci.image.config.v1+json",
        **blob(json.dumps(config).encode()),
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [layer],
    }
    entry = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        **blob(json.dumps(manifest).encode()),
        "annotations": {"org.opencontainers.image.ref.name": "img"},
    }
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    skopeo_copy(
        "--dest-tls-verify=false",
        "--dest-compress-format",
        "zstd",
        f"oci:{layout}:img",
        f"docker://{ref}",
        what="push the zstd image",
    )


def unpack_layers(ref: str, into: Path) -> Path:
    """The rootfs of a single-platform image without whiteouts, layers decompressed by skopeo
    (umoci 0.4.7 cannot read zstd layers)."""
    folder = into / "dir"
    into.mkdir(parents=True, exist_ok=True)
    skopeo_copy(
        "--src-tls-verify=false",
        "--dest-decompress",
        f"docker://{ref}",
        f"dir:{folder}",
        what=f"read {ref}",
    )
    manifest = json.loads((folder / "manifest.json").read_text())
    rootfs = into / "rootfs"
    rootfs.mkdir(parents=True)
    for layer in manifest["layers"]:
        with tarfile.open(folder / layer["digest"].removeprefix("sha256:")) as tar:
            tar.extractall(rootfs, filter="tar")
    return rootfs


def unpack(ref: str, into: Path, platform: str | None = None) -> Path:
    """skopeo copy to an OCI layout, then umoci unpack: the rootfs a runtime would see
    (of ``platform``, e.g. linux/arm64, when ``ref`` is an index)."""
    into.mkdir(parents=True, exist_ok=True)
    layout = into / "oci"
    bundle = into / "bundle"
    choose: list[str] = []
    if platform:
        os_name, arch = platform.split("/")[:2]
        choose = ["--override-os", os_name, "--override-arch", arch]
    skopeo_copy(
        *choose,
        "--src-tls-verify=false",
        f"docker://{ref}",
        f"oci:{layout}:img",
        what=f"read {ref}",
    )
    cmd = [require("umoci"), "unpack", "--image", f"{layout}:img", str(bundle)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        pytest.fail(f"umoci unpack failed for {ref}: {proc.stderr[-1500:]}")
    shutil.rmtree(layout)
    return bundle / "rootfs"


class KillSwitchProxy:
    """A TCP relay in front of a real registry that kills the registry process the moment
    a blob upload is being finished: a real crash at the worst time, not a fake server."""

    def __init__(self, registry: Registry, trigger: bytes = b"/blobs/uploads/") -> None:
        import socket
        import threading

        self.registry = registry
        self.trigger = trigger
        self.fired = threading.Event()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.host = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while not self._stop:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            port = int(self.registry.host.rsplit(":", 1)[1])
            try:
                upstream = socket.create_connection(("127.0.0.1", port), 5)
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: object, dst: object, inspect: bool) -> None:
        import socket

        assert isinstance(src, socket.socket) and isinstance(dst, socket.socket)
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if (
                    inspect
                    and not self.fired.is_set()
                    and data.startswith(b"PUT ")
                    and (self.trigger in data.split(b"\r\n", 1)[0])
                ):
                    self.fired.set()
                    self.registry.stop()  # kill -9 the real registry mid-upload
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def close(self) -> None:
        self._stop = True
        self.listener.close()


def openssl_verifies(bundle: Path, leaf: Path) -> bool:
    """Does ``openssl verify`` accept ``leaf`` (and its chain) with ``bundle`` as anchors?

    False only when openssl says the issuer is unknown (error 20: the CA is not in
    ``bundle``); any other failure (no such file, not PEM) fails the test with its words.
    """
    blocks = leaf.read_text().split("-----END CERTIFICATE-----")
    chain = [b + "-----END CERTIFICATE-----\n" for b in blocks if "BEGIN CERTIFICATE" in b]
    untrusted: list[str] = []
    if len(chain) > 1:
        rest = leaf.with_name(leaf.name + ".untrusted.pem")
        rest.write_text("".join(chain[1:]))
        untrusted = ["-untrusted", str(rest)]
    first = leaf.with_name(leaf.name + ".leaf.pem")
    first.write_text(chain[0])
    proc = subprocess.run(
        [require("openssl"), "verify", "-CAfile", str(bundle), *untrusted, str(first)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode == 0:
        return True
    said = proc.stdout + proc.stderr
    if UNTRUSTED["openssl verify"] not in said:
        pytest.fail(f"openssl verify -CAfile {bundle} {leaf} failed otherwise: {said[-1500:]}")
    return False


def count_certificates(bundle: Path) -> int:
    return bundle.read_text().count("-----BEGIN CERTIFICATE-----")
