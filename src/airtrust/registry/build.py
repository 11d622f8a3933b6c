"""``image build-controller`` and ``image push oci:FILE``: airtrust's own image, no Docker.

The base is read from a registry or from an OCI layout tarball (its layers
only scanned, as ``image patch`` does), pip installs airtrust's wheels for the
base's Python and platform into a folder, and one deterministic layer, a config
and a manifest are written: to the registry (base layers mounted or skipped,
never re-uploaded), or into an OCI layout tarball to carry across the air gap
and push there with ``image push``. scripts/release builds the bundle's image
this way, from a Debian base it makes itself, so the same commit gives the same
digest.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from airtrust.errors import InputError
from airtrust.layers.image import (
    Image,
    LayerDescriptor,
    MediaType,
    canonical,
    sha256_digest,
)
from airtrust.layers.own_image import (
    find_python,
    own_image_config,
    own_image_entries,
    pip_platforms,
)
from airtrust.layers.rootfs import RootFS
from airtrust.layers.scan import ChunkReader, scan_layer_stream
from airtrust.layers.tarball import build_layer
from airtrust.registry.append import ATTESTATION
from airtrust.registry.client import Manifest, RegistryClient
from airtrust.registry.layout import ImageSource, OciLayout
from airtrust.registry.reference import Reference

__all__ = [
    "Base",
    "BuildResult",
    "build_image",
    "image_labels",
    "push_layout",
    "revision",
]

#: The command that made the layer, in the image's history (so part of its digest).
CREATED_BY = "airtrust image build-controller"


@dataclass(frozen=True)
class Base:
    """The image built on: where it is read (a registry's client or an OCI layout),
    under which repository and reference, and its name for messages and labels."""

    source: ImageSource
    repository: str
    ref: str
    name: str

    @classmethod
    def in_registry(cls, client: RegistryClient, reference: Reference) -> Base:
        return cls(client, reference.repository, reference.ref, str(reference))

    @classmethod
    def in_layout(cls, layout: OciLayout, ref: str = "latest") -> Base:
        # Named by the file's name alone: where it was unpacked is no part of the image
        # (the same base gives the same labels, so the same digest, from any folder).
        return cls(layout, "", str(layout.top(ref)["digest"]), f"oci:{layout.path.name}")

    def __str__(self) -> str:
        return self.name


@dataclass
class BuildResult:
    destination: str
    digest: str
    platforms: list[dict[str, str]] = field(default_factory=list)
    #: bytes written to the registry (0 when nothing changed)
    bytes_uploaded: int = 0
    blobs_uploaded: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "digest": self.digest,
            "platforms": self.platforms,
            "bytes_uploaded": self.bytes_uploaded,
            "blobs_uploaded": self.blobs_uploaded,
        }


def _pip_install(wheels: Path, target: Path, platforms: list[str], python: tuple[int, int]) -> None:
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--no-index", "--find-links", str(wheels), "--only-binary=:all:", "--no-compile",
        "--target", str(target), "--implementation", "cp",
        "--python-version", f"{python[0]}.{python[1]}",
        *(a for p in platforms for a in ("--platform", p)),
        "airtrust",
    ]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise InputError(
            f"pip could not install airtrust for Python {python[0]}.{python[1]} "
            f"({platforms[0]}) from {wheels}: {last}",
            hint="give --wheels the wheels/ folder of an offline bundle built for this "
            "platform and Python (scripts/release)",
            reference="wheels-missing",
        )


def _installed(target: Path) -> dict[str, tuple[int, bytes]]:
    """What pip wrote, minus its console scripts (their #! names the build host's Python)."""
    files: dict[str, tuple[int, bytes]] = {}
    for path in sorted(target.rglob("*")):
        rel = path.relative_to(target).as_posix()
        if path.is_file() and not rel.startswith("bin/") and "__pycache__" not in rel:
            files[rel] = (path.stat().st_mode, path.read_bytes())
    return files


def _platform_of(config: dict[str, Any]) -> str:
    return f"{config.get('os', 'linux')}/{config.get('architecture', '?')}"


class _Builder:
    def __init__(self, base: Base, wheels: Path, labels: dict[str, str]) -> None:
        self.base = base
        self.wheels = wheels
        self.labels = labels
        #: digest -> (bytes or a reader of the base's blob) for everything the result needs
        self.blobs: dict[str, tuple[int, Callable[[], Iterator[bytes]]]] = {}

    def _reader(self, digest: str) -> Callable[[], Iterator[bytes]]:
        def read() -> Iterator[bytes]:
            return self.base.source.stream_blob(self.base.repository, digest)

        return read

    def one(self, manifest: Manifest, where: str) -> tuple[Image, str]:
        body = manifest.json()
        source, repository = self.base.source, self.base.repository
        config: dict[str, Any] = json.loads(source.blob(repository, body["config"]["digest"]))
        # Only the paths are needed (where Python is), and a base is read once.
        fs = RootFS.merge(
            scan_layer_stream(source.stream_blob(repository, d["digest"])) for d in body["layers"]
        )
        python, version = find_python(fs, where)
        platforms = pip_platforms(str(config.get("architecture", "")), where)
        with tempfile.TemporaryDirectory(prefix="airtrust-image-") as tmp:
            _pip_install(self.wheels, Path(tmp), platforms, version)
            files = _installed(Path(tmp))
        layer = build_layer(own_image_entries(files, python))
        base = Image(body, own_image_config(config, labels=self.labels), manifest.media_type)
        image = base.append(
            LayerDescriptor(layer.digest, layer.diff_id, layer.size),
            history={
                "created": config.get("created") or "1970-01-01T00:00:00Z",
                "created_by": f"{CREATED_BY}: airtrust {self.labels.get(_VERSION_LABEL, '')}",
                "comment": f"installed for Python {version[0]}.{version[1]} ({python})",
            },
            labels={},
            annotations={**self.labels, "org.opencontainers.image.base.digest": manifest.digest},
        )
        for desc in body["layers"]:
            self.blobs[desc["digest"]] = (int(desc.get("size", 0)), self._reader(desc["digest"]))
        blob, raw = layer.blob, image.config_raw
        self.blobs[layer.digest] = (layer.size, lambda: iter([blob]))
        self.blobs[sha256_digest(raw)] = (len(raw), lambda: iter([raw]))
        return image, f"{_platform_of(config)} python{version[0]}.{version[1]}"


_VERSION_LABEL = "org.opencontainers.image.version"


def _plan(
    base: Base, wheels: Path, labels: dict[str, str]
) -> tuple[_Builder, list[tuple[Image, dict[str, Any] | None, str]], Manifest]:
    base.source.ping()
    builder = _Builder(base, wheels, labels)
    top = base.source.manifest(base.repository, base.ref)
    images: list[tuple[Image, dict[str, Any] | None, str]] = []
    if top.is_index:
        for entry in top.json().get("manifests", []):
            if (entry.get("annotations") or {}).get(ATTESTATION):
                continue
            child = base.source.manifest(base.repository, entry["digest"])
            platform = entry.get("platform") or {}
            where = f"{base} ({platform.get('os')}/{platform.get('architecture')})"
            image, what = builder.one(child, where)
            images.append((image, entry, what))
    else:
        image, what = builder.one(top, str(base))
        images.append((image, None, what))
    return builder, images, top


def _index(top: Manifest, images: list[tuple[Image, dict[str, Any] | None, str]]) -> bytes:
    body = top.json()
    body["manifests"] = [
        {**(entry or {}), "digest": image.digest, "size": len(image.manifest_raw),
         "mediaType": str(image.media_type)}
        for image, entry, _ in images
    ]  # fmt: skip
    return canonical(body)


def revision() -> str:
    """The commit airtrust was built from, when it runs from a checkout; else unknown."""
    here = Path(__file__).resolve().parents[3]
    proc = subprocess.run(
        ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    return proc.stdout.strip() if proc.returncode == 0 else "unknown"


def image_labels(base: Reference | Base) -> dict[str, str]:
    """The OCI annotations of airtrust's image (title, version, revision, source, base)."""
    return {
        "org.opencontainers.image.title": "airtrust",
        "org.opencontainers.image.version": metadata.version("airtrust"),
        "org.opencontainers.image.revision": revision(),
        "org.opencontainers.image.source": "airtrust",
        "org.opencontainers.image.base.name": str(base),
    }


def build_image(
    base: Base,
    wheels: Path,
    *,
    labels: dict[str, str],
    to: Reference | None = None,
    target: RegistryClient | None = None,
    layout: Path | None = None,
) -> BuildResult:
    """Build for every platform of ``base``; push to ``to`` or write the OCI layout tarball."""
    if not (wheels / ".").is_dir():
        raise InputError(
            f"--wheels {wheels} is not a folder",
            hint="give the wheels/ folder of an offline bundle (scripts/release)",
        )
    builder, images, top = _plan(base, wheels, labels)
    if top.is_index:
        top_raw, top_type = _index(top, images), top.media_type
    else:
        top_raw, top_type = images[0][0].manifest_raw, images[0][0].media_type
    digest = sha256_digest(top_raw)
    platforms = [{"platform": what, "digest": image.digest} for image, _, what in images]
    if layout is not None:
        _write_layout(layout, builder, images, top_raw, top_type)
        return BuildResult(f"oci:{layout}", digest, platforms)
    assert to is not None
    if target is None:
        assert isinstance(base.source, RegistryClient), "a build from a layout names its target"
        target = base.source
    dest = target
    before = dest.bytes_uploaded
    uploaded = 0
    source = base.repository if dest is base.source else None
    for blob_digest, (_size, read) in builder.blobs.items():
        how = dest.ensure_blob(to.repository, blob_digest, source=source, data=read)
        uploaded += how == "uploaded"
    for image, _, _ in images:
        dest.put_manifest(to.repository, image.digest, image.manifest_raw, image.media_type)
    dest.put_manifest(to.repository, to.tag or digest, top_raw, top_type)
    return BuildResult(str(to), digest, platforms, dest.bytes_uploaded - before, uploaded)


def _write_layout(
    path: Path,
    builder: _Builder,
    images: list[tuple[Image, dict[str, Any] | None, str]],
    top_raw: bytes,
    top_type: MediaType,
) -> None:
    """An OCI image layout (oci-layout, index.json, blobs/sha256/...) as one tarball."""
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:

            def add(name: str, data: bytes) -> None:
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))

            add("oci-layout", canonical({"imageLayoutVersion": "1.0.0"}))
            for blob_digest, (size, read) in sorted(builder.blobs.items()):
                info = tarfile.TarInfo(f"blobs/sha256/{blob_digest.removeprefix('sha256:')}")
                info.size, info.mode = size, 0o644
                tar.addfile(info, ChunkReader(read()))
            for image, _, _ in images:
                add(f"blobs/sha256/{image.digest.removeprefix('sha256:')}", image.manifest_raw)
            top_digest = sha256_digest(top_raw)
            if len(images) > 1 or top_type in (MediaType.OCI_INDEX, MediaType.DOCKER_LIST):
                add(f"blobs/sha256/{top_digest.removeprefix('sha256:')}", top_raw)
            index = {
                "schemaVersion": 2,
                "mediaType": str(MediaType.OCI_INDEX),
                "manifests": [
                    {"mediaType": str(top_type), "digest": top_digest, "size": len(top_raw)}
                ],
            }
            add("index.json", canonical(index))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def push_layout(layout: OciLayout, client: RegistryClient, to: Reference) -> BuildResult:
    """Push an OCI layout tarball (the bundle's image, or ``--to oci:FILE``) to ``to``: same
    bytes, same digests."""
    client.ping()
    top = layout.top()
    top_raw = layout.blob("", str(top["digest"]))
    top_type = MediaType(top["mediaType"])
    manifests: list[bytes] = []
    if top_type in (MediaType.OCI_INDEX, MediaType.DOCKER_LIST):
        manifests += [layout.blob("", e["digest"]) for e in json.loads(top_raw)["manifests"]]
    else:
        manifests.append(top_raw)
    before, uploaded = client.bytes_uploaded, 0
    for raw in manifests:
        body = json.loads(raw)
        for desc in [body["config"], *body["layers"]]:
            digest = str(desc["digest"])
            how = client.ensure_blob(
                to.repository, digest, source=None, data=_layout_reader(layout, digest)
            )
            uploaded += how == "uploaded"
        client.put_manifest(to.repository, sha256_digest(raw), raw, _type_of(raw))
    client.put_manifest(to.repository, to.tag or top["digest"], top_raw, top_type)
    return BuildResult(str(to), str(top["digest"]), [], client.bytes_uploaded - before, uploaded)


def _layout_reader(layout: OciLayout, digest: str) -> Callable[[], Iterator[bytes]]:
    def read() -> Iterator[bytes]:
        return layout.stream_blob("", digest)

    return read


def _type_of(raw: bytes) -> MediaType:
    return MediaType(json.loads(raw).get("mediaType", MediaType.OCI_MANIFEST))
