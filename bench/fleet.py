"""A team's fleet of notebook images: ``image patch --from FILE`` against a buildah loop.

    .venv/bin/python bench/fleet.py [--images 10] [--jobs 2] [--size large|small]

Ten images share one 2 GiB base (the AI image of bench/ai_image_patch.py,
11 layers) and differ in one small top layer each, the shape of a team's
notebook images. All are pushed to Debian's docker-registry on 127.0.0.1 with
its access log on. Then, in the same run:

* ``airtrust image patch --from FILE -j N`` over all of them (empty layer
  cache), timed, with the bytes of every blob GET the registry served, read
  from the registry's own access log (not from airtrust's counters), set
  against the sum of the distinct layers: every distinct layer downloaded once
  across the batch means the two are equal;
* a ``buildah bud`` + ``buildah push`` loop over the same images (the
  documented Dockerfile, --isolation chroot; the image store emptied once
  before the loop, so shared layers are pulled once as a user's loop would).

Not a test; needs root (buildah).
"""

from __future__ import annotations

import argparse
import io
import re
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ai_image_patch import layers_for
from bench.harness import (
    AIRTRUST,
    GZIP,
    Registry,
    gzip_layer,
    push_oci,
    quickstart,
    started_registry,
    timed,
    timed_peak,
)

ENV = ["PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]


def top_layer(work: Path, number: int) -> tuple[Path, str]:
    """One image's own layer: a notebook's requirements and a few MiB of its code."""
    tar = work / f"top-{number}.tar"
    with tarfile.open(tar, "w") as out:
        for name, size in ((f"home/jovyan/team-{number}/requirements.txt", 200),
                           (f"home/jovyan/team-{number}/model.py", 4 << 20)):  # fmt: skip
            info = tarfile.TarInfo(name)
            info.size, info.mtime = size, 0
            out.addfile(info, io.BytesIO(bytes([number]) * size))
    return gzip_layer(tar)


def blob_bytes_served(registry: Registry) -> int:
    """Bytes of every successful blob GET in the registry's access log (its combined
    log format gives the status and the size after the request line)."""
    text = registry.log.read_text(errors="replace")
    return sum(
        int(m[1])
        for m in re.finditer(r'"GET /v2/\S+/blobs/sha256:[0-9a-f]+ HTTP/[\d.]+" 200 (\d+)', text)
    )


def buildah_loop(images: list[str], host: str, ca: Path, work: Path) -> tuple[float, int]:
    ctx = work / "ctx"
    (ctx / "anchors").mkdir(parents=True, exist_ok=True)
    shutil.copy(ca, ctx / "anchors" / "local-ca.crt")
    timed(["buildah", "rmi", "--all", "--force"])
    total, peak = 0.0, 0
    for n, image in enumerate(images):
        (ctx / "Dockerfile").write_text(
            f"FROM {image}\nCOPY anchors/ /usr/local/share/ca-certificates/\n"
            "RUN update-ca-certificates\n"
        )
        bud, bud_peak = timed_peak(
            ["buildah", "bud", "--isolation", "chroot", "--tls-verify=false", "-q",
             "-t", f"localhost/fleet:{n}", str(ctx)]
        )  # fmt: skip
        push, push_peak = timed_peak(
            ["buildah", "push", "--tls-verify=false", "-q", f"localhost/fleet:{n}",
             f"docker://{host}/fleet/buildah-{n}:1"]
        )  # fmt: skip
        total += bud.seconds + push.seconds
        peak = max(peak, bud_peak, push_peak)
    return total, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--size", default="large", help="the base: large (2 GiB) or small")
    args = parser.parse_args()
    base = layers_for(args.size)
    with tempfile.TemporaryDirectory(prefix="airtrust-fleet-") as tmp:
        work = Path(tmp)
        with started_registry(work / "registry", access_log=True) as registry:
            ca = quickstart(work / "pki")
            images, tops = [], []
            for n in range(args.images):
                top = top_layer(work, n)
                tops.append(top[0])
                ref = registry.ref(f"fleet/notebook-{n}:1")
                push_oci(ref, [*base, (*top, GZIP)], ENV)
                images.append(ref)
            distinct = sum(blob.stat().st_size for blob, _, _ in base)
            distinct += sum(t.stat().st_size for t in tops)
            jobs = work / "jobs.txt"
            jobs.write_text("".join(f"{i} {i.replace('notebook', 'patched')}\n" for i in images))
            before = blob_bytes_served(registry)
            start = time.perf_counter()
            timed(
                [AIRTRUST, "image", "patch", "--from", str(jobs), "--ca", str(ca),
                 "-j", str(args.jobs)],
                env={"AIRTRUST_LAYER_CACHE": str(work / "layer-cache")},
            )  # fmt: skip
            ours = time.perf_counter() - start
            served = blob_bytes_served(registry) - before
            theirs, peak = buildah_loop(images, registry.host, ca, work)
    print(f"\n{args.images} images sharing an {len(base)}-layer base, one own layer each")
    print(f"  distinct layers: {distinct / 2**20:8.1f} MiB compressed")
    print(f"  airtrust image patch --from (-j {args.jobs}): {ours:7.2f} s, "
          f"blob bytes served {served / 2**20:8.1f} MiB = {served / distinct:.3f}x the "
          "distinct layers")  # fmt: skip
    print(f"  buildah bud + push loop:          {theirs:7.2f} s, peak {peak / 1024:.0f} MiB")
    print(f"  buildah loop / airtrust: {theirs / ours:.1f}x")


if __name__ == "__main__":
    main()
