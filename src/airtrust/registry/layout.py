"""An OCI image layout tarball (``oci:FILE``), read as a registry is read.

What crosses the air gap is a file, not a registry: the offline bundle's
``images/airtrust-<v>.oci.tar``, or what ``image build-controller --to oci:``
wrote. :class:`OciLayout` gives it the read half of
:class:`~airtrust.registry.client.RegistryClient` (``ping``, ``manifest``,
``blob``, ``stream_blob``), so the code that builds from a base in a registry
builds from a base in a file, and ``image push`` streams a layout's blobs as it
would copy them between registries. Every blob is checked against its digest as
it is read, as a registry client checks what it downloads.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Protocol

from airtrust.errors import InputError
from airtrust.layers.image import MediaType
from airtrust.registry.client import Manifest

__all__ = ["REF_NAME", "ImageSource", "OciLayout"]

CHUNK = 1 << 20
#: the annotation an OCI layout's index names an image by (``oci:FILE:NAME``)
REF_NAME = "org.opencontainers.image.ref.name"


class ImageSource(Protocol):
    """Where an image is read from: a registry (RegistryClient) or an OCI layout."""

    def ping(self) -> None: ...

    def manifest(self, repository: str, ref: str) -> Manifest: ...

    def blob(self, repository: str, digest: str) -> bytes: ...

    def stream_blob(self, repository: str, digest: str) -> Iterator[bytes]: ...


class OciLayout:
    """One OCI layout tarball (oci-layout, index.json, blobs/sha256/...), read-only.

    ``repository`` arguments are ignored: a layout holds one set of blobs. ``ref`` is a
    digest, a name from the index's ``org.opencontainers.image.ref.name`` annotations,
    or ``latest`` for the index's only entry."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._tar = tarfile.open(path)
        except (OSError, tarfile.TarError) as exc:
            raise InputError(
                f"{path} is not an OCI layout tarball ({exc})",
                hint="give the images/airtrust-<version>.oci.tar of an offline bundle, or "
                "a file image build-controller --to oci:FILE wrote",
                reference="oci-layout",
            ) from None
        try:
            index = json.loads(self._read("index.json"))
            self.entries: list[dict[str, Any]] = list(index["manifests"])
        except (KeyError, TypeError, ValueError) as exc:
            self._tar.close()
            raise InputError(
                f"{path} has no usable index.json ({exc})",
                hint="write or copy the layout again",
                reference="oci-layout",
            ) from None
        if not self.entries:
            self._tar.close()
            raise InputError(
                f"{path} holds no image (index.json lists none)",
                hint="write or copy the layout again",
                reference="oci-layout",
            )

    def close(self) -> None:
        self._tar.close()

    def __enter__(self) -> OciLayout:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __str__(self) -> str:
        return f"oci:{self.path}"

    def top(self, ref: str = "latest") -> dict[str, Any]:
        """The index entry ``ref`` names."""
        if ref.startswith("sha256:"):
            for entry in self.entries:
                if entry.get("digest") == ref:
                    return entry
        named = [e for e in self.entries if (e.get("annotations") or {}).get(REF_NAME) == ref]
        if named:
            return named[0]
        if ref == "latest" and len(self.entries) == 1:
            return self.entries[0]
        names = sorted(
            str((e.get("annotations") or {}).get(REF_NAME, e.get("digest"))) for e in self.entries
        )
        raise InputError(
            f"{self.path} holds no image named {ref} (it holds: {', '.join(names)})",
            hint="name one of those, or the image's digest",
            reference="oci-layout",
        )

    # --- the read half of RegistryClient ---------------------------------------------

    def ping(self) -> None:
        """A file is always there once opened."""

    def manifest(self, repository: str, ref: str) -> Manifest:
        entry = self.top(ref) if not ref.startswith("sha256:") else {"digest": ref}
        digest = str(entry["digest"])
        raw = self.blob(repository, digest)
        kind = json.loads(raw).get("mediaType") or entry.get("mediaType") or MediaType.OCI_MANIFEST
        return Manifest(raw, MediaType(kind), digest)

    def blob(self, repository: str, digest: str) -> bytes:
        return b"".join(self.stream_blob(repository, digest))

    def stream_blob(self, repository: str, digest: str) -> Iterator[bytes]:
        handle = self._open(f"blobs/sha256/{digest.removeprefix('sha256:')}")
        return self._verified(handle, digest)

    # --- the tarball -------------------------------------------------------------------

    def _verified(self, handle: IO[bytes], digest: str) -> Iterator[bytes]:
        hasher = hashlib.sha256()
        with handle:
            while chunk := handle.read(CHUNK):
                hasher.update(chunk)
                yield chunk
        if f"sha256:{hasher.hexdigest()}" != digest:
            raise InputError(
                f"{self.path}: blob {digest} does not match its digest (the file is damaged)",
                hint="copy the layout again and check it against the bundle's SHA256SUMS",
                reference="oci-layout",
            )

    def _open(self, name: str) -> IO[bytes]:
        handle = None
        try:
            handle = self._tar.extractfile(name)
        except KeyError:
            pass
        if handle is None:
            raise InputError(
                f"{self.path} lacks {name}",
                hint="copy the layout again and check it against the bundle's SHA256SUMS",
                reference="oci-layout",
            )
        return handle

    def _read(self, name: str) -> bytes:
        with self._open(name) as handle:
            return handle.read()
