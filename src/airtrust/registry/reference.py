"""Image references: ``[host[:port]/]path[:tag][@digest]``, as Docker reads them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from airtrust.errors import InputError

__all__ = ["DOCKER_HUB", "Reference", "is_loopback", "parse_reference"]

DOCKER_HUB = "registry-1.docker.io"
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_PATH = re.compile(
    r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
)


@dataclass(frozen=True)
class Reference:
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def ref(self) -> str:
        """What to ask the registry for: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.registry, self.repository, tag, None)

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.registry, self.repository, None, digest)

    def __str__(self) -> str:
        out = f"{self.registry}/{self.repository}"
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def parse_reference(text: str) -> Reference:
    original = text
    text = text.strip()
    digest = None
    if "@" in text:
        text, digest = text.split("@", 1)
        if not _DIGEST.match(digest):
            raise InputError(f"'{original}' has an invalid digest", hint="use @sha256:<64 hex>")
    tag = None
    last = text.rsplit("/", 1)[-1]
    if ":" in last:
        text, tag = text.rsplit(":", 1)
        if not _TAG.match(tag):
            raise InputError(
                f"'{original}' has an invalid tag '{tag}'", hint="tags are [A-Za-z0-9_.-]"
            )
    first, _, rest = text.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
    else:
        registry, path = DOCKER_HUB, text
        if "/" not in path:
            path = f"library/{path}"
    if not path or not _PATH.match(path):
        raise InputError(
            f"'{original}' is not an image reference",
            hint="give HOST[:PORT]/REPOSITORY[:TAG][@DIGEST], e.g. reg.local:5000/team/app:1.0",
        )
    if tag is None and digest is None:
        tag = "latest"
    return Reference(registry, path, tag, digest)


def is_loopback(registry: str) -> bool:
    host = (
        registry.rsplit(":", 1)[0] if not registry.startswith("[") else registry.split("]")[0][1:]
    )
    return host in ("localhost", "127.0.0.1", "::1") or host.startswith("127.")
