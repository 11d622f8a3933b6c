"""Find and rewrite image references inside an arbitrary configuration object.

The fields of Run:ai's cluster configuration that name the S3 and Git
sidecar images are not documented, so instead of guessing paths airtrust
walks the whole spec and reports every string that references a sidecar
repository, by JSON pointer (RFC 6901). The config file can pin the
pointers instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ImagePatch",
    "ImagePlan",
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


@dataclass(frozen=True)
class ImagePatch:
    """One field of the cluster configuration to point at a patched image.

    ``old`` is None when the field does not exist yet; then it is added, with
    ``create`` naming the missing parent objects to add first (outermost first).
    """

    pointer: str
    old: str | None
    new: str
    create: tuple[str, ...] = ()

    def ops(self) -> list[dict[str, Any]]:
        """RFC 6902 operations: test + replace an existing value, or add it (and parents)."""
        if self.old is None:
            parents = [{"op": "add", "path": p, "value": {}} for p in self.create]
            return [*parents, {"op": "add", "path": self.pointer, "value": self.new}]
        return [
            {"op": "test", "path": self.pointer, "value": self.old},
            {"op": "replace", "path": self.pointer, "value": self.new},
        ]

    def reason(self) -> str:
        return f"{self.pointer}: {self.old if self.old is not None else '(absent)'} -> {self.new}"


@dataclass(frozen=True)
class ImagePlan:
    """What to change in the cluster configuration, and what could not be decided."""

    patches: tuple[ImagePatch, ...] = ()
    #: the spec holds no reference to any sidecar repository (and nothing is pinned)
    nothing_found: bool = False
    #: pinned pointers that do not exist and name no sidecar to put there
    unresolved: tuple[str, ...] = ()


def _missing_parents(spec: Any, relative: str, root: str) -> tuple[str, ...] | None:
    """Parent pointers of ``relative`` absent from ``spec`` (outermost first); None when a
    parent exists but is not an object (nothing can be added under it)."""
    raw = relative.split("/")[1:-1]
    current = spec
    for depth, token in enumerate(raw):
        if not isinstance(current, Mapping):
            return None
        if unescape(token) not in current:
            return tuple(root + "/" + "/".join(raw[: d + 1]) for d in range(depth, len(raw)))
        current = current[unescape(token)]
    return () if isinstance(current, Mapping) else None


def find_image_patches(
    spec: Any,
    replacements: Mapping[str, str],
    *,
    root: str = "/spec",
    pinned: Mapping[str, str | None] | None = None,
    sidecars: Mapping[str, str] | None = None,
) -> ImagePlan:
    """The image fields of ``spec`` that must point at patched images.

    ``replacements`` maps a source repository to the new full reference.
    ``pinned`` maps JSON pointers to the sidecar role that belongs there (or None: the
    field must already name its image); ``sidecars`` maps roles to source repositories.
    Without pins every string that names a sidecar repository is found. Strings already
    equal to their new reference need no patch.
    """
    spec = spec if spec is not None else {}
    if pinned:
        patches: list[ImagePatch] = []
        unresolved: list[str] = []
        for pointer, role in pinned.items():
            relative = pointer.removeprefix(root) if pointer.startswith(root + "/") else pointer
            try:
                old = resolve(spec, relative)
            except KeyError:
                old = None
            if old is not None and not isinstance(old, str):
                unresolved.append(pointer)
                continue
            if old is None:
                source = (sidecars or {}).get(role or "")
                new = replacements.get(source or "")
                parents = _missing_parents(spec, relative, root)
                if new is None or parents is None:
                    unresolved.append(pointer)
                    continue
                patches.append(ImagePatch(root + relative, None, new, parents))
                continue
            new = next((n for src, n in replacements.items() if references_to(src, old)), None)
            if new is not None and old != new:
                patches.append(ImagePatch(root + relative, old, new))
        return ImagePlan(tuple(patches), unresolved=tuple(unresolved))
    found: list[ImagePatch] = []
    seen = False
    for pointer, value in walk_strings(spec):
        for source, new in replacements.items():
            if references_to(source, value) or value == new:
                seen = True
            if references_to(source, value) and value != new:
                found.append(ImagePatch(root + pointer, value, new))
                break
    return ImagePlan(tuple(found), nothing_found=not seen)
