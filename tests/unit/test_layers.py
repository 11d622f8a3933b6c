"""Pure layer code: tar scanning, merged root filesystems, the CA layer, determinism."""

from __future__ import annotations

import io
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airtrust.errors import InputError
from airtrust.layers.rootfs import RootFS, relative_link
from airtrust.layers.scan import Entry, LayerIndex, scan_tar
from airtrust.layers.tarball import build_layer, build_tar
from airtrust.layers.truststore import detect_layout, trust_layer
from airtrust.pki.bundle import certificate_to_pem
from airtrust.registry.reference import parse_reference
from tests.helpers.certs import make

CA = make("Layer Test CA")


def _tar(files: dict[str, bytes | tuple[str, str] | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, value in files.items():
            info = tarfile.TarInfo(name)
            if value is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif isinstance(value, tuple):
                info.type = tarfile.SYMTYPE
                info.linkname = value[1]
                tar.addfile(info)
            else:
                info.size = len(value)
                tar.addfile(info, io.BytesIO(value))
    return buf.getvalue()


def test_scan_keeps_only_trust_store_facts_and_long_names() -> None:
    long = "usr/share/doc/" + "x" * 150 + "/README"
    data = _tar(
        {
            "./etc/os-release": b"ID=debian\n",
            "etc/ssl/certs/ca-certificates.crt": b"B",
            "etc/ssl/certs/abcd1234.0": ("symlink", "x.pem"),
            long: b"doc",
            "usr/lib/.wh.os-release": b"",
            "var/.wh..wh..opq": b"",
        }
    )
    index = scan_tar(data)
    assert index.entries["etc/os-release"].content == b"ID=debian\n"
    assert index.entries["etc/ssl/certs/abcd1234.0"].link == "x.pem"
    assert long not in index.entries
    assert index.whiteouts == {"usr/lib/os-release"} and index.opaque == {"var"}
    chunked = scan_tar(iter([data[i : i + 700] for i in range(0, len(data), 700)]))
    assert chunked.to_json() == index.to_json()


def test_merge_whiteouts_and_symlink_resolution() -> None:
    lower = LayerIndex(
        {
            "etc/ssl/certs": Entry("etc/ssl/certs", "symlink", link="/etc/pki/tls/certs"),
            "etc/pki/tls/certs": Entry("etc/pki/tls/certs", "dir"),
            "etc/pki/tls/certs/ca-bundle.crt": Entry(
                "etc/pki/tls/certs/ca-bundle.crt",
                "symlink",
                link="../../ca-trust/extracted/pem/tls-ca-bundle.pem",
            ),
            "etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem": Entry(
                "etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", "file", content=b"OLD"
            ),
        }
    )
    fs = RootFS.merge([lower])
    assert (
        fs.resolve("etc/ssl/certs/ca-bundle.crt")
        == "etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem"
    )
    assert fs.read("/etc/ssl/certs/ca-bundle.crt") == b"OLD"
    upper = LayerIndex(whiteouts={"etc/pki/ca-trust"})
    assert RootFS.merge([lower, upper]).read("etc/ssl/certs/ca-bundle.crt") is None
    assert relative_link("etc/ssl/certs/1234.0", "etc/ssl/certs/a.pem") == "a.pem"


def test_ca_layer_never_shadows_a_symlink_and_links_hashes() -> None:
    base = LayerIndex(
        {
            "etc/os-release": Entry("etc/os-release", "file", content=b'ID="rhel"\n'),
            "etc/ssl": Entry("etc/ssl", "dir"),
            "etc/ssl/certs": Entry("etc/ssl/certs", "symlink", link="/etc/pki/tls/certs"),
            "etc/pki/tls/certs": Entry("etc/pki/tls/certs", "dir"),
            "etc/pki/tls/certs/ca-bundle.crt": Entry(
                "etc/pki/tls/certs/ca-bundle.crt", "file", content=b"EXISTING-NO-NEWLINE"
            ),
        }
    )
    layout, entries = trust_layer(RootFS.merge([base]), [CA.cert])
    paths = {e.path: e for e in entries}
    assert layout.family == "rhel"
    assert "etc/ssl/certs" not in paths
    bundle = paths["etc/pki/tls/certs/ca-bundle.crt"].content or b""
    assert bundle.startswith(b"EXISTING-NO-NEWLINE\n-----BEGIN CERTIFICATE-----")
    links = [e for e in entries if e.kind == "symlink"]
    assert len(links) == 1 and links[0].path.startswith("etc/pki/tls/certs/")
    assert any(p.startswith("etc/pki/ca-trust/source/anchors/airtrust-") for p in paths)


def test_existing_ca_is_not_added_twice_and_scratch_gets_a_bundle() -> None:
    pem = certificate_to_pem(CA.cert)
    base = LayerIndex(
        {
            "etc/ssl/certs/ca-certificates.crt": Entry(
                "etc/ssl/certs/ca-certificates.crt", "file", content=pem
            )
        }
    )
    _, entries = trust_layer(RootFS.merge([base]), [CA.cert])
    bundle = next(e for e in entries if e.path == "etc/ssl/certs/ca-certificates.crt")
    assert bundle.content == pem
    layout, scratch = trust_layer(RootFS(), [CA.cert])
    assert layout.family == "unknown" and not layout.has_shell
    created = {e.path: e for e in scratch}
    assert created["etc/ssl/certs/ca-certificates.crt"].content == pem
    assert created["etc"].kind == "dir" and created["etc/ssl/certs"].kind == "dir"


def test_layout_detection() -> None:
    fs = RootFS.merge(
        [
            LayerIndex(
                {
                    "etc/os-release": Entry(
                        "etc/os-release", "symlink", link="../usr/lib/os-release"
                    ),
                    "usr/lib/os-release": Entry(
                        "usr/lib/os-release",
                        "file",
                        content=b'ID=ubuntu\nID_LIKE=debian\nPRETTY_NAME="U 24"\n',
                    ),
                    "bin": Entry("bin", "symlink", link="usr/bin"),
                    "usr/bin/sh": Entry("usr/bin/sh", "symlink", link="dash"),
                    "usr/sbin/update-ca-certificates": Entry(
                        "usr/sbin/update-ca-certificates", "file"
                    ),
                }
            )
        ]
    )
    layout = detect_layout(fs)
    assert (layout.family, layout.os_name, layout.has_shell) == ("debian", "U 24", True)
    assert layout.update_tool == "update-ca-certificates"


entries = st.dictionaries(
    st.from_regex(r"[a-z]{1,8}(/[a-z]{1,8}){0,2}", fullmatch=True),
    st.binary(max_size=64),
    min_size=1,
    max_size=8,
)


@settings(max_examples=50)
@given(entries)
def test_layers_are_deterministic_and_order_free(files: dict[str, bytes]) -> None:
    items = [Entry(p, "file", 0o644, content=c) for p, c in files.items()]
    first = build_layer(items)
    second = build_layer(list(reversed(items)))
    assert (first.digest, first.diff_id) == (second.digest, second.diff_id)
    index = scan_tar(build_tar(items))
    assert index is not None
    with tarfile.open(fileobj=io.BytesIO(build_tar(items))) as tar:
        assert all(m.mtime == 0 and m.uid == 0 and m.uname == "" for m in tar.getmembers())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5000/a/b:1", ("127.0.0.1:5000", "a/b", "1")),
        (
            "registry.k8s.io/git-sync/git-sync:v4.4.0",
            ("registry.k8s.io", "git-sync/git-sync", "v4.4.0"),
        ),
        ("alpine", ("registry-1.docker.io", "library/alpine", "latest")),
        ("localhost/x", ("localhost", "x", "latest")),
    ],
)
def test_references(text: str, expected: tuple[str, str, str]) -> None:
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag) == expected


@pytest.mark.parametrize("bad", ["", "UPPER/case", "a/b:bad tag", "a/b@sha256:short"])
def test_bad_references(bad: str) -> None:
    with pytest.raises(InputError):
        parse_reference(bad)
