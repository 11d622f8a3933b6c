"""Deterministic layer tarballs: same entries, same bytes, same digests.

Entries are sorted, owned by their entry's uid:gid (0:0 for new files; a
rewritten file keeps its owner) with empty user/group names, mtime 0,
USTAR format; gzip with mtime 0, no file name and a fixed level. This is
what go-containerregistry's ``mutate.Canonical`` does for whole images.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass

from airtrust.layers.scan import Entry

__all__ = ["GZIP_LEVEL", "Layer", "build_layer", "build_tar"]

GZIP_LEVEL = 6


@dataclass(frozen=True)
class Layer:
    blob: bytes  # gzip-compressed tar, as pushed
    digest: str  # sha256 of blob
    diff_id: str  # sha256 of the uncompressed tar
    size: int


def build_tar(entries: Sequence[Entry]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(entries, key=lambda e: e.path):
            info = tarfile.TarInfo(entry.path)
            info.mtime = 0
            info.uid, info.gid = entry.uid, entry.gid
            info.uname = info.gname = ""
            info.mode = entry.mode
            data = None
            if entry.kind == "dir":
                info.type = tarfile.DIRTYPE
            elif entry.kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = entry.link
            else:
                info.type = tarfile.REGTYPE
                data = entry.content or b""
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


#: Layers built in this process, by diff_id (see build_layer).
_BUILT: dict[str, Layer] = {}
_BUILT_KEPT = 16


def build_layer(entries: Sequence[Entry]) -> Layer:
    """The layer of these entries. The tar is built every time (cheap); compressing it,
    most of the cost, happens once per content in a process: the images of a fleet on
    one base get the same CA layer, byte for byte."""
    tar = build_tar(entries)
    diff_id = "sha256:" + hashlib.sha256(tar).hexdigest()
    layer = _BUILT.get(diff_id)
    if layer is None:
        blob = gzip.compress(tar, compresslevel=GZIP_LEVEL, mtime=0)
        layer = Layer(
            blob=blob,
            digest="sha256:" + hashlib.sha256(blob).hexdigest(),
            diff_id=diff_id,
            size=len(blob),
        )
        if len(_BUILT) >= _BUILT_KEPT:  # bounded; clear() is safe beside other threads
            _BUILT.clear()
        _BUILT[diff_id] = layer
    return layer
