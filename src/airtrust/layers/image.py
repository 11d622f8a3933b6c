"""Append a layer to an image's config and manifest (pure), as go-containerregistry's
``mutate.Append`` does.

The registry code only moves bytes; what the new config and manifest say (the
new diff_id, a real history entry, labels, the base-digest annotation) is
decided here, from data alone, so the same inputs always give the same
digests. JSON is serialised compactly in the order it was read, so a config
that passes through unchanged keeps its digest.
"""

from __future__ import annotations

import copy
import enum
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

__all__ = [
    "INDEX_TYPES",
    "LAYER_FOR",
    "MANIFEST_TYPES",
    "Image",
    "LayerDescriptor",
    "MediaType",
    "canonical",
    "sha256_digest",
]


class MediaType(enum.StrEnum):
    OCI_INDEX = "application/vnd.oci.image.index.v1+json"
    OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
    OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
    DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
    DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
    DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"


INDEX_TYPES = (MediaType.OCI_INDEX, MediaType.DOCKER_LIST)
MANIFEST_TYPES = (MediaType.OCI_MANIFEST, MediaType.DOCKER_MANIFEST)
#: The layer media type that goes with each manifest format.
LAYER_FOR = {
    MediaType.OCI_MANIFEST: MediaType.OCI_LAYER_GZIP,
    MediaType.DOCKER_MANIFEST: MediaType.DOCKER_LAYER_GZIP,
}


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical(obj: Any) -> bytes:
    """Compact JSON in insertion order: what registries and crane write."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=False).encode()


@dataclass(frozen=True)
class LayerDescriptor:
    digest: str  # of the compressed blob
    diff_id: str  # of the uncompressed tar
    size: int


@dataclass(frozen=True)
class Image:
    """One platform's manifest and config, as parsed JSON; never mutated."""

    manifest: Mapping[str, Any]
    config: Mapping[str, Any]
    media_type: MediaType

    @cached_property
    def config_raw(self) -> bytes:
        return canonical(self.config)

    @cached_property
    def manifest_raw(self) -> bytes:
        return canonical(self.manifest)

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest_raw)

    @property
    def layers(self) -> list[dict[str, Any]]:
        return list(self.manifest.get("layers", []))

    @property
    def env(self) -> list[str]:
        return list((self.config.get("config") or {}).get("Env") or [])

    @property
    def labels(self) -> dict[str, str]:
        return dict((self.config.get("config") or {}).get("Labels") or {})

    def top_history(self) -> Mapping[str, Any] | None:
        """The history entry of the last layer (empty-layer entries skipped)."""
        layered = [h for h in self.config.get("history", []) if not h.get("empty_layer")]
        if len(layered) != len(self.layers) or not layered:
            return None
        top: Mapping[str, Any] = layered[-1]
        return top

    def without_top_layer(self) -> Image:
        """The image below its last layer: layer, diff_id and history entry removed."""
        config = copy.deepcopy(dict(self.config))
        manifest = copy.deepcopy(dict(self.manifest))
        manifest["layers"] = manifest["layers"][:-1]
        config["rootfs"]["diff_ids"] = config["rootfs"]["diff_ids"][:-1]
        history = config.get("history", [])
        last = max(i for i, h in enumerate(history) if not h.get("empty_layer"))
        config["history"] = history[:last] + history[last + 1 :]
        return Image(manifest, config, self.media_type)

    def append(
        self,
        layer: LayerDescriptor,
        *,
        history: Mapping[str, Any],
        labels: Mapping[str, str],
        annotations: Mapping[str, str],
        env: Sequence[str] | None = None,
    ) -> Image:
        """This image with ``layer`` on top; labels merged into the config, annotations
        into an OCI manifest (Docker schema 2 has none); ``env`` replaces the config's
        ``Env`` when given."""
        config = copy.deepcopy(dict(self.config))
        config["rootfs"]["diff_ids"] = [*config["rootfs"]["diff_ids"], layer.diff_id]
        config["history"] = [*config.get("history", []), dict(history)]
        config.setdefault("config", {})
        config["config"]["Labels"] = {**(config["config"].get("Labels") or {}), **labels}
        if env is not None:
            config["config"]["Env"] = list(env)
        config_raw = canonical(config)
        manifest = copy.deepcopy(dict(self.manifest))
        manifest["config"] = {
            **manifest["config"],
            "digest": sha256_digest(config_raw),
            "size": len(config_raw),
        }
        manifest["layers"] = [
            *manifest["layers"],
            {
                "mediaType": str(LAYER_FOR[self.media_type]),
                "digest": layer.digest,
                "size": layer.size,
            },
        ]
        if self.media_type is MediaType.OCI_MANIFEST and annotations:
            manifest["annotations"] = {**(manifest.get("annotations") or {}), **annotations}
        return Image(manifest, config, self.media_type)
