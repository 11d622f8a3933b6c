"""The AI workload image for the runtime trust tests, built from real parts and cached.

Its recipe (a Debian base with a JRE, Node.js, curl and git; an /opt layer with
a real venv and a conda-style prefix; filler layers of AI sizes) is testkit's,
shared with the benches; see testkit/images.py. This module adds the small
extra layers only tests make.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from testkit.images import (
    AI_PACKAGES,
    GZIP,
    NOTEBOOK_UID,
    WHEELS,
    ai_layers,
    filler_layers,
    gzip_layer,
    push_oci,
    wheels,
)

__all__ = [
    "AI_PACKAGES",
    "GZIP",
    "NOTEBOOK_UID",
    "WHEELS",
    "ai_layers",
    "extra_layer",
    "filler_layers",
    "gzip_layer",
    "push_oci",
    "wheels",
]


def extra_layer(path: Path, files: dict[str, bytes]) -> Path:
    """A small layer tarball of regular files (mode 0644, root-owned)."""
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return path
