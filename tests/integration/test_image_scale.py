"""`image patch` at the size of real AI images: memory stays bounded.

The image is the AI workload image of test_runtime_trust plus filler layers
(one of 2 GiB, which compresses to about 1 GiB, and four of 128 MiB): about
3 GiB unpacked in seven layers. Peak memory is the kernel's high-water mark
of the patching process (VmHWM), read by tests/tools/peak_rss.py after the
command finished. Documented bound (README): 300 MiB, whatever the image size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.integration.aiimage import ai_layers, filler_layers, gzip_layer, push_oci
from tests.integration.conftest import TOOLS
from tests.integration.registry import Registry, started_registry

pytestmark = pytest.mark.integration
GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
BOUND_KIB = 300 * 1024
BIG_MIB = 2048


@pytest.fixture(scope="module")
def registries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, Registry]]:
    with (
        started_registry(tmp_path_factory.mktemp("source")) as source,
        started_registry(tmp_path_factory.mktemp("target")) as target,
    ):
        yield source, target


@pytest.fixture(scope="module")
def big_image(registries: tuple[Registry, Registry]) -> str:
    base, opt = ai_layers()
    layers = [(*gzip_layer(base), GZIP), (*gzip_layer(opt), GZIP)]
    layers += [(blob, diff_id, GZIP) for blob, diff_id in filler_layers((BIG_MIB, *[128] * 4))]
    ref = registries[0].ref("research/cuda:big")
    push_oci(ref, layers, ["PATH=/usr/local/bin:/usr/bin:/bin"])
    return ref


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
            sys.executable, str(TOOLS / "peak_rss.py"), str(rss),
            "image", "patch", source, "--ca", str(ca), "--to", dest, "-o", "json",
        ],
        capture_output=True, text=True, timeout=1200, check=False,
        env={**os.environ, "AIRTRUST_LAYER_CACHE": str(out.with_suffix(".cache"))},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    measured = json.loads(rss.read_text())
    result: dict[str, object] = json.loads(proc.stdout)["results"][0]
    return int(measured["vm_hwm_kib"]), result


def test_memory_is_bounded_and_a_cross_registry_copy_does_not_grow_it(
    big_image: str, registries: tuple[Registry, Registry], ca: Path, tmp_path: Path
) -> None:
    source, target = registries
    same, result = patch_measured(
        big_image, source.ref("research/cuda:big-ca"), ca, tmp_path / "same"
    )
    assert result["noop"] is False
    assert same < BOUND_KIB, f"peak {same} KiB patching in one registry"
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
