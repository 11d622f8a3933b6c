"""Patch an AI-sized image: airtrust vs buildah, at about 0.5 GiB and 2 GiB.

    .venv/bin/python bench/ai_image_patch.py [--runs 1] [--sizes small,large]

The images are the AI workload image of the tests (Debian bookworm with a
JRE, Node.js, curl, git, a venv with requests/certifi/grpcio and a conda-style
prefix: two layers, about 0.65 GiB unpacked) and, for "large", nine more
filler layers of CUDA-like files (half random, half zero bytes) to about
2 GiB unpacked in 11 layers. Each is pushed to Debian's docker-registry on
127.0.0.1; then, in the same run:

* airtrust image patch, first time (empty layer cache) and again (cached),
  with its peak RSS (VmHWM of the process plus each scan worker's) and the
  bytes it uploaded;
* buildah bud of the documented Dockerfile (COPY anchors/ + RUN
  update-ca-certificates, --isolation chroot, base pulled fresh) + buildah
  push, which fixes only the OS store, with its peak RSS (GNU time);
* the floor: inflating every layer blob from local disk with ISA-L, one
  after the other (what reading the image costs at least on one core), and
  the same spread over the machine's cores given the layer sizes (airtrust
  scans large images in one worker process per core);
* what any reader that checks digests must do, measured: inflating and hashing
  (sha256) every layer from disk in one process per core, largest first. The
  floor above counts inflating only; this one is the work airtrust's workers
  do besides parsing, on the same cores, without a registry serving beside them.

Not a test; needs root (buildah).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (
    GZIP,
    ai_layers,
    airtrust_peak,
    buildah_patch,
    filler_layers,
    gzip_layer,
    push_oci,
    quickstart,
    started_registry,
)

FILLERS = (512, 256, 128, 128, 128, 64, 64, 64, 64)  # MiB unpacked, nine layers
Layers = list[tuple[Path, str, str]]


def layers_for(size: str) -> Layers:
    base, opt = ai_layers()
    out = [(*gzip_layer(base), GZIP), (*gzip_layer(opt), GZIP)]
    if size == "large":
        out += [(blob, diff, GZIP) for blob, diff in filler_layers(FILLERS)]
    return out


def unpacked_size(layers: Layers) -> int:
    return sum(_inflate(blob) for blob, _, _ in layers)


def _inflate(blob: Path) -> int:
    from isal import isal_zlib

    inflater = isal_zlib.decompressobj(31)
    n = 0
    with open(blob, "rb") as f:
        while chunk := f.read(1 << 20):
            pending = chunk
            while pending:
                n += len(inflater.decompress(pending, 8 << 20))
                pending = inflater.unconsumed_tail
    return n + len(inflater.flush())


def floor_seconds(layers: Layers) -> tuple[float, float]:
    """(one-core floor, floor on every core): inflating each layer from disk, one after
    the other; then the least time those inflates take spread over the cores, given
    their sizes (a layer cannot be split: no less than the longest one, and no less
    than the total shared evenly)."""
    times = []
    for blob, _, _ in layers:
        start = time.perf_counter()
        _inflate(blob)
        times.append(time.perf_counter() - start)
    cores = len(os.sched_getaffinity(0))
    return sum(times), max(max(times), sum(times) / cores)


def _inflate_and_hash(blob: Path) -> int:
    hasher = hashlib.sha256()
    with open(blob, "rb") as f:
        while chunk := f.read(1 << 20):
            hasher.update(chunk)
    return _inflate(blob)


def measured_work_floor(layers: Layers) -> float:
    """Seconds to inflate and hash every layer, one process per core, largest first."""
    blobs = sorted((blob for blob, _, _ in layers), key=lambda b: -b.stat().st_size)
    with ProcessPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        list(pool.map(_inflate_and_hash, blobs[:1]))  # processes started before the clock
        start = time.perf_counter()
        list(pool.map(_inflate_and_hash, blobs))
        return time.perf_counter() - start


def airtrust_patch(base: str, dest: str, ca: Path, cache: Path) -> tuple[float, int, int]:
    """(seconds, peak KiB, bytes uploaded)."""
    ran, peak = airtrust_peak(
        ["image", "patch", base, "--ca", str(ca), "--to", dest, "-o", "json"],
        env={"AIRTRUST_LAYER_CACHE": str(cache)},
    )
    result = json.loads(ran.stdout)["results"][0]
    return ran.seconds, peak, int(result["bytes_uploaded"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--sizes", default="small,large")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with started_registry(work / "registry") as reg:
            ca = quickstart(work / "pki")
            for size in args.sizes.split(","):
                bench_size(size, reg.host, ca, work, args.runs)


def bench_size(size: str, host: str, ca: Path, work: Path, runs: int) -> None:
    layers = layers_for(size)
    base = f"{host}/bench/ai-{size}:1"
    push_oci(
        base,
        layers,
        ["PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
    )
    compressed = sum(blob.stat().st_size for blob, _, _ in layers)
    unpacked = unpacked_size(layers)
    floor, floor_all = floor_seconds(layers)
    hashed = measured_work_floor(layers)
    first: list[float] = []
    warm: list[float] = []
    peaks: list[int] = []
    uploaded = 0
    for i in range(runs):
        cache = work / f"cache-{size}-{i}"
        t, peak, sent = airtrust_patch(base, f"{host}/bench/airtrust-{size}:first{i}", ca, cache)
        uploaded = uploaded or sent  # later runs find the same layer already there
        first.append(t)
        peaks.append(peak)
        t, peak, _ = airtrust_patch(base, f"{host}/bench/airtrust-{size}:warm{i}", ca, cache)
        warm.append(t)
        peaks.append(peak)
    builds: list[float] = []
    build_peaks: list[int] = []
    for i in range(runs):
        t, peak = buildah_patch(base, host, ca, work, f"{size}{i}")
        builds.append(t)
        build_peaks.append(peak)
    a1, a2, b = statistics.median(first), statistics.median(warm), statistics.median(builds)
    print(
        f"[{size}] image: {len(layers)} layers, {compressed / 2**30:.2f} GiB compressed, "
        f"{unpacked / 2**30:.2f} GiB unpacked"
    )
    cores = len(os.sched_getaffinity(0))
    print(f"  floor (ISA-L inflate of every layer, one core): {floor:7.2f} s")
    print(f"  floor on {cores} cores (given the layer sizes):     {floor_all:7.2f} s")
    print(f"  inflate + sha256 on {cores} cores, measured:     {hashed:7.2f} s")
    print(f"  airtrust first patch (no cache):   {a1:7.2f} s   buildah/airtrust {b / a1:6.1f}x"
          f"   {a1 / floor_all:.2f}x the {cores}-core floor,"
          f" {a1 / hashed:.2f}x inflate+hash")  # fmt: skip
    print(f"  airtrust patch, cached layout:     {a2:7.2f} s   buildah/airtrust {b / a2:6.1f}x")
    print(f"  buildah bud + push (fresh pull):   {b:7.2f} s   (fixes the OS store only)")
    ours, theirs = max(peaks) / 1024, max(build_peaks) / 1024
    print(f"  airtrust peak RSS: {ours:6.0f} MiB   buildah: {theirs:6.0f} MiB")
    print(f"  airtrust bytes uploaded, first patch: {uploaded} (one layer + config + manifest)")


if __name__ == "__main__":
    main()
