"""Reading an OCI layout tarball as a registry is read (registry/layout.py).

The layouts here are written by hand from the OCI image-layout spec (oci-layout,
index.json, blobs/sha256/<hex>), not by airtrust, so the reader is judged
against the format, not against its own writer. skopeo judges real layouts in
tests/integration/test_release.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from airtrust.errors import InputError
from airtrust.layers.image import MediaType
from airtrust.registry.layout import REF_NAME, OciLayout

CONFIG = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
LAYER = b"\x1f\x8b" + bytes(range(256)) * 64


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _manifest() -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": str(MediaType.OCI_MANIFEST),
            "config": {"digest": _digest(CONFIG), "size": len(CONFIG)},
            "layers": [{"digest": _digest(LAYER), "size": len(LAYER)}],
        }
    ).encode()


def _write(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _layout(path: Path, *, layer: bytes = LAYER, names: tuple[str, ...] = ()) -> Path:
    manifest = _manifest()
    entries = [
        {"mediaType": str(MediaType.OCI_MANIFEST), "digest": _digest(manifest),
         "size": len(manifest), **({"annotations": {REF_NAME: n}} if n else {})}
        for n in (names or ("",))
    ]  # fmt: skip
    return _write(
        path,
        {
            "oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
            "index.json": json.dumps({"schemaVersion": 2, "manifests": entries}).encode(),
            f"blobs/sha256/{_digest(manifest)[7:]}": manifest,
            f"blobs/sha256/{_digest(CONFIG)[7:]}": CONFIG,
            f"blobs/sha256/{_digest(LAYER)[7:]}": layer,
        },
    )


def test_the_only_image_is_latest_and_its_blobs_read_back(tmp_path: Path) -> None:
    with OciLayout(_layout(tmp_path / "a.tar")) as layout:
        manifest = layout.manifest("ignored", "latest")
        assert manifest.media_type is MediaType.OCI_MANIFEST and not manifest.is_index
        assert manifest.digest == _digest(_manifest())
        body = manifest.json()
        assert layout.blob("", body["config"]["digest"]) == CONFIG
        chunks = list(layout.stream_blob("", body["layers"][0]["digest"]))
        assert b"".join(chunks) == LAYER
        assert layout.manifest("", manifest.digest).raw == manifest.raw


def test_a_named_image_is_found_by_its_ref_name_and_a_wrong_name_lists_the_names(
    tmp_path: Path,
) -> None:
    with OciLayout(_layout(tmp_path / "a.tar", names=("v1", "v2"))) as layout:
        assert layout.top("v2")["annotations"][REF_NAME] == "v2"
        with pytest.raises(InputError) as raised:
            layout.top("latest")  # two images: latest names neither
        assert "holds no image named latest (it holds: v1, v2)" in str(raised.value)


def test_a_blob_whose_bytes_changed_is_refused_once_read(tmp_path: Path) -> None:
    damaged = LAYER[:-1] + bytes([LAYER[-1] ^ 1])
    with OciLayout(_layout(tmp_path / "a.tar", layer=damaged)) as layout:
        stream = layout.stream_blob("", _digest(LAYER))
        with pytest.raises(InputError) as raised:
            b"".join(stream)
        assert "does not match its digest (the file is damaged)" in str(raised.value)


@pytest.mark.parametrize(
    ("members", "said"),
    [
        ({"oci-layout": b"{}"}, "lacks index.json"),
        ({"index.json": b"not json"}, "has no usable index.json"),
        ({"index.json": b'{"manifests": []}'}, "holds no image"),
    ],
)
def test_a_layout_without_a_usable_index_is_refused(
    tmp_path: Path, members: dict[str, bytes], said: str
) -> None:
    with pytest.raises(InputError) as raised:
        OciLayout(_write(tmp_path / "bad.tar", members))
    assert said in str(raised.value) and str(tmp_path / "bad.tar") in str(raised.value)


def test_a_file_that_is_not_a_tarball_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.tar"
    path.write_bytes(b"hello\n")
    with pytest.raises(InputError) as raised:
        OciLayout(path)
    assert "is not an OCI layout tarball" in str(raised.value)


def test_a_missing_blob_names_the_member(tmp_path: Path) -> None:
    with OciLayout(_layout(tmp_path / "a.tar")) as layout:
        with pytest.raises(InputError) as raised:
            layout.blob("", "sha256:" + "0" * 64)
        assert f"lacks blobs/sha256/{'0' * 64}" in str(raised.value)
