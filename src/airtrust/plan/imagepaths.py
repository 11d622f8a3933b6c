"""Find and rewrite image references inside an arbitrary configuration object.

The fields of Run:ai's cluster configuration that name the S3 and Git
sidecar images are not documented, so instead of guessing paths airtrust
walks the whole spec and reports every string that references a sidecar
repository, by JSON pointer (RFC 6901). The config file can pin the
pointers instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

__all__ = [
    "escape",
    "find_image_patches",
    "image_name",
    "references_to",
    "resolve",
    "split_reference",
    "unescape",
    "walk_strings",
]


def split_reference(ref: str) -> tuple[str, str]:
    """'host:5000/a/b:tag' -> ('host:5000/a/b', ':tag'); digests keep their '@'."""
    if "@" in ref:
        repo, _, digest = ref.partition("@")
        return repo, "@" + digest
    last_slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > last_slash:
        return ref[:colon], ref[colon:]
    return ref, ""


def image_name(repository: str) -> str:
    """Last path element: the part mirrors keep ('goofys', 'git-sync')."""
    return repository.rstrip("/").rsplit("/", 1)[-1]


def escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def walk_strings(value: Any, pointer: str = "") -> Iterator[tuple[str, str]]:
    """(JSON pointer, string) for every string leaf, in document order."""
    if isinstance(value, str):
        yield pointer, value
    elif isinstance(value, Mapping):
        for key in value:
            yield from walk_strings(value[key], f"{pointer}/{escape(str(key))}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from walk_strings(item, f"{pointer}/{index}")


def resolve(document: Any, pointer: str) -> Any:
    """The value at ``pointer``; KeyError when the path does not exist."""
    current = document
    for token in pointer.split("/")[1:]:
        token = unescape(token)
        if isinstance(current, list):
            if not token.isdigit() or int(token) >= len(current):
                raise KeyError(pointer)
            current = current[int(token)]
        elif isinstance(current, Mapping) and token in current:
            current = current[token]
        else:
            raise KeyError(pointer)
    return current


def references_to(repository: str, candidate: str) -> bool:
    """Whether ``candidate`` is an image reference of ``repository`` or one of its mirrors."""
    repo, _ = split_reference(candidate.strip())
    if not repo or " " in repo:
        return False
    return repo == repository or image_name(repo) == image_name(repository)


def find_image_patches(
    spec: Any,
    replacements: Mapping[str, str],
    *,
    root: str = "/spec",
    pinned: tuple[str, ...] = (),
) -> list[tuple[str, str, str]]:
    """(pointer, old, new) for each string that must point at a patched image.

    ``replacements`` maps a source repository to the new full reference.
    Strings already equal to their new reference need no patch.
    """
    patches = []
    if pinned:
        for pointer in pinned:
            relative = pointer.removeprefix(root) if pointer.startswith(root + "/") else pointer
            old = resolve(spec, relative)
            if not isinstance(old, str):
                raise KeyError(pointer)
            new = next((n for src, n in replacements.items() if references_to(src, old)), None)
            if new is not None and old != new:
                patches.append((root + relative, old, new))
        return patches
    for pointer, value in walk_strings(spec):
        for source, new in replacements.items():
            if references_to(source, value) and value != new:
                patches.append((root + pointer, value, new))
                break
    return patches
