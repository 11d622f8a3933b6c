"""Patch a Debian base in a local registry: airtrust vs buildah vs crane append.

    .venv/bin/python bench/image_patch.py [--runs 3]

Builds (once, cached) the base the issue names, a Debian bookworm minbase
with ca-certificates, git and curl, using mmdebstrap, pushes it as one layer
to Debian's docker-registry on 127.0.0.1, then measures in the same run:

* airtrust image patch, first time (empty layer cache) and again (cached);
* buildah bud of the documented Dockerfile (COPY anchors/ + RUN
  update-ca-certificates, --isolation chroot, base pulled fresh) + buildah push;
* crane append of the same CA layer airtrust produced.

Prints median wall times, ratios and bytes uploaded. Not a test; needs root.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (
    AIRTRUST,
    CRANE,
    buildah_patch,
    crane,
    debian_rootfs,
    push_tar,
    quickstart,
    started_registry,
    timed,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rootfs = debian_rootfs("ca-certificates,curl,git")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with started_registry(work / "registry") as reg:
            run(work, reg.host, rootfs, args.runs)


def run(work: Path, host: str, rootfs: Path, runs: int) -> None:
    base = f"{host}/bench/debian:bookworm"
    push_tar(base, rootfs)
    manifest = json.loads(crane("manifest", base, "--insecure"))
    layer_size = manifest["layers"][0]["size"]
    ca = quickstart(work / "pki")

    def patch(tag: str, cache: Path) -> tuple[float, dict[str, Any]]:
        cmd = [AIRTRUST, "image", "patch", base, "--ca", str(ca)]
        ran = timed(
            [*cmd, "--to", f"{host}/bench/airtrust:{tag}", "-o", "json"],
            env={"AIRTRUST_CACHE": str(cache)},
        )
        result: dict[str, Any] = json.loads(ran.stdout)["results"][0]
        return ran.seconds, result

    first: list[float] = []
    warm: list[float] = []
    uploaded = 0
    for i in range(runs):
        cache = work / f"cache-{i}"
        t, _ = patch(f"first{i}", cache)
        first.append(t)
        t, result = patch(f"warm{i}", cache)
        warm.append(t)
        uploaded = result["bytes_uploaded"]
    patched = json.loads(crane("manifest", f"{host}/bench/airtrust:warm0", "--insecure"))
    layer_digest = patched["layers"][-1]["digest"]
    layer_file = work / "ca-layer.tar.gz"
    subprocess.run(
        [
            "curl",
            "-sf",
            "-o",
            str(layer_file),
            f"http://{host}/v2/bench/airtrust/blobs/{layer_digest}",
        ],
        check=True,
    )

    crane_times = []
    for i in range(runs):
        ran = timed(
            [CRANE, "append", "-b", base, "-f", str(layer_file), "-t", f"{host}/bench/crane:{i}",
             "--insecure"]
        )  # fmt: skip
        crane_times.append(ran.seconds)

    buildah_times = [buildah_patch(base, host, ca, work, str(i))[0] for i in range(runs)]

    a1, a2 = statistics.median(first), statistics.median(warm)
    b, c = statistics.median(buildah_times), statistics.median(crane_times)
    print(
        f"base: one layer of {layer_size / 1e6:.1f} MB (gzip), "
        f"{rootfs.stat().st_size / 1e6:.0f} MB tar"
    )
    print(f"airtrust image patch, first (no cache): {a1:6.2f} s   buildah/airtrust {b / a1:5.1f}x")
    print(
        f"airtrust image patch, cached layout:    {a2:6.2f} s   buildah/airtrust {b / a2:5.1f}x"
        f"   airtrust/crane {a2 / c:4.2f}x"
    )
    print(f"buildah bud + push (fresh pull):        {b:6.2f} s")
    print(f"crane append (same layer):              {c:6.2f} s")
    print(f"airtrust bytes uploaded (warm run):     {uploaded} (layer + config + manifest)")


if __name__ == "__main__":
    main()
