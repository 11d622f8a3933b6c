"""What the benchmarks share: real peers on this machine, the test images, timing, peak RSS.

The benches set airtrust against the tools people use today, on real peers:
Debian's docker-registry on 127.0.0.1, images built with mmdebstrap and
pushed with crane or skopeo, an apiserver from scripts/testcluster. They are
not tests, so nothing here imports tests/ (pytest, fixtures) and a missing
tool ends the bench with the reason (SystemExit), not a test failure.

The registry speaks plain HTTP: airtrust allows that for loopback registries
only, and so do the peers with ``--insecure`` / ``--tls-verify=false``; the CA
a bench makes with ``airtrust quickstart`` is the one patched into images.

The image recipes are those of tests/integration/registry.py and aiimage.py,
under the same cache names in ~/.cache/airtrust/images and behind the same
locks, so a bench reuses what a test run built and the other way round:
change a recipe in both places, and bump ``_REVISION`` when the /opt layer's
recipe changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

__all__ = [
    "AIRTRUST",
    "CACHE",
    "CRANE",
    "GZIP",
    "KUBECTL",
    "ROOT",
    "Ran",
    "Registry",
    "ai_layers",
    "airtrust_peak",
    "buildah_patch",
    "crane",
    "debian_rootfs",
    "filler_layers",
    "gzip_layer",
    "push_oci",
    "push_tar",
    "quickstart",
    "require",
    "started_cluster",
    "started_registry",
    "timed",
    "timed_peak",
]

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("AIRTRUST_CACHE", Path.home() / ".cache" / "airtrust"))
IMAGES = CACHE / "images"
AIRTRUST = str(Path(sys.executable).parent / "airtrust")
#: Built by scripts/build-testbins (scripts/test runs it).
CRANE = str(CACHE / "bin" / "crane")
KUBECTL = str(CACHE / "bin" / "kubectl")
GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
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
_REVISION = "r1"  # as in tests/integration/aiimage.py: the /opt layer's recipe
#: How often deadline loops look again.
POLL = 0.05


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise SystemExit(f"{tool} is not installed; run scripts/test (or apt-get install it)")
    return path


# --- timing and peak RSS ----------------------------------------------------------------


@dataclass(frozen=True)
class Ran:
    """A command that succeeded: its wall time and output."""

    seconds: float
    stdout: str
    stderr: str


def timed(cmd: Sequence[str], env: Mapping[str, str] | None = None) -> Ran:
    """Run ``cmd`` (``env`` on top of ours); a failure ends the bench with its stderr."""
    start = time.perf_counter()
    proc = subprocess.run(
        list(cmd), capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed: {proc.stderr[-2000:]}")
    return Ran(elapsed, proc.stdout, proc.stderr)


def timed_peak(cmd: Sequence[str], env: Mapping[str, str] | None = None) -> tuple[Ran, int]:
    """(run, peak KiB) of a tool, measured by GNU time (``%M``, the kernel's maxrss of
    the child and its reaped children, so buildah's helpers count)."""
    ran = timed([require("time"), "-f", "PEAK %M", *cmd], env)
    peaks = [int(line.split()[1]) for line in ran.stderr.splitlines() if line.startswith("PEAK")]
    return ran, peaks[-1]


#: Runs the CLI in this interpreter, then writes VmHWM (the high-water mark of this
#: process's resident set, threads included, kept by the kernel) to the file argv[1].
#: Read in the process itself: a child's maxrss from wait4 also counts its parent's
#: high-water mark when the parent spawned it with vfork, as subprocess does.
_VMHWM = """
import sys
from pathlib import Path

out = Path(sys.argv[1])
sys.argv = ["airtrust", *sys.argv[2:]]
from airtrust.cli.entry import run

try:
    run()
finally:
    status = Path("/proc/self/status").read_text().splitlines()
    out.write_text(next(s for s in status if s.startswith("VmHWM:")).split()[1])
"""


def airtrust_peak(args: Sequence[str], env: Mapping[str, str] | None = None) -> tuple[Ran, int]:
    """(run, peak KiB) of ``airtrust ARGS``."""
    with tempfile.TemporaryDirectory(prefix="airtrust-bench-") as tmp:
        out = Path(tmp) / "vmhwm"
        ran = timed([sys.executable, "-c", _VMHWM, str(out), *args], env)
        return ran, int(out.read_text())


def quickstart(out: Path, domain: str = "bench.example.test") -> Path:
    """``airtrust quickstart`` into ``out``; the CA bundle it wrote."""
    timed([AIRTRUST, "quickstart", "--domain", domain, "--out", str(out)])
    return out / "ca-bundle.pem"


# --- servers ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early ({proc.returncode}): {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(POLL)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@dataclass(frozen=True)
class Registry:
    host: str
    folder: Path


@contextlib.contextmanager
def started_registry(folder: Path) -> Iterator[Registry]:
    """Debian's docker-registry (distribution 2.8) on a free port of 127.0.0.1."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(folder / "data")},
            "delete": {"enabled": True},
        },
        "http": {"addr": f"127.0.0.1:{port}", "headers": {"X-Content-Type-Options": ["nosniff"]}},
    }
    path = folder / "config.yml"
    path.write_text(yaml.safe_dump(config))
    log = folder / "registry.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [require("docker-registry"), "serve", str(path)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_for_port(port, proc, log)
        yield Registry(f"127.0.0.1:{port}", folder)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@contextlib.contextmanager
def started_cluster(folder: Path) -> Iterator[Path]:
    """A kube-apiserver + etcd from scripts/testcluster; its kubeconfig (context 'admin')."""
    testcluster = str(ROOT / "scripts" / "testcluster")
    subprocess.run([testcluster, "up", str(folder)], check=True)
    try:
        yield folder / "kubeconfig"
    finally:
        subprocess.run([testcluster, "down", str(folder)], check=True)


# --- images -----------------------------------------------------------------------------


def crane(*args: str) -> str:
    if not Path(CRANE).exists():
        raise SystemExit(f"{CRANE} is missing; run scripts/build-testbins (scripts/test does)")
    proc = subprocess.run([CRANE, *args], capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"crane {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout.strip()


def push_tar(ref: str, tar: Path) -> None:
    """An OCI image FROM scratch with ``tar`` as its only layer (linux/amd64), by crane."""
    crane("append", "-f", str(tar), "-t", ref, "--insecure", "--oci-empty-base")
    # crane's empty base has no os/arch
    crane("mutate", ref, "-t", ref, "--insecure", "--set-platform", "linux/amd64")


def buildah_patch(base: str, host: str, ca: Path, work: Path, tag: str) -> tuple[float, int]:
    """What people do today: buildah bud of the documented Dockerfile (COPY anchors/ +
    RUN update-ca-certificates, --isolation chroot, base pulled fresh) + buildah push to
    ``host``/bench/buildah:``tag``, which fixes only the OS store. (seconds for both, peak
    KiB of the larger of the two.) Needs root."""
    ctx = work / "ctx"
    (ctx / "anchors").mkdir(parents=True, exist_ok=True)
    shutil.copy(ca, ctx / "anchors" / "local-ca.crt")
    (ctx / "Dockerfile").write_text(
        f"FROM {base}\nCOPY anchors/ /usr/local/share/ca-certificates/\n"
        "RUN update-ca-certificates\n"
    )
    subprocess.run(["buildah", "rmi", "--all", "--force"], capture_output=True, check=False)
    bud, bud_peak = timed_peak(
        ["buildah", "bud", "--isolation", "chroot", "--tls-verify=false", "--pull-always",
         "-q", "-t", f"localhost/bench:{tag}", str(ctx)]
    )  # fmt: skip
    push, push_peak = timed_peak(
        ["buildah", "push", "--tls-verify=false", "-q", f"localhost/bench:{tag}",
         f"docker://{host}/bench/buildah:{tag}"]
    )  # fmt: skip
    return bud.seconds + push.seconds, max(bud_peak, push_peak)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Serialise builds of one cached artifact across processes (a bench and a test run
    at once): one build at a time, the others then reuse it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / (path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _check(what: str, *cmd: str | Path, timeout: float = 600) -> None:
    proc = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed ({proc.returncode}): {proc.stderr[-1500:]}")


def debian_rootfs(packages: str) -> Path:
    """A Debian bookworm minbase tarball with ``packages``, from mmdebstrap, cached."""
    key = hashlib.sha256(packages.encode()).hexdigest()[:12]
    out = IMAGES / f"debian-bookworm-{key}.tar"
    if out.exists():
        return out
    with locked(out):
        if not out.exists():
            # mmdebstrap writes a tarball only when the name ends in .tar (else a directory).
            tmp = out.parent / f"{out.stem}.{os.getpid()}.tmp.tar"
            _check(
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
            _check(
                "pip download of the wheels",
                sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                "--only-binary=:all:", "--platform", "manylinux2014_x86_64",
                "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
                "-d", tmp, *WHEELS,
            )  # fmt: skip
            tmp.replace(out)
    return out


def ai_layers() -> tuple[Path, Path]:
    """The AI workload image as (Debian base tar, /opt tar), both cached.

    The base is a minbase with :data:`AI_PACKAGES`. /opt holds ``/opt/venv``, a real
    venv owned by 1000:1000 (a notebook user's) where pip installed requests, certifi
    and grpcio offline inside a chroot of the base, and ``/opt/conda``, a prefix laid
    out as conda lays one out: ``conda-meta/``, ``ssl/cacert.pem`` with ``ssl/cert.pem``
    linking to it, its own certifi, and ``pkgs/`` holding a hard link of the bundle.
    """
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
        _check("unpack the Debian base", "tar", "-C", root, "-xf", base)
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
        _check("install the Python environments", require("unshare"), "-m", "sh", "-ec", script)
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
        _check(
            "tar the /opt layer",
            "tar", "-C", root, "--numeric-owner", "--sort=name", "--mtime=@0", "-cf", tmp, "opt",
        )  # fmt: skip
        tmp.replace(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _write_gzip(chunks: Iterable[bytes], blob: Path, meta: Path) -> None:
    """Gzip ``chunks`` into ``blob`` with ISA-L (level 1) and their diff_id into ``meta``;
    ``blob`` appears whole or not at all."""
    from isal import isal_zlib

    tmp = blob.with_name(f"{blob.name}.{os.getpid()}.tmp")
    digest = hashlib.sha256()
    deflater = isal_zlib.compressobj(1, isal_zlib.DEFLATED, 31)  # 31: a gzip stream
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
    """Gzip layers of the given sizes (uncompressed MiB), each one file under
    usr/local/cuda/lib64 of half random, half zero bytes (about 2:1, like CUDA
    libraries), deterministic from a seed; (blob, diff_id), cached."""
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


def push_oci(ref: str, layers: Sequence[tuple[Path, str, str]], env: list[str]) -> None:
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
        _check(
            f"skopeo push of {ref}",
            require("skopeo"), "copy", "--quiet", "--dest-tls-verify=false",
            f"oci:{layout}:img", f"docker://{ref}",
            timeout=1200,
        )  # fmt: skip
    finally:
        shutil.rmtree(layout, ignore_errors=True)


def _file_digest(path: Path) -> str:
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
