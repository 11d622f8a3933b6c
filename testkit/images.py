"""Test images from real parts, built once and cached in ~/.cache/airtrust/images.

* :func:`debian_rootfs`: a Debian bookworm minbase from mmdebstrap with the
  packages asked for.
* :func:`ai_layers`: the AI workload image. Layer 1 is a minbase with
  :data:`AI_PACKAGES` (python3, a JRE with Debian's JKS ``cacerts``, Node.js,
  curl, git). Layer 2 is ``/opt``: ``/opt/venv``, a real venv owned by
  1000:1000 (a notebook user's) where pip installed requests, certifi and
  grpcio offline inside a chroot of layer 1 from pinned PyPI wheels, and
  ``/opt/conda``, a prefix laid out as conda lays one out: ``conda-meta/``,
  ``ssl/cacert.pem`` with ``ssl/cert.pem`` linking to it, its own certifi, and
  the package cache ``pkgs/`` holding a hard link of ``ssl/cacert.pem`` (conda
  links installed files from there). Its Python is a venv interpreter:
  conda-forge is not reachable from this machine.
* :func:`filler_layers`: layers that bring an image to AI sizes, files of half
  random, half zero bytes (compress about 2:1, like CUDA libraries),
  deterministic from a seed.

Layers are gzipped once with ISA-L at level 1, with a fixed header (no time,
no name): the same bytes, so the same blob digest, on every machine. Each
cached artifact appears whole or not at all, built under a lock
(:func:`testkit.locked`). Bump :data:`_REVISION` when the /opt layer's recipe
changes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from testkit import CRANE, IMAGES, SetupFailed, locked, require, run_checked

__all__ = [
    "AI_PACKAGES",
    "DEBIAN_PACKAGES",
    "GZIP",
    "NOTEBOOK_UID",
    "WHEELS",
    "ai_layers",
    "crane",
    "debian_rootfs",
    "filler_layers",
    "gzip_layer",
    "push_oci",
    "push_tar",
    "small_layer",
    "wheels",
]

GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
#: What the image tests run inside a Debian base.
DEBIAN_PACKAGES = "ca-certificates,curl,git,python3,openssl"
#: The AI workload image's base: a JRE (JKS cacerts), Node.js, and python3 for the venvs.
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

#: A layer for :func:`push_oci`: (blob, diff_id, media type).
Layer = tuple[Path, str, str]


def small_layer(
    files: Mapping[str, bytes], *, uid: int = 0, links: Mapping[str, str] | None = None
) -> bytes:
    """A gzipped layer of a few regular files (owned by ``uid``) then symlinks
    (name -> target), made in memory: for tests whose layers need no cache."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.uid = len(data), uid
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            link = tarfile.TarInfo(name)
            link.type, link.linkname = tarfile.SYMTYPE, target
            tar.addfile(link)
    return gzip.compress(raw.getvalue(), mtime=0)


def crane(*args: str, env: Mapping[str, str] | None = None) -> str:
    """``crane ARGS`` (scripts/build-testbins builds it); its stdout, stripped."""
    if not CRANE.exists():
        raise SetupFailed(f"{CRANE} is missing; run scripts/build-testbins (scripts/test does)")
    proc = subprocess.run(
        [str(CRANE), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise SetupFailed(f"crane {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout.strip()


def push_tar(
    ref: str,
    tar: Path,
    *,
    entrypoint: Sequence[str] | None = None,
    user: str | None = None,
    platform: str = "linux/amd64",
    oci: bool = True,
    env: Mapping[str, str] | None = None,
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


def debian_rootfs(packages: str = DEBIAN_PACKAGES) -> Path:
    """A Debian bookworm minbase tarball with ``packages``, from mmdebstrap, cached."""
    key = hashlib.sha256(packages.encode()).hexdigest()[:12]
    out = IMAGES / f"debian-bookworm-{key}.tar"
    if out.exists():
        return out
    with locked(out):
        if not out.exists():
            # mmdebstrap writes a tarball only when the name ends in .tar (else a directory).
            tmp = out.parent / f"{out.stem}.{os.getpid()}.tmp.tar"
            run_checked(
                "mmdebstrap (the Debian base)",
                require("mmdebstrap"), "--variant=minbase", f"--include={packages}",
                "--mode=root", "--quiet", "bookworm", tmp, "http://deb.debian.org/debian",
                timeout=1200,
            )  # fmt: skip
            tmp.replace(out)
    return out


def wheels() -> Path:
    """The pinned wheels for CPython 3.11 on x86_64 (Debian bookworm's python3), cached."""
    key = hashlib.sha256("\n".join(WHEELS).encode()).hexdigest()[:12]
    out = IMAGES / f"wheels-{key}"
    if out.exists():
        return out
    with locked(out):
        if not out.exists():
            tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            run_checked(
                "pip download of the test wheels",
                sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                "--only-binary=:all:", "--platform", "manylinux2014_x86_64",
                "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
                "-d", tmp, *WHEELS,
            )  # fmt: skip
            tmp.replace(out)
    return out


def ai_layers() -> tuple[Path, Path]:
    """The AI workload image as (Debian base tar, /opt tar), both cached."""
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


def _build_opt(base: Path, found: Path, out: Path) -> None:
    work = out.with_name(f"{out.stem}.{os.getpid()}.work")
    shutil.rmtree(work, ignore_errors=True)
    root = work / "root"
    root.mkdir(parents=True)
    try:
        run_checked("unpack the Debian base", "tar", "-C", root, "-xf", base)
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
        run_checked(
            "install the Python environments", require("unshare"), "-m", "sh", "-ec", script
        )
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
        run_checked(
            "tar the /opt layer",
            "tar", "-C", root, "--numeric-owner", "--sort=name", "--mtime=@0", "-cf", tmp, "opt",
        )  # fmt: skip
        tmp.replace(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _write_gzip(chunks: Iterable[bytes], blob: Path, meta: Path) -> None:
    """Gzip ``chunks`` into ``blob`` with ISA-L (level 1: the filler compresses 2:1 at any
    level, and a 2 GiB layer must not cost a minute) and their diff_id into ``meta``;
    ``blob`` appears whole or not at all."""
    from isal import isal_zlib

    tmp = blob.with_name(f"{blob.name}.{os.getpid()}.tmp")
    digest = hashlib.sha256()
    deflater = isal_zlib.compressobj(1, isal_zlib.DEFLATED, 31)  # 31: a gzip stream, mtime 0
    with open(tmp, "wb") as out:
        for chunk in chunks:
            digest.update(chunk)
            out.write(deflater.compress(chunk))
        out.write(deflater.flush())
    meta.write_text("sha256:" + digest.hexdigest())
    tmp.replace(blob)


def _read_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            yield chunk


def gzip_layer(tar: Path) -> tuple[Path, str]:
    """(gzip blob, diff_id) of an uncompressed layer tarball, cached next to it."""
    blob = tar.with_name(tar.name + ".gz")
    meta = tar.with_name(tar.name + ".diffid")
    if not (blob.exists() and meta.exists()):
        with locked(blob):
            if not (blob.exists() and meta.exists()):
                _write_gzip(_read_chunks(tar), blob, meta)
    return blob, meta.read_text().strip()


def filler_layers(sizes_mib: Sequence[int]) -> list[tuple[Path, str]]:
    """Gzip layers of the given sizes (uncompressed MiB), each one big file under
    usr/local/cuda/lib64; (blob, diff_id), cached."""
    out = []
    for number, size in enumerate(sizes_mib):
        blob = IMAGES / f"filler-{number}-{size}m.tar.gz"
        meta = blob.with_suffix(".diffid")
        if not (blob.exists() and meta.exists()):
            with locked(blob):
                if not (blob.exists() and meta.exists()):
                    _write_gzip(_filler_tar(number, size), blob, meta)
        out.append((blob, meta.read_text().strip()))
    return out


def _filler_tar(number: int, size: int) -> Iterator[bytes]:
    info = tarfile.TarInfo(f"usr/local/cuda/lib64/libfiller{number}.so")
    info.size = size << 20
    info.mode = 0o755
    yield info.tobuf(format=tarfile.USTAR_FORMAT)
    half = 1 << 19
    for i in range(size):
        seed = number.to_bytes(4, "big") + i.to_bytes(4, "big")
        yield hashlib.shake_128(seed).digest(half) + bytes(half)
    yield bytes(1024)  # two zero blocks end the archive


def push_oci(ref: str, layers: Sequence[Layer], env: Sequence[str], tls: bool = False) -> None:
    """An OCI image of ``layers`` with ``env`` in its config, written as an OCI layout and
    pushed by skopeo (the blobs are hard-linked, never copied in memory); ``tls``: the
    registry speaks TLS and skopeo verifies it."""
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
        "config": {"Env": list(env), "Cmd": ["/bin/bash"]},
        "rootfs": {"type": "layers", "diff_ids": [d for _, d, _ in layers]},
        "history": [{"created_by": f"layer {i}"} for i in range(len(layers))],
    }
    media = "application/vnd.oci.image.manifest.v1+json"
    manifest = {
        "schemaVersion": 2,
        "mediaType": media,
        "config": _put(
            blobs, json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"
        ),
        "layers": descriptors,
    }
    top = _put(blobs, json.dumps(manifest).encode(), media)
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
        run_checked(
            f"skopeo push of {ref}",
            require("skopeo"), "copy", "--quiet", f"--dest-tls-verify={str(tls).lower()}",
            f"oci:{layout}:img", f"docker://{ref}",
            timeout=1200,
        )  # fmt: skip
    finally:
        shutil.rmtree(layout, ignore_errors=True)


def _file_digest(path: Path) -> str:
    """sha256 of a (large) blob, remembered next to it while the blob is unchanged."""
    cache = path.with_name(path.name + ".sha256")
    if cache.exists() and cache.stat().st_mtime >= path.stat().st_mtime:
        return cache.read_text().strip()
    digest = hashlib.sha256()
    for chunk in _read_chunks(path):
        digest.update(chunk)
    cache.write_text(digest.hexdigest())
    return digest.hexdigest()


def _put(blobs: Path, data: bytes, media: str) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return {"mediaType": media, "digest": f"sha256:{digest}", "size": len(data)}
