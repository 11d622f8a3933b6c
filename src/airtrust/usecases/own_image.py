"""airtrust's own image: ``image build-controller`` and ``image push oci:FILE``.

Where the base is read (a registry or an OCI layout tarball) and where the
result goes (a registry, possibly another one, or a layout tarball) decide
which clients are opened; the building itself is :mod:`airtrust.registry.build`.
On the isolated side the bundle's ``images/airtrust-<v>.oci.tar`` is pushed
with the same TLS and credentials options as every other registry command.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from airtrust.errors import InputError
from airtrust.registry.build import Base, BuildResult, build_image, image_labels, push_layout
from airtrust.registry.layout import OciLayout
from airtrust.registry.reference import parse_reference
from airtrust.usecases.patching import RegistryAccess

__all__ = ["build_own_image", "push_own_image"]

OCI = "oci:"


def _layout_path(text: str, what: str) -> Path:
    path = Path(text.removeprefix(OCI))
    if not path.is_file():
        raise InputError(
            f"{what} {text}: no such file",
            hint="give the path of an OCI layout tarball, e.g. "
            "oci:images/airtrust-<version>.oci.tar from the offline bundle",
            reference="oci-layout",
        )
    return path


def build_own_image(access: RegistryAccess, base: str, to: str, wheels: Path) -> BuildResult:
    """Build from ``base`` (REGISTRY/REPO:TAG or oci:FILE) to ``to`` (the same forms)."""
    with contextlib.ExitStack() as stack:
        read_from: str | None = None  # the base's registry, when it is in one
        if base.startswith(OCI):
            layout = stack.enter_context(OciLayout(_layout_path(base, "--base")))
            source = Base.in_layout(layout)
        else:
            ref = parse_reference(base)
            read_from = ref.registry
            source = Base.in_registry(stack.enter_context(access.client(ref.registry)), ref)
        labels = image_labels(source)
        if to.startswith(OCI):
            return build_image(source, wheels, labels=labels, layout=Path(to.removeprefix(OCI)))
        dest = parse_reference(to)
        target = None
        if dest.registry != read_from:
            target = stack.enter_context(access.client(dest.registry))
        return build_image(source, wheels, labels=labels, to=dest, target=target)


def push_own_image(access: RegistryAccess, layout: str, to: str) -> BuildResult:
    """Push an OCI layout tarball (``oci:FILE``) to ``to``, digests unchanged."""
    if not layout.startswith(OCI):
        raise InputError(
            f"{layout} is not oci:FILE",
            hint="e.g. oci:images/airtrust-<version>.oci.tar from the offline bundle",
            reference="oci-layout",
        )
    dest = parse_reference(to)
    with (
        OciLayout(_layout_path(layout, "image push")) as image,
        access.client(dest.registry) as client,
    ):
        return push_layout(image, client, dest)
