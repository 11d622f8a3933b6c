"""An AI-workload-like image for the runtime trust tests, built from real parts and cached.

Layer 1 is a Debian bookworm minbase from mmdebstrap with python3, a JRE
(Debian's ``cacerts``, JKS), Node.js, curl and git. Layer 2 is ``/opt``:

* ``/opt/venv``, a real venv (owned by 1000:1000, as a notebook user's) where
  pip installed requests, certifi and grpcio from wheels downloaded from PyPI
  by this setup (pinned), offline inside a chroot of layer 1;
* ``/opt/conda``, a prefix laid out as conda lays one out: ``conda-meta/``,
  ``ssl/cacert.pem`` with ``ssl/cert.pem`` linking to it, its own certifi,
  and the package cache ``pkgs/`` holding a hard link of ``ssl/cacert.pem``
  (conda links installed files from there). Its Python is a venv interpreter;
  conda-forge is not reachable from this machine.

Filler layers (:func:`filler_layers`) bring the image to AI sizes: files of
half random, half zero bytes (compress about 2:1, like CUDA libraries),
deterministic from a seed, gzip-compressed once and cached.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.integration.conftest import require
from tests.integration.registry import IMAGES, debian_rootfs, locked

AI_PACKAGES = "ca-certificates,curl,default-jre-headless,git,nodejs,openssl,python3,python3-venv"
WHEELS = (
    "requests==2.32.3",
    "certifi==2024.8.30",
    "grpcio==1.66.2",
    "urllib3==2.2.3",
    "idna==3.10",
    "charset-normalizer==3.4.0",
)
NOTEBOOK_UID = 1000
_REVISION = "r1"  # bump when the /opt layer's recipe changes


def wheels() -> Path:
    """The pinned wheels for CPython 3.11 on x86_64 (Debian bookworm's python3)."""
    key = hashlib.sha256("\n".join(WHEELS).encode()).hexdigest()[:12]
    out = IMAGES / f"wheels-{key}"
    if out.exists():
        return out
    with locked(out):
        if not out.exists():
            tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            proc = subprocess.run(
                [
                    sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                    "--only-binary=:all:", "--platform", "manylinux2014_x86_64",
                    "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
                    "-d", str(tmp), *WHEELS,
                ],
                capture_output=True, text=True, timeout=600, check=False,
            )  # fmt: skip
            if proc.returncode != 0:
                pytest.fail(f"pip download of the test wheels failed: {proc.stderr[-1500:]}")
            tmp.replace(out)
    return out


def ai_layers() -> tuple[Path, Path]:
    """(Debian base tar, /opt tar), both cached."""
    base = debian_rootfs(AI_PACKAGES)
    found = wheels()
    key = hashlib.sha256(f"{base.name}{found.name}{_REVISION}".encode()).hexdigest()[:12]
    out = IMAGES / f"ai-opt-{key}.tar"
    if out.exists():
        return base, out
    with locked(out):
        if not out.exists():
            _build_opt(base, found, out)
    return base, out


def _run(what: str, *cmd: str | Path) -> None:
    proc = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=600, check=False
    )
    if proc.returncode != 0:
        pytest.fail(f"{what} failed ({proc.returncode}): {proc.stderr[-1500:]}")


def _build_opt(base: Path, found: Path, out: Path) -> None:
    work = out.with_name(f"{out.stem}.{os.getpid()}.work")
    shutil.rmtree(work, ignore_errors=True)
    root = work / "root"
    root.mkdir(parents=True)
    try:
        _run("unpack the Debian base", "tar", "-C", root, "-xf", base)
        shutil.copytree(found, root / "tmp" / "wheels")
        script = f"""
set -e
mount -t proc proc {root}/proc
trap 'umount {root}/proc' EXIT
in_root() {{ chroot {root} env -i PATH=/usr/bin:/bin HOME=/root "$@"; }}
in_root python3 -m venv /opt/venv
in_root /opt/venv/bin/pip install --quiet --no-index --find-links /tmp/wheels \
    requests certifi grpcio
in_root python3 -m venv /opt/conda
in_root /opt/conda/bin/pip install --quiet --no-index --find-links /tmp/wheels requests certifi
"""
        _run("install the Python environments", require("unshare"), "-m", "sh", "-ec", script)
        conda = root / "opt" / "conda"
        (conda / "conda-meta").mkdir()
        (conda / "conda-meta" / "history").write_text("==> 2024-09-01 00:00:00 <==\n")
        (conda / "conda-meta" / "ca-certificates-2024.8.30-h06a4308_0.json").write_text(
            json.dumps({"name": "ca-certificates", "version": "2024.8.30"})
        )
        certifi = next(conda.glob("lib/python3*/site-packages/certifi/cacert.pem"))
        cached = conda / "pkgs" / "ca-certificates-2024.8.30-h06a4308_0" / "ssl"
        cached.mkdir(parents=True)
        shutil.copyfile(certifi, cached / "cacert.pem")
        (conda / "ssl").mkdir()
        os.link(cached / "cacert.pem", conda / "ssl" / "cacert.pem")
        (conda / "ssl" / "cert.pem").symlink_to("cacert.pem")
        for path in [root / "opt" / "venv", *(root / "opt" / "venv").rglob("*")]:
            os.lchown(path, NOTEBOOK_UID, NOTEBOOK_UID)
        tmp = out.with_name(f"{out.stem}.{os.getpid()}.tmp")
        _run(
            "tar the /opt layer",
            "tar", "-C", root, "--numeric-owner", "--sort=name", "--mtime=@0", "-cf", tmp, "opt",
        )  # fmt: skip
        tmp.replace(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def extra_layer(path: Path, files: dict[str, bytes]) -> Path:
    """A small layer tarball of regular files (mode 0644, root-owned)."""
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def filler_layers(sizes_mib: tuple[int, ...]) -> list[tuple[Path, str]]:
    """Gzip-compressed layers of the given sizes (uncompressed MiB), each one big file
    under usr/local/cuda/lib64; (blob path, diff_id). Cached."""
    from isal import igzip

    out = []
    for number, size in enumerate(sizes_mib):
        blob = IMAGES / f"filler-{number}-{size}m.tar.gz"
        meta = blob.with_suffix(".diffid")
        if not (blob.exists() and meta.exists()):
            with locked(blob):
                if not (blob.exists() and meta.exists()):
                    _write_filler(blob, meta, number, size, igzip)
        out.append((blob, meta.read_text().strip()))
    return out


def _write_filler(blob: Path, meta: Path, number: int, size: int, igzip: object) -> None:
    tmp = blob.with_name(f"{blob.name}.{os.getpid()}.tmp")
    name = f"usr/local/cuda/lib64/libfiller{number}.so"
    info = tarfile.TarInfo(name)
    info.size = size << 20
    info.mode = 0o755
    header = info.tobuf(format=tarfile.USTAR_FORMAT)
    digest = hashlib.sha256()
    with igzip.open(tmp, "wb", compresslevel=1) as gz:  # type: ignore[attr-defined]

        def write(data: bytes) -> None:
            digest.update(data)
            gz.write(data)

        write(header)
        half = 1 << 19
        for i in range(size):
            seed = number.to_bytes(4, "big") + i.to_bytes(4, "big")
            write(hashlib.shake_128(seed).digest(half) + bytes(half))
        write(bytes(1024))  # two zero blocks end the archive
    meta.write_text("sha256:" + digest.hexdigest())
    tmp.replace(blob)


def push_oci(
    ref: str, layers: list[tuple[Path, str, str]], env: list[str], skopeo_tls: bool = False
) -> None:
    """An OCI image of the given (blob, diff_id, media type) layers, written as an OCI
    layout and pushed by skopeo (the blobs are hard-linked, never copied in memory)."""
    layout = IMAGES / f"layout-{os.getpid()}-{hashlib.sha256(ref.encode()).hexdigest()[:8]}"
    shutil.rmtree(layout, ignore_errors=True)
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    descriptors = []
    for path, _diff_id, media in layers:
        digest = _file_digest(path)
        target = blobs / digest
        if not target.exists():
            try:
                os.link(path, target)
            except OSError:
                shutil.copyfile(path, target)
        descriptors.append(
            {"mediaType": media, "digest": f"sha256:{digest}", "size": path.stat().st_size}
        )
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": env, "Cmd": ["/bin/bash"]},
        "rootfs": {"type": "layers", "diff_ids": [d for _, d, _ in layers]},
        "history": [{"created_by": f"layer {i}"} for i in range(len(layers))],
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": _put(
            blobs, json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"
        ),
        "layers": descriptors,
    }
    top = _put(blobs, json.dumps(manifest).encode(), manifest["mediaType"])
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [{**top, "annotations": {"org.opencontainers.image.ref.name": "img"}}],
            }
        )
    )
    try:
        proc = subprocess.run(
            [require("skopeo"), "copy", "--quiet", f"--dest-tls-verify={str(skopeo_tls).lower()}",
             f"oci:{layout}:img", f"docker://{ref}"],
            capture_output=True, text=True, timeout=1200, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            pytest.fail(f"skopeo could not push {ref}: {proc.stderr[-1500:]}")
    finally:
        shutil.rmtree(layout, ignore_errors=True)


def _file_digest(path: Path) -> str:
    cache = path.with_name(path.name + ".sha256")
    if cache.exists() and cache.stat().st_mtime >= path.stat().st_mtime:
        return cache.read_text().strip()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    cache.write_text(digest.hexdigest())
    return digest.hexdigest()


def _put(blobs: Path, data: bytes, media: str) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return {"mediaType": media, "digest": f"sha256:{digest}", "size": len(data)}


def gzip_layer(tar: Path) -> tuple[Path, str]:
    """(gzip blob, diff_id) of an uncompressed layer tarball, cached next to it."""
    from isal import igzip

    blob = tar.with_name(tar.name + ".gz")
    meta = tar.with_name(tar.name + ".diffid")
    if blob.exists() and meta.exists():
        return blob, meta.read_text().strip()
    with locked(blob):
        if not (blob.exists() and meta.exists()):
            digest = hashlib.sha256()
            tmp = blob.with_name(f"{blob.name}.{os.getpid()}.tmp")
            with open(tar, "rb") as src, igzip.open(tmp, "wb", compresslevel=1) as gz:
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
                    gz.write(chunk)
            meta.write_text("sha256:" + digest.hexdigest())
            tmp.replace(blob)
    return blob, meta.read_text().strip()
