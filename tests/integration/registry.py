"""Test images and the registry they live in, for the integration tests.

The registry (Debian's docker-registry, i.e. distribution 2.8, on 127.0.0.1)
and the cached images (mmdebstrap's Debian base, crane pushes) are testkit's,
the recipes the benches use too; this module adds what only tests need: small
layouts of other distributions, reading images back with skopeo and umoci,
a registry killed mid-upload, and openssl's verdict on a bundle.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from testkit import CRANE, IMAGES, locked
from testkit.images import DEBIAN_PACKAGES, crane, debian_rootfs, push_tar
from testkit.registry import Registry, started_registry

from tests.integration.conftest import UNTRUSTED, require

__all__ = [
    "CRANE",
    "DEBIAN_PACKAGES",
    "IMAGES",
    "KillSwitchProxy",
    "Registry",
    "alpine_layout",
    "count_certificates",
    "crane",
    "debian_rootfs",
    "gitsync_layout",
    "host_bundle",
    "locked",
    "make_tar",
    "openssl_verifies",
    "push_tar",
    "push_zstd",
    "rhel_layout",
    "skopeo_copy",
    "started_registry",
    "unpack",
    "unpack_layers",
]


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
    (of ``platform``, e.g. linux/arm64, when ``ref`` is an index). ``ref`` is a registry
    reference or ``oci-archive:FILE``."""
    into.mkdir(parents=True, exist_ok=True)
    layout = into / "oci"
    bundle = into / "bundle"
    choose: list[str] = []
    if platform:
        os_name, arch = platform.split("/")[:2]
        choose = ["--override-os", os_name, "--override-arch", arch]
    if ref.startswith("oci-archive:"):  # a layout tarball, as the bundle carries one
        source = [ref]
    else:
        source = ["--src-tls-verify=false", f"docker://{ref}"]
    skopeo_copy(*choose, *source, f"oci:{layout}:img", what=f"read {ref}")
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
