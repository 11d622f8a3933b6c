"""What the benchmarks share: real peers on this machine, timing, peak RSS.

The benches set airtrust against the tools people use today, on real peers:
Debian's docker-registry on 127.0.0.1, images built with mmdebstrap and
pushed with crane or skopeo, an apiserver from scripts/testcluster. They are
not tests, so nothing here imports tests/ (pytest, fixtures) and a missing
tool ends the bench with the reason (SystemExit), not a test failure.

The registry and the images are testkit's, the very recipes the tests use,
under the same cache names in ~/.cache/airtrust/images and behind the same
locks, so a bench reuses what a test run built and the other way round.

The registry speaks plain HTTP: airtrust allows that for loopback registries
only, and so do the peers with ``--insecure`` / ``--tls-verify=false``; the CA
a bench makes with ``airtrust quickstart`` is the one patched into images.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import testkit
from testkit import CACHE, require
from testkit.images import (
    GZIP,
    ai_layers,
    crane,
    debian_rootfs,
    filler_layers,
    gzip_layer,
    push_oci,
    push_tar,
)
from testkit.peak_rss import SCRIPT as PEAK_RSS
from testkit.registry import Registry, started_registry

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
AIRTRUST = str(Path(sys.executable).parent / "airtrust")
#: Built by scripts/build-testbins (scripts/test runs it).
CRANE = str(testkit.CRANE)
KUBECTL = str(CACHE / "bin" / "kubectl")


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


def airtrust_peak(args: Sequence[str], env: Mapping[str, str] | None = None) -> tuple[Ran, int]:
    """(run, peak KiB) of ``airtrust ARGS``, the process's own VmHWM (testkit/peak_rss.py)."""
    with tempfile.TemporaryDirectory(prefix="airtrust-bench-") as tmp:
        out = Path(tmp) / "vmhwm.json"
        ran = timed([sys.executable, str(PEAK_RSS), str(out), *args], env)
        return ran, int(json.loads(out.read_text())["vm_hwm_kib"])


def quickstart(out: Path, domain: str = "bench.example.test") -> Path:
    """``airtrust quickstart`` into ``out``; the CA bundle it wrote."""
    timed([AIRTRUST, "quickstart", "--domain", domain, "--out", str(out)])
    return out / "ca-bundle.pem"


# --- servers ----------------------------------------------------------------------------


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
