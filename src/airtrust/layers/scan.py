"""Read what a layer says about the trust store, without unpacking it.

A layer tarball is parsed header by header; bodies are skipped by offset
(no copy) except for the few files whose contents matter (os-release, CA
bundles, and the stores language runtimes carry: certifi's ``cacert.pem``,
grpc's ``roots.pem``, Java's ``cacerts``, kept by file name wherever they are
so a hard link to them still resolves). Whiteouts (``.wh.name``,
``.wh..wh..opq``) are recorded so that a stack of layers can be merged the
way a container runtime does. The result is small, JSON-able, and cached by
layer digest.
"""

from __future__ import annotations

import base64
import io
import itertools
import queue
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BLOCK",
    "CONTENT_PATHS",
    "GZIP_MAGIC",
    "INFLATE_STEP",
    "LISTED_DIRS",
    "PYTHON",
    "RUNTIME_STORE_NAMES",
    "SCAN_VERSION",
    "TYPE_PATHS",
    "ZSTD_MAGIC",
    "ChunkReader",
    "Entry",
    "Header",
    "LayerIndex",
    "iter_headers",
    "normalise",
    "scan_chunks",
    "scan_layer_stream",
    "scan_tar",
    "wanted",
]

BLOCK = 512
#: Bump when what is kept changes: cached indexes of older versions are ignored.
SCAN_VERSION = 6

#: Files whose contents are kept.
CONTENT_PATHS = frozenset(
    {
        "etc/os-release",
        "usr/lib/os-release",
        "etc/ssl/certs/ca-certificates.crt",
        "etc/pki/tls/certs/ca-bundle.crt",
        "etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
        "etc/ssl/cert.pem",
        "etc/ssl/ca-bundle.pem",
    }
)
#: Runtime trust stores, by file name (layers/runtime.py decides which are stores).
RUNTIME_STORE_NAMES = frozenset({"cacert.pem", "roots.pem", "cacerts"})
#: Entries kept for their type, by name: conda prefixes, Node and Java launchers, and
#: the shared libnode of a distro's Node.js build.
_TYPE_NAMES = re.compile(
    r"(?:^|/)(?:conda-meta|bin/node|bin/nodejs|bin/java)$|^usr/lib/(?:[^/]+/)?libnode\.so[.\d]*$"
)
#: Folders whose entries (names, types, link targets) are kept.
LISTED_DIRS = (
    "etc/ssl/",
    "etc/pki/",
    "usr/local/share/ca-certificates/",
    "usr/share/ca-certificates/",
)
#: Single entries kept for their type (a shell, update tools, symlinks on the way).
TYPE_PATHS = frozenset(
    {
        "etc",
        "usr",
        "usr/lib",
        "usr/local",
        "usr/local/share",
        "usr/share",
        "bin",
        "usr/bin",
        "bin/sh",
        "bin/bash",
        "usr/bin/bash",
        "usr/bin/dash",
        "bin/busybox",
        "usr/bin/sh",
        "usr/sbin/update-ca-certificates",
        "usr/bin/update-ca-trust",
        "sbin/update-ca-certificates",
        "usr/bin/openssl",
        "usr/bin/git",
        # What the update tools need to do anything (git-sync v4 has the tool, not these).
        "usr/bin/find",
        "bin/find",
        "usr/bin/trust",
        "usr/bin/run-parts",
        "bin/run-parts",
    }
)


@dataclass(frozen=True)
class Entry:
    path: str  # relative, no leading "./" or "/"
    kind: str  # file, dir, symlink, hardlink, other
    mode: int = 0o644
    link: str = ""
    content: bytes | None = None
    #: owner, kept so a rewritten file keeps it (a venv owned by the notebook user)
    uid: int = 0
    gid: int = 0

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"path": self.path, "kind": self.kind, "mode": self.mode}
        if self.uid or self.gid:
            data["uid"], data["gid"] = self.uid, self.gid
        if self.link:
            data["link"] = self.link
        if self.content is not None:
            data["content"] = base64.b64encode(self.content).decode()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Entry:
        content = data.get("content")
        return cls(
            data["path"],
            data["kind"],
            data.get("mode", 0o644),
            data.get("link", ""),
            base64.b64decode(content) if content is not None else None,
            data.get("uid", 0),
            data.get("gid", 0),
        )


@dataclass
class LayerIndex:
    entries: dict[str, Entry] = field(default_factory=dict)
    whiteouts: set[str] = field(default_factory=set)
    opaque: set[str] = field(default_factory=set)

    def to_json(self) -> dict[str, Any]:
        return {
            "entries": [e.to_json() for e in self.entries.values()],
            "whiteouts": sorted(self.whiteouts),
            "opaque": sorted(self.opaque),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LayerIndex:
        entries = {e["path"]: Entry.from_json(e) for e in data["entries"]}
        return cls(entries, set(data["whiteouts"]), set(data["opaque"]))


def normalise(path: str) -> str:
    path = path.lstrip("/")
    while path.startswith("./"):
        path = path[2:]
    return path.rstrip("/")


#: Python interpreters (for image build-controller): usr/bin/python3.11, ...
PYTHON = re.compile(r"^(?:usr/|usr/local/)?bin/python(3)\.(\d+)$")


def wanted(path: str, extra: frozenset[str] = frozenset()) -> tuple[bool, bool]:
    """(keep the entry, keep its content); ``extra``: more paths whose content is kept
    (files an image's config names, e.g. ``REQUESTS_CA_BUNDLE=/opt/certs/ca.pem``)."""
    if path in CONTENT_PATHS or path in extra or path.rsplit("/", 1)[-1] in RUNTIME_STORE_NAMES:
        return True, True
    if path in TYPE_PATHS or any(path.startswith(d) or path + "/" == d for d in LISTED_DIRS):
        return True, False
    if PYTHON.match(path) or _TYPE_NAMES.search(path):
        return True, False
    return False, False


def _octal(field_: bytes) -> int:
    text = field_.split(b"\0", 1)[0].strip()
    if field_ and field_[0] & 0x80:  # GNU base-256
        return int.from_bytes(field_[1:], "big")
    return int(text, 8) if text else 0


def _pax(data: bytes) -> dict[str, str]:
    out = {}
    pos = 0
    while pos < len(data):
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        record = data[space + 1 : pos + length - 1].decode("utf-8", "surrogateescape")
        key, _, value = record.partition("=")
        out[key] = value
        pos += length
    return out


class _Reader:
    """Sequential reads over a stream of chunks; skipping never copies."""

    def __init__(self, chunks: Iterator[bytes | memoryview]) -> None:
        self._chunks = chunks
        self._buf = memoryview(b"")
        self._pos = 0

    def _more(self) -> bool:
        for chunk in self._chunks:
            if len(chunk):
                rest = self._buf[self._pos :]
                self._buf = (
                    memoryview(bytes(rest) + bytes(chunk)) if len(rest) else memoryview(chunk)
                )
                self._pos = 0
                return True
        return False

    def read(self, n: int) -> memoryview | None:
        while len(self._buf) - self._pos < n:
            if not self._more():
                return None
        out = self._buf[self._pos : self._pos + n]
        self._pos += n
        return out

    def skip(self, n: int) -> None:
        while n > 0:
            available = len(self._buf) - self._pos
            if available >= n:
                self._pos += n
                return
            n -= available
            self._pos = len(self._buf)
            if not self._more():
                return


@dataclass(frozen=True)
class Header:
    name: str
    typeflag: str
    mode: int
    linkname: str
    body: memoryview
    uid: int = 0
    gid: int = 0


def iter_headers(
    data: memoryview | Iterator[bytes | memoryview],
    want_body: Callable[[str], bool] = lambda _name: True,
) -> Iterator[Header]:
    """Each member of an uncompressed tar.

    ``body`` is empty unless ``want_body(path)``; other bodies are skipped.
    """
    reader = _Reader(iter((data,)) if isinstance(data, memoryview) else data)
    long_name: str | None = None
    long_link: str | None = None
    pax: dict[str, str] = {}
    empty = memoryview(b"")
    while True:
        block = reader.read(BLOCK)
        if block is None:
            return
        header = bytes(block)
        if header == b"\0" * BLOCK:
            return
        name = header[0:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        mode = _octal(header[100:108])
        uid = _octal(header[108:116])
        gid = _octal(header[116:124])
        size = _octal(header[124:136])
        typeflag = chr(header[156]) if header[156] else "0"
        linkname = header[157:257].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        if header[257:262] == b"ustar":
            prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            if prefix:
                name = f"{prefix}/{name}"
        padded = ((size + BLOCK - 1) // BLOCK) * BLOCK
        if typeflag in ("L", "K", "x", "X", "g"):
            raw = reader.read(padded)
            body = bytes(raw[:size]) if raw is not None else b""
            if typeflag == "L":
                long_name = body.rstrip(b"\0").decode("utf-8", "surrogateescape")
            elif typeflag == "K":
                long_link = body.rstrip(b"\0").decode("utf-8", "surrogateescape")
            elif typeflag in ("x", "X"):
                pax = _pax(body)
            continue
        name = pax.get("path", long_name or name)
        linkname = pax.get("linkpath", long_link or linkname)
        uid = int(pax.get("uid", uid))
        gid = int(pax.get("gid", gid))
        long_name = long_link = None
        pax = {}
        if size and want_body(name):
            raw = reader.read(padded)
            member = raw[:size] if raw is not None else empty
            yield Header(name, typeflag, mode, linkname, member, uid, gid)
        else:
            reader.skip(padded)
            yield Header(name, typeflag, mode, linkname, empty, uid, gid)


_KINDS = {"0": "file", "7": "file", "5": "dir", "2": "symlink", "1": "hardlink"}


def scan_tar(
    data: bytes | memoryview | Iterator[bytes | memoryview],
    extra: frozenset[str] = frozenset(),
) -> LayerIndex:
    index = LayerIndex()
    source = memoryview(data) if isinstance(data, bytes | bytearray | memoryview) else data

    def want_body(name: str) -> bool:
        return wanted(normalise(name), extra)[1]

    for header in iter_headers(source, want_body):
        typeflag, mode, linkname, body = header.typeflag, header.mode, header.linkname, header.body
        path = normalise(header.name)
        base = path.rsplit("/", 1)[-1]
        parent = path[: -len(base)].rstrip("/")
        if base == ".wh..wh..opq":
            index.opaque.add(parent)
            continue
        if base.startswith(".wh."):
            index.whiteouts.add(f"{parent}/{base[4:]}".lstrip("/"))
            continue
        keep, with_content = wanted(path, extra)
        if not keep:
            continue
        kind = _KINDS.get(typeflag, "other")
        content = bytes(body) if with_content and kind == "file" else None
        link = normalise(linkname) if kind == "hardlink" else linkname
        index.entries[path] = Entry(
            path, kind, mode & 0o7777, link, content, header.uid, header.gid
        )
    return index


GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def scan_layer_stream(chunks: Iterator[bytes], extra: frozenset[str] = frozenset()) -> LayerIndex:
    """Scan while downloading: a thread receives, this thread decompresses and parses.

    The download (socket reads and hashing release the GIL) hides behind the
    decompression, the longest step; measured faster than decompressing in the
    thread too. gzip, zstd and plain tar are told apart by their first bytes,
    not by the media type, which registries and tools sometimes get wrong.
    """
    pipe: queue.Queue[list[bytes] | BaseException | None] = queue.Queue(maxsize=16)

    def receive() -> None:
        # Handed over in batches of about 1 MiB (a list, never joined): one queue
        # operation per batch rather than per 64 KiB read.
        batch: list[bytes] = []
        size = 0
        try:
            for chunk in chunks:
                batch.append(chunk)
                size += len(chunk)
                if size >= 1 << 20:
                    pipe.put(batch)
                    batch, size = [], 0
        except BaseException as exc:  # handed to the consumer, raised there
            pipe.put(exc)
            return
        if batch:
            pipe.put(batch)
        pipe.put(None)

    threading.Thread(target=receive, daemon=True).start()

    def received() -> Iterator[bytes]:
        while True:
            item = pipe.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield b"".join(item)

    stream = received()
    index = scan_chunks(stream, extra)
    for _ in stream:  # drain: the digest is verified when the download ends
        pass
    return index


def scan_chunks(chunks: Iterator[bytes], extra: frozenset[str] = frozenset()) -> LayerIndex:
    """Decompress and parse a layer blob given as chunks, in this thread.

    The caller drains ``chunks`` afterwards if it needs the whole blob read (a tar
    stream ends at its end-of-archive blocks, before the compressed stream does).
    """
    first = next(chunks, b"")
    rest = itertools.chain([first], chunks)
    if first[:2] == GZIP_MAGIC:
        return scan_tar(_inflating(rest), extra)
    if first[:4] == ZSTD_MAGIC:
        return scan_tar(_unzstd(rest), extra)
    return scan_tar(rest, extra)


#: Most bytes one decompression step may produce: a megabyte of zeros inflates to a
#: gigabyte, and memory must not follow the compression ratio.
INFLATE_STEP = 8 << 20
#: Input fed to the inflater at a time: output of a few hundred KiB stays in the CPU
#: cache while the tar parser reads it (measured ~30% faster than 1 MiB pieces here).
INFLATE_INPUT = 1 << 20


def _inflating(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """gunzip with ISA-L (several times faster than zlib here), in bounded steps."""
    from isal import isal_zlib

    inflater: Any = isal_zlib.decompressobj(31)
    for chunk in chunks:
        view = memoryview(chunk)
        for start in range(0, len(view), INFLATE_INPUT):
            pending: bytes | memoryview = view[start : start + INFLATE_INPUT]
            while pending:
                out = inflater.decompress(pending, INFLATE_STEP)
                if out:
                    yield out
                pending = inflater.unconsumed_tail
    tail = inflater.flush()
    if tail:
        yield tail


def _unzstd(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """zstd layers (BuildKit's and podman's ``--compression zstd``), frames back to back."""
    import zstandard

    decompressor = zstandard.ZstdDecompressor()
    source = io.BufferedReader(ChunkReader(chunks))
    reader = decompressor.stream_reader(source, read_across_frames=True)
    while True:
        out = reader.read(INFLATE_STEP)
        if not out:
            return
        yield out


class ChunkReader(io.RawIOBase):
    """A file object over an iterator of byte chunks (a blob as it streams): what tarfile
    and zstandard read from."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, out: Any) -> int:
        """Fill ``out`` as far as the chunks go: tarfile treats a short read as the end
        of the data, and chunks come in whatever sizes the transport delivers."""
        filled = 0
        while filled < len(out):
            if not self.buffer:
                try:
                    self.buffer = next(self.chunks)
                except StopIteration:
                    break
                continue
            n = min(len(out) - filled, len(self.buffer))
            out[filled : filled + n] = self.buffer[:n]
            self.buffer = self.buffer[n:]
            filled += n
        return filled
