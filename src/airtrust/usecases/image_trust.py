"""``image inspect`` and ``image dockerfile``: an image's trust stores, read from the registry.

Both read a base the way ``image patch`` does (manifests and layers from the
registry, nothing unpacked, no daemon): ``inspect`` judges every client's store
against the CAs, ``dockerfile`` writes a build context for the teams that must
build the image themselves. The client is opened and closed here, with the same
TLS and credentials as every other registry command (:class:`RegistryAccess`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from airtrust.files import OutputSet
from airtrust.layers.dockerfile import BuildContext, build_context
from airtrust.pki.truststore import DEFAULT_STORE_PASSWORD
from airtrust.registry import append
from airtrust.registry.append import TrustReport
from airtrust.registry.reference import Reference
from airtrust.usecases.patching import RegistryAccess

__all__ = ["WrittenContext", "inspect_image", "write_build_context"]


def inspect_image(
    access: RegistryAccess,
    ref: Reference,
    cas: Sequence[x509.Certificate],
    *,
    store_password: str = DEFAULT_STORE_PASSWORD,
) -> list[TrustReport]:
    """Per platform, does each client's store hold every CA? Read-only: nothing is pushed."""
    with access.client(ref.registry) as client:
        return append.inspect_image(client, ref, cas, store_password=store_password)


@dataclass(frozen=True)
class WrittenContext:
    """The build context written, and the files that hold it."""

    context: BuildContext
    files: list[Path]


def write_build_context(
    access: RegistryAccess,
    source: str,
    ref: Reference,
    cas: Sequence[x509.Certificate],
    out: Path,
    *,
    force: bool = False,
) -> WrittenContext:
    """A Dockerfile (``FROM source``) and anchors/ adapted to the base's distro, into
    ``out``: all files or none (``OutputSet``), so a refused overwrite leaves no half context.

    ``source`` is the reference as the user wrote it (the Dockerfile's ``FROM``);
    ``ref`` is it parsed, for reading the base."""
    with access.client(ref.registry) as client:
        layout, fs, config = append.base_layout(client, ref)
    context = build_context(source, layout, fs, config, cas)
    outputs = OutputSet(force=force)
    for name, data in context.files.items():
        outputs.add(out / name, data)
    return WrittenContext(context, outputs.commit())
