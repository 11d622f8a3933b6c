"""`image patch` at the size of real AI images: memory stays bounded, and flat.

The big image is the AI workload image of test_runtime_trust plus filler
layers (one of 2 GiB, which compresses to about 1 GiB, and four of 128 MiB):
about 3 GiB unpacked in seven layers. The small one has the same base and
filler layers a quarter the size (512 MiB and four of 32 MiB). Peak memory is
the kernel's high-water mark of the patching process (VmHWM), read by
testkit/peak_rss.py after the command finished. Documented bound (README):
300 MiB, whatever the image size; a bound alone would pass a patcher whose
memory grows with the image as long as the test image is small enough, so
the peaks at the two sizes are compared too: four times the filler may cost
no more than a quarter more memory plus a chunk or two.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit.peak_rss import SCRIPT as PEAK_RSS

from tests.conftest import run_cli
from tests.integration.aiimage import GZIP, ai_layers, filler_layers, gzip_layer, push_oci
from tests.integration.registry import Registry, started_registry

#: Peak memory is measured reading every layer: each measured run names an empty
#: cache of its own (patch_measured), and the test reads none of the session's.
pytestmark = [pytest.mark.integration, pytest.mark.cold_layer_cache]
BOUND_KIB = 300 * 1024
#: Uncompressed MiB of the filler layers: the big image's, and a quarter of each.
BIG_FILLERS = (2048, 128, 128, 128, 128)
SMALL_FILLERS = tuple(size // 4 for size in BIG_FILLERS)
#: How much more the big image's patch may peak at: a quarter, plus a chunk or two.
FLAT_FACTOR, FLAT_SLACK_KIB = 1.25, 16 * 1024


@pytest.fixture(scope="module")
def registries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, Registry]]:
    with (
        started_registry(tmp_path_factory.mktemp("source")) as source,
        started_registry(tmp_path_factory.mktemp("target")) as target,
    ):
        yield source, target


def _ai_image(registry: Registry, tag: str, fillers: tuple[int, ...]) -> str:
    base, opt = ai_layers()
    layers = [(*gzip_layer(base), GZIP), (*gzip_layer(opt), GZIP)]
    layers += [(blob, diff_id, GZIP) for blob, diff_id in filler_layers(fillers)]
    ref = registry.ref(f"research/cuda:{tag}")
    push_oci(ref, layers, ["PATH=/usr/local/bin:/usr/bin:/bin"])
    return ref


@pytest.fixture(scope="module")
def big_image(registries: tuple[Registry, Registry]) -> str:
    return _ai_image(registries[0], "big", BIG_FILLERS)


@pytest.fixture(scope="module")
def small_image(registries: tuple[Registry, Registry]) -> str:
    return _ai_image(registries[0], "small", SMALL_FILLERS)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki") / "qs"
    result = run_cli("quickstart", "--domain", "scale.example.test", "--out", folder)
    assert result.code == 0, result.err
    return folder / "ca-bundle.pem"


def patch_measured(source: str, dest: str, ca: Path, out: Path) -> tuple[int, dict[str, object]]:
    """(peak KiB, the patch's JSON result) of one `airtrust image patch` process."""
    rss = out.with_suffix(".rss.json")
    proc = subprocess.run(
        [
            sys.executable, str(PEAK_RSS), str(rss),
            "image", "patch", source, "--ca", str(ca), "--to", dest, "-o", "json",
        ],
        capture_output=True, text=True, timeout=1200, check=False,
        env={**os.environ, "AIRTRUST_LAYER_CACHE": str(out.with_suffix(".cache"))},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    measured = json.loads(rss.read_text())
    result: dict[str, object] = json.loads(proc.stdout)["results"][0]
    return int(measured["vm_hwm_kib"]), result


def test_memory_is_bounded_flat_in_the_image_size_and_not_grown_by_a_cross_registry_copy(
    big_image: str,
    small_image: str,
    registries: tuple[Registry, Registry],
    ca: Path,
    tmp_path: Path,
) -> None:
    source, target = registries
    small, small_result = patch_measured(
        small_image, source.ref("research/cuda:small-ca"), ca, tmp_path / "small"
    )
    same, result = patch_measured(
        big_image, source.ref("research/cuda:big-ca"), ca, tmp_path / "same"
    )
    assert small_result["noop"] is False and result["noop"] is False
    sizes = f"{sum(SMALL_FILLERS)} and {sum(BIG_FILLERS)} MiB of filler"
    print(f"peak RSS: {small} KiB and {same} KiB patching images with {sizes}")
    assert small < BOUND_KIB, f"peak {small} KiB patching the small image"
    assert same < BOUND_KIB, f"peak {same} KiB patching in one registry"
    # Flat: four times the filler, and the peak stays where the small image put it.
    assert same <= small * FLAT_FACTOR + FLAT_SLACK_KIB, (
        f"peak grows with the image: {small} KiB and {same} KiB for {sizes}"
    )
    across, moved = patch_measured(
        big_image, target.ref("research/cuda:big-ca"), ca, tmp_path / "across"
    )
    big_blob = max(int(layer["size"]) for layer in _manifest(big_image)["layers"])
    assert big_blob > 1 << 30  # a layer of more than 1 GiB really crossed
    assert int(moved["bytes_uploaded"]) > big_blob
    assert across < BOUND_KIB, f"peak {across} KiB copying across registries"
    print(f"peak RSS: {same} KiB in one registry, {across} KiB across registries")
    # Streaming: copying the blobs through this process costs no more than a chunk or two.
    assert across - same < 64 * 1024, (same, across)
    # The copy is whole: skopeo reads every blob back by digest from the target.
    copied = subprocess.run(
        ["skopeo", "copy", "--quiet", "--src-tls-verify=false",
         f"docker://{target.ref('research/cuda:big-ca')}", f"dir:{tmp_path / 'check'}"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert copied.returncode == 0, copied.stderr


def _manifest(ref: str) -> dict[str, list[dict[str, object]]]:
    proc = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    data: dict[str, list[dict[str, object]]] = json.loads(proc.stdout)
    return data
