"""layers/image.py: a layer appended to an image's config and manifest, from data alone."""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airtrust.layers.image import (
    INDEX_TYPES,
    LAYER_FOR,
    MANIFEST_TYPES,
    Image,
    LayerDescriptor,
    MediaType,
    canonical,
    sha256_digest,
)
from airtrust.layers.scan import Entry
from airtrust.layers.tarball import build_layer

CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
BASE_LAYER = {
    "mediaType": str(MediaType.OCI_LAYER_GZIP),
    "digest": "sha256:" + "1" * 64,
    "size": 1234,
}


def _base(media_type: MediaType = MediaType.OCI_MANIFEST, **config_extra: Any) -> Image:
    config: dict[str, Any] = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/bin"], "Labels": {"keep": "1", "replace": "old"}},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "a" * 64]},
        "history": [
            {"created_by": "ADD rootfs"},
            {"created_by": "ENV PATH=/usr/bin", "empty_layer": True},
        ],
        **config_extra,
    }
    raw = canonical(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": str(media_type),
        "config": {"mediaType": CONFIG_TYPE, "digest": sha256_digest(raw), "size": len(raw)},
        "layers": [BASE_LAYER],
    }
    return Image(manifest, config, media_type)


LAYER = build_layer(
    [Entry("etc/ssl/certs/ca-certificates.crt", "file", 0o644, content=b"CA PEM\n")]
)
DESCRIPTOR = LayerDescriptor(LAYER.digest, LAYER.diff_id, LAYER.size)
HISTORY = {"created": "1970-01-01T00:00:00Z", "created_by": "airtrust: add CA"}


def _append(image: Image, **kw: Any) -> Image:
    args: dict[str, Any] = {
        "history": HISTORY,
        "labels": {"replace": "new", "airtrust.io/ca": "x"},
        "annotations": {"org.opencontainers.image.base.digest": image.digest},
        **kw,
    }
    return image.append(DESCRIPTOR, **args)


def test_canonical_is_compact_and_keeps_insertion_order() -> None:
    assert canonical({"b": 1, "a": [1, {"d": None, "c": True}]}) == (
        b'{"b":1,"a":[1,{"d":null,"c":true}]}'
    )
    assert sha256_digest(b"") == (
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


def test_media_type_tables() -> None:
    assert LAYER_FOR[MediaType.OCI_MANIFEST] is MediaType.OCI_LAYER_GZIP
    assert LAYER_FOR[MediaType.DOCKER_MANIFEST] is MediaType.DOCKER_LAYER_GZIP
    assert set(MANIFEST_TYPES) == set(LAYER_FOR)
    assert set(INDEX_TYPES).isdisjoint(MANIFEST_TYPES)


def test_the_layer_descriptor_is_the_real_blob() -> None:
    """Digest and size of the compressed blob, diff_id of the uncompressed tar."""
    assert LAYER.digest == "sha256:" + hashlib.sha256(LAYER.blob).hexdigest()
    assert LAYER.size == len(LAYER.blob)
    assert LAYER.diff_id == "sha256:" + hashlib.sha256(gzip.decompress(LAYER.blob)).hexdigest()


def test_append_to_an_oci_image_updates_config_and_manifest() -> None:
    base = _base()
    out = _append(base)
    # Config: the diff_id, a history entry, merged labels; everything else kept.
    assert out.config["rootfs"]["diff_ids"] == ["sha256:" + "a" * 64, LAYER.diff_id]
    assert out.config["history"][-1] == HISTORY
    assert len(out.config["history"]) == 3
    assert out.labels == {"keep": "1", "replace": "new", "airtrust.io/ca": "x"}
    assert out.env == ["PATH=/usr/bin"]
    assert out.config["architecture"] == "amd64" and out.config["os"] == "linux"
    # Manifest: the new config's digest and size, and the layer last with its own type.
    assert out.manifest["config"] == {
        "mediaType": CONFIG_TYPE,
        "digest": sha256_digest(out.config_raw),
        "size": len(out.config_raw),
    }
    assert out.manifest["config"]["digest"] != base.manifest["config"]["digest"]
    assert out.layers == [
        BASE_LAYER,
        {
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": LAYER.digest,
            "size": LAYER.size,
        },
    ]
    assert out.manifest["annotations"] == {"org.opencontainers.image.base.digest": base.digest}
    assert out.digest == sha256_digest(out.manifest_raw)
    assert out.manifest_raw == canonical(out.manifest)
    assert out.media_type is MediaType.OCI_MANIFEST


def test_append_to_a_docker_image_uses_the_docker_layer_type_and_no_annotations() -> None:
    out = _append(_base(MediaType.DOCKER_MANIFEST))
    assert out.layers[-1]["mediaType"] == "application/vnd.docker.image.rootfs.diff.tar.gzip"
    assert "annotations" not in out.manifest  # schema 2 has none
    assert out.labels["airtrust.io/ca"] == "x"


def test_existing_annotations_are_merged_and_none_are_added_when_empty() -> None:
    base = _base()
    annotated = Image(
        {**base.manifest, "annotations": {"a": "1", "b": "old"}}, base.config, base.media_type
    )
    out = _append(annotated, annotations={"b": "new"})
    assert out.manifest["annotations"] == {"a": "1", "b": "new"}
    assert "annotations" not in _append(base, annotations={}).manifest


def test_env_replaces_only_when_given() -> None:
    base = _base()
    assert _append(base, env=None).env == ["PATH=/usr/bin"]
    assert _append(base, env=["SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"]).env == [
        "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"
    ]
    assert _append(base, env=[]).env == []


def test_a_config_without_labels_history_or_config_section() -> None:
    bare = _base()
    config = {"rootfs": {"type": "layers", "diff_ids": []}}
    image = Image({**bare.manifest, "layers": []}, config, MediaType.OCI_MANIFEST)
    assert image.labels == {} and image.env == [] and image.top_history() is None
    out = _append(image, labels={"l": "v"})
    assert out.config["config"] == {"Labels": {"l": "v"}}
    assert out.config["history"] == [HISTORY]
    nulls = _base(config={"Labels": None, "Env": None})
    assert _append(nulls, labels={"l": "v"}).labels == {"l": "v"}
    assert nulls.env == [] and nulls.labels == {}


def test_append_never_mutates_the_base() -> None:
    base = _base()
    before = (copy.deepcopy(dict(base.manifest)), copy.deepcopy(dict(base.config)))
    digest = base.digest
    _append(base, env=["X=1"])
    assert (dict(base.manifest), dict(base.config)) == before
    assert base.digest == digest


def test_same_inputs_same_digests() -> None:
    first, second = _append(_base()), _append(_base())
    assert first.digest == second.digest
    assert first.config_raw == second.config_raw
    other = _base().append(
        LayerDescriptor(LAYER.digest, LAYER.diff_id, LAYER.size + 1),
        history=HISTORY,
        labels={},
        annotations={},
    )
    same = _base().append(DESCRIPTOR, history=HISTORY, labels={}, annotations={})
    assert other.digest != same.digest
    assert other.config_raw == same.config_raw  # the size is only in the manifest


def test_top_history_skips_empty_layers_and_needs_one_entry_per_layer() -> None:
    base = _base()
    assert base.top_history() == {"created_by": "ADD rootfs"}
    assert _append(base).top_history() == HISTORY
    # History that does not match the layers (squashed, hand-edited) names no top.
    odd = Image(base.manifest, {**base.config, "history": []}, base.media_type)
    assert odd.top_history() is None
    extra = [*base.config["history"], {"created_by": "lost"}]
    assert (
        Image(base.manifest, {**base.config, "history": extra}, base.media_type).top_history()
        is None
    )


def test_without_top_layer_undoes_an_append() -> None:
    base = _append(_base(), labels={})
    again = _append(base, labels={})
    below = again.without_top_layer()
    assert below.layers == base.layers
    assert below.config["rootfs"] == base.config["rootfs"]
    assert below.config["history"] == base.config["history"]
    assert below.top_history() == HISTORY
    # The empty-layer entry below the removed one stays.
    assert {"created_by": "ENV PATH=/usr/bin", "empty_layer": True} in below.config["history"]
    assert again.layers[-1]["digest"] == LAYER.digest  # the original is untouched


def test_without_top_layer_keeps_empty_layer_entries_above_the_top() -> None:
    base = _append(_base())
    history = [*base.config["history"], {"created_by": "CMD x", "empty_layer": True}]
    image = Image(base.manifest, {**base.config, "history": history}, base.media_type)
    below = image.without_top_layer()
    assert [h["created_by"] for h in below.config["history"]] == [
        "ADD rootfs",
        "ENV PATH=/usr/bin",
        "CMD x",
    ]


label_maps = st.dictionaries(
    st.from_regex(r"[a-z.]{1,8}", fullmatch=True), st.text(max_size=6), max_size=4
)


@given(label_maps, label_maps, st.one_of(st.none(), st.lists(st.text(max_size=8), max_size=3)))
def test_append_round_trips_and_merges(
    old: dict[str, str], new: dict[str, str], env: list[str] | None
) -> None:
    base = _base(config={"Labels": old, "Env": ["A=1"]})
    out = base.append(DESCRIPTOR, history=HISTORY, labels=new, annotations={}, env=env)
    assert out.labels == {**old, **new}
    assert out.env == (["A=1"] if env is None else env)
    assert json.loads(out.config_raw) == out.config
    assert out.manifest["config"]["digest"] == sha256_digest(out.config_raw)
    below = out.without_top_layer()
    assert below.layers == base.layers
    assert below.config["rootfs"] == base.config["rootfs"]
    assert below.config["history"] == base.config["history"]


@pytest.mark.parametrize("media_type", list(MANIFEST_TYPES))
def test_an_unchanged_image_keeps_its_canonical_digest(media_type: MediaType) -> None:
    base = _base(media_type)
    again = Image(json.loads(base.manifest_raw), json.loads(base.config_raw), media_type)
    assert again.digest == base.digest and again.config_raw == base.config_raw
    assert base.manifest["config"]["digest"] == sha256_digest(base.config_raw)
