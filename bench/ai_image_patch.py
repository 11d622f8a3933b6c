"""Patch an AI-sized image: airtrust vs buildah, at about 0.5 GiB and 2 GiB.

    .venv/bin/python bench/ai_image_patch.py [--runs 1] [--sizes small,large]

The images are the AI workload image of the tests (Debian bookworm with a
JRE, Node.js, curl, git, a venv with requests/certifi/grpcio and a conda-style
prefix: two layers, about 0.65 GiB unpacked) and, for "large", nine more
filler layers of CUDA-like files (half random, half zero bytes) to about
2 GiB unpacked in 11 layers. Each is pushed to Debian's docker-registry on
127.0.0.1; then, in the same run:

* airtrust image patch, first time (empty layer cache) and again (cached),
  with its peak RSS (VmHWM of the process) and the bytes it uploaded;
* buildah bud of the documented Dockerfile (COPY anchors/ + RUN
  update-ca-certificates, --isolation chroot, base pulled fresh) + buildah
  push, which fixes only the OS store, with its peak RSS (GNU time);
* the floor: inflating every layer blob from local disk with ISA-L, one
  after the other (what reading the image costs at least on this machine).

Not a test; needs root (buildah).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.aiimage import (  # noqa: E402
    ai_layers,
    filler_layers,
    gzip_layer,
    push_oci,
)
from tests.integration.registry import started_registry  # noqa: E402

AIRTRUST = str(Path(sys.executable).parent / "airtrust")
PEAK = ROOT / "tests" / "tools" / "peak_rss.py"
GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
FILLERS = (512, 256, 128, 128, 128, 64, 64, 64, 64)  # MiB unpacked, nine layers


def layers_for(size: str) -> list[tuple[Path, str, str]]:
    base, opt = ai_layers()
    out = [(*gzip_layer(base), GZIP), (*gzip_layer(opt), GZIP)]
    if size == "large":
        out += [(blob, diff, GZIP) for blob, diff in filler_layers(FILLERS)]
    return out


def unpacked_size(layers: list[tuple[Path, str, str]]) -> int:
    from isal import isal_zlib

    total = 0
    for blob, _, _ in layers:
        total += _inflate(blob, isal_zlib)
    return total


def _inflate(blob: Path, isal_zlib: object) -> int:
    inflater = isal_zlib.decompressobj(31)  # type: ignore[attr-defined]
    n = 0
    with open(blob, "rb") as f:
        while chunk := f.read(1 << 20):
            pending = chunk
            while pending:
                n += len(inflater.decompress(pending, 8 << 20))
                pending = inflater.unconsumed_tail
    return n + len(inflater.flush())


def floor_seconds(layers: list[tuple[Path, str, str]]) -> float:
    from isal import isal_zlib

    start = time.perf_counter()
    for blob, _, _ in layers:
        _inflate(blob, isal_zlib)
    return time.perf_counter() - start


def run(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed: {proc.stderr[-2000:]}")
    return elapsed, proc.stdout + proc.stderr


def airtrust_patch(
    base: str, dest: str, ca: str, cache: Path, work: Path
) -> tuple[float, int, int]:
    """(seconds, peak KiB, bytes uploaded)."""
    rss = work / f"rss-{dest.rsplit(':', 1)[-1]}.json"
    t, out = run(
        [sys.executable, str(PEAK), str(rss), "image", "patch", base, "--ca", ca, "--to", dest,
         "-o", "json"],
        env={"AIRTRUST_LAYER_CACHE": str(cache)},
    )  # fmt: skip
    result = json.loads(out[: out.rindex("}") + 1])["results"][0]
    return t, json.loads(rss.read_text())["vm_hwm_kib"], int(result["bytes_uploaded"])


def buildah(base: str, host: str, ca: str, work: Path, tag: str) -> tuple[float, int]:
    """(seconds for bud + push, peak KiB of the larger of the two)."""
    ctx = work / "ctx"
    (ctx / "anchors").mkdir(parents=True, exist_ok=True)
    shutil.copy(ca, ctx / "anchors" / "local-ca.crt")
    (ctx / "Dockerfile").write_text(
        f"FROM {base}\nCOPY anchors/ /usr/local/share/ca-certificates/\n"
        "RUN update-ca-certificates\n"
    )
    subprocess.run(["buildah", "rmi", "--all", "--force"], capture_output=True, check=False)
    timing = ["/usr/bin/time", "-f", "PEAK %M"]
    t1, out1 = run(
        [*timing, "buildah", "bud", "--isolation", "chroot", "--tls-verify=false",
         "--pull-always", "-q", "-t", f"localhost/bench:{tag}", str(ctx)]
    )  # fmt: skip
    t2, out2 = run(
        [*timing, "buildah", "push", "--tls-verify=false", "-q", f"localhost/bench:{tag}",
         f"docker://{host}/bench/buildah:{tag}"]
    )  # fmt: skip
    peaks = [int(line.split()[1]) for line in (out1 + out2).splitlines() if line.startswith("PEAK")]
    return t1 + t2, max(peaks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--sizes", default="small,large")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with started_registry(work / "registry") as reg:
            run(
                [AIRTRUST, "quickstart", "--domain", "bench.example.test", "--out",
                 str(work / "pki")]
            )  # fmt: skip
            ca = str(work / "pki" / "ca-bundle.pem")
            for size in args.sizes.split(","):
                bench_size(size, reg.host, ca, work, args.runs)


def bench_size(size: str, host: str, ca: str, work: Path, runs: int) -> None:
    layers = layers_for(size)
    base = f"{host}/bench/ai-{size}:1"
    push_oci(
        base,
        layers,
        ["PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
    )
    compressed = sum(blob.stat().st_size for blob, _, _ in layers)
    unpacked = unpacked_size(layers)
    floor = floor_seconds(layers)
    first, warm, peaks, uploaded = [], [], [], 0
    for i in range(runs):
        cache = work / f"cache-{size}-{i}"
        t, peak, sent = airtrust_patch(
            base, f"{host}/bench/airtrust-{size}:first{i}", ca, cache, work
        )
        uploaded = uploaded or sent  # later runs find the same layer already there
        first.append(t)
        peaks.append(peak)
        t, peak, _ = airtrust_patch(base, f"{host}/bench/airtrust-{size}:warm{i}", ca, cache, work)
        warm.append(t)
        peaks.append(peak)
    builds, build_peaks = [], []
    for i in range(runs):
        t, peak = buildah(base, host, ca, work, f"{size}{i}")
        builds.append(t)
        build_peaks.append(peak)
    a1, a2, b = statistics.median(first), statistics.median(warm), statistics.median(builds)
    print(
        f"[{size}] image: {len(layers)} layers, {compressed / 2**30:.2f} GiB compressed, "
        f"{unpacked / 2**30:.2f} GiB unpacked"
    )
    print(f"  floor (ISA-L inflate of every layer, one core): {floor:7.2f} s")
    print(f"  airtrust first patch (no cache):   {a1:7.2f} s   buildah/airtrust {b / a1:6.1f}x")
    print(f"  airtrust patch, cached layout:     {a2:7.2f} s   buildah/airtrust {b / a2:6.1f}x")
    print(f"  buildah bud + push (fresh pull):   {b:7.2f} s   (fixes the OS store only)")
    ours, theirs = max(peaks) / 1024, max(build_peaks) / 1024
    print(f"  airtrust peak RSS: {ours:6.0f} MiB   buildah: {theirs:6.0f} MiB")
    print(f"  airtrust bytes uploaded, first patch: {uploaded} (one layer + config + manifest)")


if __name__ == "__main__":
    main()
