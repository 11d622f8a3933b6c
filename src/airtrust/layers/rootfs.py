"""The merged view of an image's layers, limited to what the trust store needs.

Layers are applied bottom to top with whiteouts, as a container runtime
does. Paths are resolved through symlinks against this view, so writes land
on the real target (``/etc/ssl/certs`` -> ``/etc/pki/tls/certs`` on RHEL)
and airtrust never puts a directory where the base has a symlink.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field

from airtrust.layers.scan import Entry, LayerIndex

__all__ = ["RootFS", "relative_link"]


@dataclass
class RootFS:
    entries: dict[str, Entry] = field(default_factory=dict)

    @classmethod
    def merge(cls, layers: Iterable[LayerIndex]) -> RootFS:
        fs = cls()
        for layer in layers:  # bottom first
            for opaque in layer.opaque:
                prefix = opaque + "/" if opaque else ""
                for path in [p for p in fs.entries if p.startswith(prefix)]:
                    del fs.entries[path]
            for gone in layer.whiteouts:
                for path in [p for p in fs.entries if p == gone or p.startswith(gone + "/")]:
                    del fs.entries[path]
            fs.entries.update(layer.entries)
        return fs

    def resolve(self, path: str, *, follow_last: bool = True) -> str:
        """The real path of ``path`` after symlinks (absolute and relative), max 40 hops."""
        parts = [p for p in path.strip("/").split("/") if p and p != "."]
        resolved: list[str] = []
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            candidate = "/".join([*resolved, part])
            entry = self.entries.get(candidate)
            is_last = not parts
            if entry is not None and entry.kind == "symlink" and (follow_last or not is_last):
                hops += 1
                if hops > 40:
                    return candidate
                target = entry.link
                if target.startswith("/"):
                    resolved = []
                    parts = [p for p in target.split("/") if p and p != "."] + parts
                else:
                    parts = [p for p in target.split("/") if p and p != "."] + parts
                continue
            resolved.append(part)
        return "/".join(resolved)

    def get(self, path: str) -> Entry | None:
        entry = self.entries.get(self.resolve(path))
        if entry is not None and entry.kind == "hardlink":
            return self.entries.get(entry.link)
        return entry

    def read(self, path: str) -> bytes | None:
        entry = self.get(path)
        return entry.content if entry is not None and entry.kind == "file" else None

    def exists(self, path: str) -> bool:
        """Whether ``path`` is there; a symlink counts even if its target was not indexed."""
        return self.get(path) is not None or (
            self.entries.get(self.resolve(path, follow_last=False)) is not None
        )

    def is_dir(self, path: str) -> bool:
        entry = self.get(path)
        return entry is not None and entry.kind == "dir"

    def list_dir(self, path: str) -> list[str]:
        real = self.resolve(path)
        prefix = real + "/" if real else ""
        return sorted(
            p[len(prefix) :]
            for p in self.entries
            if p.startswith(prefix) and "/" not in p[len(prefix) :]
        )

    def os_release(self) -> dict[str, str]:
        raw = self.read("etc/os-release") or self.read("usr/lib/os-release") or b""
        out = {}
        for line in raw.decode("utf-8", "replace").splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() and not key.startswith("#"):
                out[key.strip()] = value.strip().strip('"').strip("'")
        return out


def relative_link(source: str, target: str) -> str:
    """A relative symlink value that points from ``source`` to ``target`` (both real paths)."""
    return posixpath.relpath("/" + target, "/" + posixpath.dirname(source))
