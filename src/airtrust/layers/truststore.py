"""What one layer must contain so every common client in an image trusts the CA.

Clients read different files (shared reference trust-stores.md): OpenSSL,
curl and Python the distro bundle or ``/etc/ssl/certs`` hash links; GnuTLS
(git in git-sync) the bundle; Go the first bundle it finds. So the layer:

* rewrites each distro bundle that exists as the existing bundle plus the
  CA (newline-safe, CAs already present are not added twice);
* puts the CA in the distro's anchor directory so a later
  ``update-ca-certificates`` / ``update-ca-trust`` keeps it;
* adds ``airtrust-<fp>.pem`` and OpenSSL ``<subject_hash>.N`` links in
  ``/etc/ssl/certs``;
* creates ``/etc/ssl/certs/ca-certificates.crt`` in an image with no trust
  store at all (Go and OpenSSL read it).

All paths are resolved against the base image first: a write never creates
a directory where the base has a symlink.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509

from airtrust.layers.rootfs import RootFS, relative_link
from airtrust.layers.scan import Entry
from airtrust.pki.bundle import certificate_to_pem, fingerprint, pem_fingerprints
from airtrust.pki.truststore import subject_hash

__all__ = [
    "ANCHOR_DIRS",
    "BUNDLES",
    "CERT_DIR",
    "DEFAULT_BUNDLE",
    "UPDATE_TOOLS",
    "UPDATE_TOOL_NEEDS",
    "Layout",
    "detect_layout",
    "file_name",
    "joined_bundle",
    "trust_layer",
]

BUNDLES = (
    "etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine, git-sync (staged Debian)
    "etc/pki/tls/certs/ca-bundle.crt",  # RHEL, UBI, Fedora (usually a symlink)
    "etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",  # RHEL's extracted bundle
    "etc/ssl/cert.pem",  # Alpine, macOS-style
    "etc/ssl/ca-bundle.pem",  # SUSE
)
DEFAULT_BUNDLE = "etc/ssl/certs/ca-certificates.crt"
CERT_DIR = "etc/ssl/certs"
ANCHOR_DIRS = {
    "debian": "usr/local/share/ca-certificates",
    "alpine": "usr/local/share/ca-certificates",
    "rhel": "etc/pki/ca-trust/source/anchors",
    "suse": "etc/pki/trust/anchors",
}
UPDATE_TOOLS = {
    "debian": ("usr/sbin/update-ca-certificates", "update-ca-certificates"),
    "alpine": ("usr/sbin/update-ca-certificates", "update-ca-certificates"),
    "rhel": ("usr/bin/update-ca-trust", "update-ca-trust extract"),
    "suse": ("usr/sbin/update-ca-certificates", "update-ca-certificates"),
}
#: What each update tool runs; without it the tool exits 0 and adds nothing (Debian's
#: finds local certificates with find(1): git-sync v4 stages the tool but not find).
UPDATE_TOOL_NEEDS = {
    "debian": (("find", ("usr/bin/find", "bin/find")),),
    "suse": (("find", ("usr/bin/find", "bin/find")),),
    "rhel": (("trust (p11-kit)", ("usr/bin/trust",)),),
}
_FAMILIES = {
    "debian": "debian",
    "ubuntu": "debian",
    "alpine": "alpine",
    "rhel": "rhel",
    "centos": "rhel",
    "fedora": "rhel",
    "rocky": "rhel",
    "almalinux": "rhel",
    "ol": "rhel",
    "amzn": "rhel",
    "sles": "suse",
    "opensuse": "suse",
    "suse": "suse",
}


@dataclass(frozen=True)
class Layout:
    """The base image's trust store as found in its layers."""

    family: str  # debian, alpine, rhel, suse, or unknown
    os_name: str
    bundles: tuple[str, ...]  # real paths of existing bundle files
    anchor_dir: str | None
    has_shell: bool
    update_tool: str | None  # the command, when the base has it
    #: what the update tool needs and the base lacks (then running it adds nothing)
    update_tool_lacks: tuple[str, ...] = ()

    @property
    def can_update(self) -> bool:
        """Would ``RUN <update tool>`` in a Dockerfile really add the CA?"""
        return bool(
            self.has_shell and self.update_tool and self.anchor_dir and not self.update_tool_lacks
        )


def detect_layout(fs: RootFS) -> Layout:
    release = fs.os_release()
    ids = [release.get("ID", "").lower(), *release.get("ID_LIKE", "").lower().split()]
    family = next((_FAMILIES[i] for i in ids if i in _FAMILIES), "unknown")
    bundles: list[str] = []
    for candidate in BUNDLES:
        real = fs.resolve(candidate)
        entry = fs.entries.get(real)
        if entry is not None and entry.kind == "file" and real not in bundles:
            bundles.append(real)
    anchor = ANCHOR_DIRS.get(family)
    if anchor is None and fs.is_dir("usr/local/share/ca-certificates"):
        anchor = "usr/local/share/ca-certificates"
    tool = None
    lacks: list[str] = []
    if family in UPDATE_TOOLS:
        path, command = UPDATE_TOOLS[family]
        if fs.exists(path) or fs.exists("sbin/" + path.rsplit("/", 1)[-1]):
            tool = command
            for name, paths in UPDATE_TOOL_NEEDS.get(family, ()):
                if not any(fs.exists(p) for p in paths):
                    lacks.append(name)
    return Layout(
        family=family,
        os_name=release.get("PRETTY_NAME", release.get("ID", "no os-release")),
        bundles=tuple(bundles),
        anchor_dir=fs.resolve(anchor) if anchor else None,
        has_shell=fs.exists("bin/sh") or fs.exists("usr/bin/sh"),
        update_tool=tool,
        update_tool_lacks=tuple(lacks),
    )


def file_name(cert: x509.Certificate) -> str:
    return f"airtrust-{fingerprint(cert)[:16]}"


def joined_bundle(existing: bytes, additions: Sequence[x509.Certificate]) -> bytes:
    """The existing bundle plus the CAs it lacks, each block on its own lines."""
    present: frozenset[str] = frozenset()
    if existing.strip():  # a bundle we cannot parse is kept as is; we only append
        present = pem_fingerprints(existing) or frozenset()
    out = existing if not existing or existing.endswith(b"\n") else existing + b"\n"
    for cert in additions:
        if fingerprint(cert) not in present:
            out += certificate_to_pem(cert)
    return out


def trust_layer(
    fs: RootFS, cas: Sequence[x509.Certificate], *, seed: bytes = b""
) -> tuple[Layout, list[Entry]]:
    """The entries of the CA layer for this base (sorted, directories first where new).

    ``seed``: what a bundle created in an image without one starts from (the public
    roots a runtime in the image already trusts), so a variable pointed at it loses
    nothing.
    """
    layout = detect_layout(fs)
    files: dict[str, Entry] = {}
    bundles = list(layout.bundles) or [fs.resolve(DEFAULT_BUNDLE)]
    for path in bundles:
        existing = fs.read(path) if layout.bundles else seed
        files[path] = Entry(path, "file", 0o644, content=joined_bundle(existing or b"", cas))
    cert_dir = fs.resolve(CERT_DIR)
    existing_names = set(fs.list_dir(cert_dir))
    for cert in cas:
        name = file_name(cert)
        pem = certificate_to_pem(cert)
        if layout.anchor_dir is not None:
            suffix = ".crt" if layout.family in ("debian", "alpine", "unknown") else ".pem"
            anchor = f"{layout.anchor_dir}/{name}{suffix}"
            files[anchor] = Entry(anchor, "file", 0o644, content=pem)
        pem_path = f"{cert_dir}/{name}.pem"
        if pem_path not in files:  # the bundle itself could live in this folder
            files[pem_path] = Entry(pem_path, "file", 0o644, content=pem)
        digest = subject_hash(cert)
        n = 0
        while f"{digest}.{n}" in existing_names:
            n += 1
        existing_names.add(f"{digest}.{n}")
        link = f"{cert_dir}/{digest}.{n}"
        files[link] = Entry(link, "symlink", 0o777, link=relative_link(link, pem_path))
    entries = list(files.values())
    for directory in sorted({_parent(p) for p in files}):
        entries += _missing_dirs(fs, directory)
    unique = {e.path: e for e in entries}
    return layout, sorted(unique.values(), key=lambda e: e.path)


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def _missing_dirs(fs: RootFS, directory: str) -> list[Entry]:
    out = []
    parts = directory.split("/") if directory else []
    for i in range(1, len(parts) + 1):
        path = "/".join(parts[:i])
        entry = fs.entries.get(path)
        if entry is None:
            out.append(Entry(path, "dir", 0o755))
    return out
