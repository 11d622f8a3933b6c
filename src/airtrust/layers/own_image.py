"""The airtrust image's one layer and config, from a base with Python (pure).

One image runs every in-cluster part (``sync``, ``inject serve``, the node agent),
so it is named for what it is, airtrust's own image, not for one of them.

airtrust is pure Python plus wheels with compiled parts (cryptography, pydantic,
ISA-L, zstd), so the layer holds the packages pip installed for the *base's*
Python and platform (read from the base), under /opt/airtrust/lib, and a
launcher that runs them with that interpreter. No Docker, no build step that
runs code in the image: the base is read from the registry, the layer is
written here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airtrust.errors import InputError
from airtrust.layers.rootfs import RootFS
from airtrust.layers.scan import PYTHON, Entry

__all__ = [
    "LAUNCHER",
    "LIB",
    "MIN_PYTHON",
    "USER",
    "find_python",
    "launcher",
    "own_image_config",
    "own_image_entries",
    "pip_platforms",
]

LIB = "opt/airtrust/lib"
LAUNCHER = "usr/local/bin/airtrust"
MIN_PYTHON = (3, 11)
#: non-root, as the rendered Deployment's securityContext expects
USER = "65532:65532"
_ARCHES = {"amd64": "x86_64", "arm64": "aarch64"}


def find_python(fs: RootFS, where: str) -> tuple[str, tuple[int, int]]:
    """The base's newest Python 3 interpreter: (path, (major, minor)); refused (one line,
    naming what was found) when there is none or it is older than airtrust needs."""
    found: list[tuple[tuple[int, int], str]] = []
    for path in fs.entries:
        match = PYTHON.match(path)
        if match:
            found.append(((int(match.group(1)), int(match.group(2))), path))
    if not found:
        raise InputError(
            f"{where} has no Python (no /usr/bin/python3.N or /usr/local/bin/python3.N)",
            hint="give a base image with Python 3.11 or newer (e.g. Debian bookworm + python3)",
            reference="base-without-python",
        )
    version, path = max(found, key=lambda f: (f[0], f[1].startswith("usr/bin")))
    if version < MIN_PYTHON:
        raise InputError(
            f"{where} has Python {version[0]}.{version[1]} (/{path}); airtrust needs "
            f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer",
            hint="give a base image with a newer Python",
            reference="base-python-too-old",
        )
    return "/" + path, version


def pip_platforms(architecture: str, where: str) -> list[str]:
    """The manylinux tags pip may pick wheels for on this architecture."""
    arch = _ARCHES.get(architecture)
    if arch is None:
        raise InputError(
            f"{where} is for {architecture}; airtrust ships wheels for amd64 and arm64",
            hint="give an amd64 or arm64 base",
            reference="base-arch-unsupported",
        )
    return [f"manylinux_{g}_{arch}" for g in ("2_34", "2_28", "2_17")] + [f"manylinux2014_{arch}"]


def launcher(python: str) -> bytes:
    return (
        f"#!{python}\n"
        "# airtrust, installed for this image's Python by 'airtrust image build-controller'.\n"
        "import sys\n"
        f"sys.path.insert(0, '/{LIB}')\n"
        "from airtrust.cli.entry import run\n"
        "run()\n"
    ).encode()


def own_image_entries(files: Mapping[str, tuple[int, bytes]], python: str) -> list[Entry]:
    """The layer: the installed packages (relative path -> (mode, bytes)) under /opt/airtrust/lib
    and the launcher; directories made explicit, everything root-owned and dated 0."""
    entries = [Entry(LAUNCHER, "file", 0o755, content=launcher(python))]
    dirs = {"opt", "opt/airtrust", LIB, "usr", "usr/local", "usr/local/bin"}
    for rel, (mode, data) in sorted(files.items()):
        path = f"{LIB}/{rel}"
        entries.append(Entry(path, "file", 0o755 if mode & 0o111 else 0o644, content=data))
        parts = path.split("/")
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
    entries += [Entry(d, "dir", 0o755) for d in sorted(dirs)]
    return sorted(entries, key=lambda e: e.path)


def own_image_config(config: Mapping[str, Any], *, labels: Mapping[str, str]) -> dict[str, Any]:
    """The base's config with airtrust's entrypoint (``airtrust sync``), user and labels."""
    out = dict(config)
    inner = dict(out.get("config") or {})
    inner["Entrypoint"] = [f"/{LAUNCHER}"]
    inner["Cmd"] = ["sync"]
    inner["User"] = USER
    env = [e for e in inner.get("Env") or [] if not e.startswith("PYTHONDONTWRITEBYTECODE=")]
    inner["Env"] = [*env, "PYTHONDONTWRITEBYTECODE=1"]
    inner["Labels"] = {**(inner.get("Labels") or {}), **labels}
    out["config"] = inner
    return out
