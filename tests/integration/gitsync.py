"""A faithful registry.k8s.io/git-sync/git-sync:v4.4.0 for tests, built offline.

The image is not pullable here, so it is rebuilt the way its ``Dockerfile.in``
builds it, from the upstream source at tag v4.4.0 in
``shared/thirdparty/git-sync-v4.4.0.tar.gz`` (Apache-2.0, with its vendor/ tree):

1. the real binary: ``GOFLAGS=-mod=vendor go build`` of that source;
2. the ``base`` stage: Debian bookworm (mmdebstrap) where upstream's own
   ``stage_binaries.sh`` stages the listed packages, binaries and files exactly
   as ``Dockerfile.in`` runs it (read from the tarball, never copied here);
3. the ``intermediate`` stage: the same deletions (openssl, c_rehash, ...), the
   git-sync user and group, ``/git`` (02775, 65533:65533), licenses, the binary;
4. the final config: ``USER 65533:65533``, ``HOME=/tmp``, ``WORKDIR /tmp``,
   ``GITSYNC_ROOT=/git``, ``ENTRYPOINT ["/git-sync"]``.

The root filesystem tar is cached under ~/.cache/airtrust/images by the source's
digest and this recipe's version; concurrent builds wait on a lock.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from tests.conftest import SHARED
from tests.integration.conftest import CACHE, require
from tests.integration.registry import IMAGES, crane, locked, push_tar

SOURCE = SHARED / "thirdparty" / "git-sync-v4.4.0.tar.gz"
VERSION = "v4.4.0"
#: Bump when the build below changes: cached images of older recipes are not used.
RECIPE = 1
MIRROR = "http://deb.debian.org/debian"

# Dockerfile.in, base stage: `stage_binaries.sh -o STAGING -p ... -b ... -f ...`.
STAGE_ARGS = (
    *("-p", "base-files", "-p", "bash", "-p", "coreutils", "-p", "git"),
    *("-p", "openssh-client", "-p", "ca-certificates", "-p", "curl", "-p", "socat"),
    *("-b", "/bin/grep", "-b", "/bin/sed"),
    *("-f", "/etc/debian_version", "-f", "/etc/group", "-f", "/etc/nsswitch.conf"),
    *("-f", "/etc/os-release", "-f", "/etc/passwd", "-f", "/tmp"),
)
# Dockerfile.in, intermediate stage: `RUN rm -rf ...` (specific to bookworm).
DELETE = (
    "usr/share/base-files",
    "usr/share/doc",
    "usr/share/man",
    "usr/lib/*-linux-gnu/gconv",
    "usr/bin/c_rehash",
    "usr/bin/git-shell",
    "usr/bin/openssl",
    "usr/bin/scalar",
    "usr/bin/scp",
    "usr/bin/sftp",
    "usr/bin/ssh-add",
    "usr/bin/ssh-agent",
    "usr/bin/ssh-keygen",
    "usr/bin/ssh-keyscan",
    "usr/lib/git-core/git-shell",
    "usr/lib/git-core/git-daemon",
    "usr/lib/git-core/git-http-backend",
    "usr/lib/git-core/git-http-fetch",
    "usr/lib/git-core/git-http-push",
    "usr/lib/git-core/git-imap-send",
    "usr/lib/openssh/ssh-keysign",
    "usr/lib/openssh/ssh-pkcs11-helper",
    "usr/lib/openssh/ssh-sk-helper",
    "usr/share/gitweb",
)
#: The final image's config, as Dockerfile.in sets it.
USER = "65533:65533"
ENV = {"HOME": "/tmp", "GITSYNC_ROOT": "/git"}
WORKDIR = "/tmp"
ENTRYPOINT = ["/git-sync"]
#: What a container runtime puts in PATH when the image sets none (git-sync sets none).
RUNTIME_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _key() -> str:
    if not SOURCE.exists():
        pytest.fail(f"{SOURCE} is missing: the git-sync source comes with shared/thirdparty")
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    return f"{digest}-r{RECIPE}"


def _run(what: str, *cmd: str | Path, timeout: int = 1800, **kw: object) -> str:
    proc = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, check=False, **kw
    )  # type: ignore[call-overload]
    if proc.returncode != 0:
        pytest.fail(f"{what} failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-2500:]}")
    return str(proc.stdout)


def _source(into: Path) -> Path:
    with tarfile.open(SOURCE) as tar:
        tar.extractall(into, filter="tar")
    (top,) = [p for p in into.iterdir() if p.is_dir()]
    return top


def gitsync_binary() -> Path:
    """The real git-sync v4.4.0 binary, built from the vendored source (cached)."""
    out = CACHE / "bin" / f"git-sync-{VERSION}-{_key()}"
    if out.exists():
        return out
    with locked(out):
        if out.exists():
            return out
        go = shutil.which("go") or "/usr/local/go/bin/go"
        with tempfile.TemporaryDirectory(prefix="git-sync-src-") as tmp:
            src = _source(Path(tmp))
            built = Path(tmp) / "git-sync"
            _run(
                "go build of git-sync",
                go,
                "build",
                "-trimpath",
                "-ldflags",
                f"-s -w -X k8s.io/git-sync/pkg/version.VERSION={VERSION}",
                "-o",
                built,
                ".",
                cwd=src,
                env={
                    **os.environ,
                    "GOFLAGS": "-mod=vendor",
                    "CGO_ENABLED": "0",
                    "GOTOOLCHAIN": "local",
                },
            )
            tmp_out = out.parent / f"{out.name}.{os.getpid()}.tmp"
            shutil.copy2(built, tmp_out)
            tmp_out.replace(out)
    return out


def gitsync_rootfs_tar() -> Path:
    """The image's root filesystem as one layer tar (numeric owners kept), cached."""
    out = IMAGES / f"git-sync-{VERSION}-{_key()}.tar"
    if out.exists():
        return out
    binary = gitsync_binary()
    with locked(out):
        if out.exists():
            return out
        with tempfile.TemporaryDirectory(prefix="git-sync-image-") as tmp:
            _build(Path(tmp), binary, out)
    return out


def _build(tmp: Path, binary: Path, out: Path) -> None:
    src = _source(tmp / "src")
    base = tmp / "base"
    # FROM debian-base:bookworm + `apt-get install bash` (the staging script needs it).
    _run(
        "mmdebstrap of the git-sync base stage",
        require("mmdebstrap"),
        "--variant=minbase",
        "--include=bash",
        "--mode=root",
        "--quiet",
        "bookworm",
        base,
        MIRROR,
    )
    shutil.copy2(src / "stage_binaries.sh", base / "stage_binaries.sh")
    shutil.copy2("/etc/resolv.conf", base / "etc" / "resolv.conf")  # apt-get update inside
    (base / "staging").mkdir()
    mounted = False
    try:
        _run("mount /proc for the staging chroot", "mount", "-t", "proc", "proc", base / "proc")
        mounted = True
        _run(
            "stage_binaries.sh (git-sync's Dockerfile.in base stage)",
            require("chroot"),
            base,
            "/bin/bash",
            "/stage_binaries.sh",
            "-o",
            "/staging",
            *STAGE_ARGS,
            env={
                "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                "DEBIAN_FRONTEND": "noninteractive",
                "HOME": "/root",
            },
        )
    finally:
        if mounted:
            subprocess.run(["umount", str(base / "proc")], check=False)
    staging = base / "staging"
    os.symlink("/bin/bash", staging / "bin" / "sh")
    for pattern in DELETE:
        for path in glob.glob(str(staging / pattern)):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
    with open(staging / "etc" / "passwd", "a") as f:
        f.write("git-sync:x:65533:65533::/tmp:/sbin/nologin\n")
    os.chmod(staging / "etc" / "passwd", 0o666)
    with open(staging / "etc" / "group", "a") as f:
        f.write("git-sync:x:65533:git-sync\n")
    (staging / "git").mkdir()
    os.chmod(staging / "git", 0o2775)
    os.chown(staging / "git", 65533, 65533)
    licenses = staging / "LICENSES"
    for license_file in [src / "LICENSE", *src.glob("vendor/**/LICENSE*")]:
        target = licenses / license_file.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(license_file, target)
    shutil.copy2(binary, staging / "git-sync")
    os.chmod(staging / "git-sync", 0o755)
    tmp_out = out.parent / f"{out.name}.{os.getpid()}.tmp"
    _run(
        "tar of the git-sync root filesystem",
        "tar",
        "--sort=name",
        "--numeric-owner",
        "--mtime=@0",
        "-C",
        staging,
        "-cf",
        tmp_out,
        ".",
    )
    tmp_out.replace(out)


def push_gitsync(ref: str) -> str:
    """Push the faithful image to ``ref`` (config as Dockerfile.in sets it); its digest."""
    push_tar(ref, gitsync_rootfs_tar(), entrypoint=ENTRYPOINT, user=USER)
    env = [a for k, v in ENV.items() for a in ("--env", f"{k}={v}")]
    crane("mutate", ref, "-t", ref, "--insecure", *env, "--workdir", WORKDIR)
    return crane("digest", ref, "--insecure")


def prepare_runtime(rootfs: Path) -> None:
    """What a container runtime adds to an unpacked image before it starts: /dev nodes
    (git-sync's Go runtime opens /dev/null for its git children)."""
    dev = rootfs / "dev"
    dev.mkdir(exist_ok=True)
    for name, minor in (("null", 3), ("zero", 5), ("random", 8), ("urandom", 9)):
        node = dev / name
        if not node.exists():
            os.mknod(node, 0o666 | 0o020000, os.makedev(1, minor))
            os.chmod(node, 0o666)


def run_gitsync(
    rootfs: Path, config_env: list[str], repo: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    """git-sync as the image runs it: its entrypoint, as 65533:65533, with the image's env
    (and the runtime's default PATH), in a chroot of the unpacked image."""
    prepare_runtime(rootfs)
    env = {"PATH": RUNTIME_PATH}
    env.update(dict(item.split("=", 1) for item in config_env))
    return subprocess.run(
        [
            require("chroot"),
            f"--userspec={USER}",
            str(rootfs),
            *ENTRYPOINT,
            f"--repo={repo}",
            "--one-time",
            "--root=/tmp/git",
            "--link=current",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
        cwd="/",
    )
