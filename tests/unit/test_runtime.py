"""Runtime trust stores in image layers (pure): which files are stores, how each is
rewritten, what the config's variables become, and the per-client verdict."""

from __future__ import annotations

import io
import tarfile

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12

from airtrust.layers.rootfs import RootFS
from airtrust.layers.runtime import (
    ENV_VARS,
    TrustStatus,
    client_report,
    env_paths,
    find_stores,
    overlay,
    runtime_layer,
)
from airtrust.layers.scan import INFLATE_STEP, _inflating, scan_tar
from airtrust.layers.tarball import build_tar
from airtrust.pki.bundle import Bundle, fingerprint, read_certificates
from airtrust.pki.truststore import (
    KeystoreError,
    KeystoreFormat,
    add_to_keystore,
    read_keystore,
    to_jks,
    to_pkcs12,
)
from tests.helpers.certs import make

CA = make("Runtime Test CA")
CA_FP = fingerprint(CA.cert)
PUBLIC = [make("Public Root One"), make("Public Root Two")]
PUBLIC_PEM = b"# Issuer: one\n" + PUBLIC[0].pem + b"\n# Issuer: two\n" + PUBLIC[1].pem.rstrip()
SITE = "opt/venv/lib/python3.11/site-packages"


def _tar(files: dict[str, bytes | tuple[str, str] | None], owner: int = 0) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, value in files.items():
            info = tarfile.TarInfo(name)
            info.uid = info.gid = owner
            if value is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif isinstance(value, tuple):
                info.type = tarfile.SYMTYPE if value[0] == "symlink" else tarfile.LNKTYPE
                info.linkname = value[1]
                tar.addfile(info)
            else:
                info.size = len(value)
                tar.addfile(info, io.BytesIO(value))
    return buf.getvalue()


def _fs(*layers: dict[str, bytes | tuple[str, str] | None], owner: int = 0) -> RootFS:
    return RootFS.merge(scan_tar(_tar(layer, owner)) for layer in layers)


def _bundle_of(*made: object) -> Bundle:
    return Bundle(tuple(a for m in made for a in read_certificates(m.pem, "t")))  # type: ignore[attr-defined]


def _has_ca(data: bytes | None) -> bool:
    assert data is not None
    return CA_FP in {a.fingerprint for a in read_certificates(data, "t")}


OS = {
    "etc/os-release": b"ID=debian\n",
    "etc/ssl/certs/ca-certificates.crt": PUBLIC_PEM,
}


def test_stores_are_found_by_place_and_once_per_file() -> None:
    fs = _fs(
        {
            **OS,
            f"{SITE}/certifi/cacert.pem": PUBLIC_PEM,
            f"{SITE}/pip/_vendor/certifi/cacert.pem": PUBLIC_PEM,
            f"{SITE}/botocore/cacert.pem": PUBLIC_PEM,
            f"{SITE}/grpc/_cython/_credentials/roots.pem": PUBLIC_PEM,
            "usr/lib/python3/dist-packages/certifi/cacert.pem": (
                "symlink",
                "/etc/ssl/certs/ca-certificates.crt",
            ),
            "opt/conda/conda-meta": None,
            "opt/conda/ssl/cacert.pem": PUBLIC_PEM,
            "opt/conda/pkgs/ca-certificates-1/ssl/cacert.pem": PUBLIC_PEM,
            "opt/other/ssl/cacert.pem": PUBLIC_PEM,  # no conda-meta: not a conda prefix
            "usr/lib/jvm/java-17/lib/security/cacerts": ("symlink", "/etc/ssl/certs/java/cacerts"),
            "etc/ssl/certs/java/cacerts": to_jks(_bundle_of(*PUBLIC)),
            "usr/share/doc/cacert.pem": PUBLIC_PEM,
        }
    )
    found = {(s.kind.name, s.real) for s in find_stores(fs)}
    assert found == {
        ("certifi", f"{SITE}/certifi/cacert.pem"),
        ("pip", f"{SITE}/pip/_vendor/certifi/cacert.pem"),
        ("botocore", f"{SITE}/botocore/cacert.pem"),
        ("grpcio", f"{SITE}/grpc/_cython/_credentials/roots.pem"),
        ("certifi", "etc/ssl/certs/ca-certificates.crt"),  # Debian's certifi is the OS bundle
        ("conda", "opt/conda/ssl/cacert.pem"),
        ("java", "etc/ssl/certs/java/cacerts"),
    }


def test_a_whiteout_removes_a_store_and_a_hard_link_resolves() -> None:
    fs = _fs(
        {**OS, f"{SITE}/certifi/cacert.pem": PUBLIC_PEM, "opt/pkgs/x/cacert.pem": PUBLIC_PEM},
        {
            f"{SITE}/.wh.certifi": b"",
            "opt/env/lib/python3.11/site-packages/certifi/cacert.pem": (
                "hardlink",
                "opt/pkgs/x/cacert.pem",
            ),
        },
    )
    stores = find_stores(fs)
    linked = "opt/env/lib/python3.11/site-packages/certifi/cacert.pem"
    assert [(s.path, s.real) for s in stores] == [(linked, linked)]
    plan = runtime_layer(
        fs, [CA.cert], env=[], bundle="etc/ssl/certs/ca-certificates.crt", written={}
    )
    # The name clients read is written (a layer cannot change another name's inode).
    assert [e.path for e in plan.entries] == [linked]
    assert _has_ca(plan.entries[0].content) and plan.entries[0].kind == "file"


def test_each_store_gets_the_ca_once_newline_safe_and_keeps_its_owner() -> None:
    fs = _fs(
        {
            **OS,
            f"{SITE}/certifi/cacert.pem": PUBLIC_PEM,
            f"{SITE}/grpc/_cython/_credentials/roots.pem": PUBLIC_PEM,
        },
        owner=1000,
    )
    plan = runtime_layer(
        fs,
        [CA.cert],
        env=["PATH=/usr/bin"],
        bundle="etc/ssl/certs/ca-certificates.crt",
        written={"etc/ssl/certs/ca-certificates.crt": b""},
    )
    by_path = {e.path: e for e in plan.entries}
    certifi = by_path[f"{SITE}/certifi/cacert.pem"]
    assert certifi.content is not None and certifi.content.startswith(PUBLIC_PEM + b"\n")
    assert _has_ca(certifi.content) and (certifi.uid, certifi.gid) == (1000, 1000)
    assert len(read_certificates(certifi.content, "t")) == 3
    # Patched again: nothing to add, nothing written.
    again = runtime_layer(
        overlay(fs, plan.entries),
        [CA.cert],
        env=plan.env or [],
        bundle="etc/ssl/certs/ca-certificates.crt",
        written={"etc/ssl/certs/ca-certificates.crt": b""},
    )
    assert again.entries == [] and again.env is None
    assert not any(e.kind == "dir" for e in plan.entries)  # parents keep their owner


def test_env_points_at_the_os_bundle_and_never_overrides() -> None:
    fs = _fs({**OS, "opt/certs/corp.pem": PUBLIC_PEM})
    env = ["PATH=/usr/bin", "REQUESTS_CA_BUNDLE=/opt/certs/corp.pem"]
    assert env_paths(env) == {"opt/certs/corp.pem"}
    fs = RootFS.merge([scan_tar(_tar({**OS, "opt/certs/corp.pem": PUBLIC_PEM}), env_paths(env))])
    plan = runtime_layer(
        fs, [CA.cert], env=env, bundle="etc/ssl/certs/ca-certificates.crt", written={}
    )
    assert plan.env is not None
    values = dict(item.split("=", 1) for item in plan.env)
    assert values["REQUESTS_CA_BUNDLE"] == "/opt/certs/corp.pem"
    for var in set(ENV_VARS) - {"REQUESTS_CA_BUNDLE"}:
        assert values[var] == "/etc/ssl/certs/ca-certificates.crt"
    assert set(plan.added_env) == set(ENV_VARS) - {"REQUESTS_CA_BUNDLE"}
    corp = {e.path: e for e in plan.entries}["opt/certs/corp.pem"]
    assert _has_ca(corp.content)
    no_env = runtime_layer(
        fs,
        [CA.cert],
        env=env,
        bundle="etc/ssl/certs/ca-certificates.crt",
        written={},
        set_env=False,
    )
    assert no_env.env is None and "opt/certs/corp.pem" in {e.path for e in no_env.entries}
    missing = runtime_layer(
        fs,
        [CA.cert],
        env=["AWS_CA_BUNDLE=/nowhere.pem"],
        bundle="etc/ssl/certs/ca-certificates.crt",
        written={},
    )
    assert any("AWS_CA_BUNDLE names /nowhere.pem" in p for p in missing.problems)


@pytest.mark.parametrize("fmt", ["jks", "pkcs12", "pkcs12-no-password"])
def test_java_stores_keep_their_format_and_entries(fmt: str) -> None:
    base = _bundle_of(*PUBLIC)
    data = {
        "jks": lambda: to_jks(base),
        "pkcs12": lambda: to_pkcs12(base),
        "pkcs12-no-password": lambda: to_pkcs12(base, ""),
    }[fmt]()
    before = read_keystore(data)
    out = add_to_keystore(data, [CA.cert])
    after = read_keystore(out)
    assert after.format is before.format
    assert set(before.aliases) < set(after.aliases) and len(after.aliases) == 3
    assert CA_FP in after.fingerprints and before.fingerprints < after.fingerprints
    assert add_to_keystore(out, [CA.cert]) == out  # not added twice
    if fmt == "jks":
        assert out[12 : len(data) - 20] == data[12:-20]  # existing entries byte for byte
    with pytest.raises(KeystoreError):
        read_keystore(out, "wrong-password") if fmt != "pkcs12-no-password" else read_keystore(
            b"garbage" * 10
        )


def test_a_keystore_with_a_key_or_wrong_password_is_reported_not_rewritten() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import BestAvailableEncryption

    key = ec.generate_private_key(ec.SECP256R1())
    leaf = make("leaf", ca=False, key=key)
    with_key = pkcs12.serialize_key_and_certificates(
        b"k", key, leaf.cert, None, BestAvailableEncryption(b"changeit")
    )
    with pytest.raises(KeystoreError, match="private key"):
        add_to_keystore(with_key, [CA.cert])
    jks = to_jks(_bundle_of(*PUBLIC), "other")
    fs = _fs({**OS, "usr/lib/jvm/j/lib/security/cacerts": jks})
    plan = runtime_layer(
        fs, [CA.cert], env=[], bundle="etc/ssl/certs/ca-certificates.crt", written={}
    )
    assert plan.entries == [] and any("password incorrect" in p for p in plan.problems)
    verdict = {c.where: c for c in client_report(fs, [CA.cert], [])}
    assert verdict["/usr/lib/jvm/j/lib/security/cacerts"].status is TrustStatus.CANNOT_PATCH
    good = runtime_layer(
        fs,
        [CA.cert],
        env=[],
        bundle="etc/ssl/certs/ca-certificates.crt",
        written={},
        store_password="other",
    )
    assert read_keystore(good.entries[0].content or b"", "other").format is KeystoreFormat.JKS


def test_a_distro_node_reads_the_os_bundle_an_upstream_one_needs_its_variable() -> None:
    debian = _fs({**OS, "usr/bin/node": b"\x7fELF", "usr/lib/x86_64-linux-gnu/libnode.so.108": b""})
    assert not any(c.client == "Node.js" for c in client_report(debian, [CA.cert], []))
    upstream = _fs({**OS, "usr/local/bin/node": b"\x7fELF"})
    (node,) = [c for c in client_report(upstream, [CA.cert], []) if c.client == "Node.js"]
    assert node.status is TrustStatus.CANNOT_PATCH and "/usr/local/bin/node" in node.detail


def test_client_report_names_each_client_and_node_needs_its_variable() -> None:
    fs = _fs({**OS, f"{SITE}/certifi/cacert.pem": PUBLIC_PEM, "usr/local/bin/node": b"\x7fELF"})
    report = client_report(fs, [CA.cert], [])
    statuses = {c.where: c.status for c in report}
    assert statuses["/etc/ssl/certs/ca-certificates.crt"] is TrustStatus.MISSING
    assert statuses[f"/{SITE}/certifi/cacert.pem"] is TrustStatus.MISSING
    assert statuses["$NODE_EXTRA_CA_CERTS"] is TrustStatus.CANNOT_PATCH
    plan = runtime_layer(
        fs,
        [CA.cert],
        env=[],
        bundle="etc/ssl/certs/ca-certificates.crt",
        written={},
    )
    os_entry = {
        "etc/ssl/certs/ca-certificates.crt": PUBLIC_PEM + b"\n" + CA.pem,
    }
    patched = overlay(
        fs,
        [*plan.entries, *(scan_tar(_tar(os_entry)).entries.values())],
    )
    after = client_report(patched, [CA.cert], plan.env or [])
    assert all(c.status is TrustStatus.OK for c in after), after
    assert any(c.where.startswith("$NODE_EXTRA_CA_CERTS=") for c in after)


def test_owner_survives_the_layer_tarball() -> None:
    fs = _fs({**OS, f"{SITE}/certifi/cacert.pem": PUBLIC_PEM}, owner=1000)
    plan = runtime_layer(
        fs,
        [CA.cert],
        env=[],
        bundle="etc/ssl/certs/ca-certificates.crt",
        written={},
        set_env=False,
    )
    with tarfile.open(fileobj=io.BytesIO(build_tar(plan.entries))) as tar:
        member = tar.getmember(f"{SITE}/certifi/cacert.pem")
        assert (member.uid, member.gid, member.mode) == (1000, 1000, 0o644)


def test_inflate_is_bounded_whatever_the_ratio() -> None:
    import gzip

    blob = gzip.compress(b"\0" * (64 << 20), compresslevel=9)  # 64 MiB from ~64 KiB
    sizes = [len(c) for c in _inflating(iter([blob]))]
    assert sum(sizes) == 64 << 20 and max(sizes) <= INFLATE_STEP


def test_an_image_without_a_bundle_gets_one_seeded_with_its_runtime_roots() -> None:
    """A scratch-like image whose only roots are certifi's: the bundle airtrust creates
    (and the variables point at) keeps those public roots next to the CA."""
    from airtrust.layers.truststore import trust_layer

    fs = _fs({f"{SITE}/certifi/cacert.pem": PUBLIC_PEM})
    layout, entries = trust_layer(fs, [CA.cert], seed=PUBLIC_PEM)
    assert layout.bundles == ()
    created = {e.path: e for e in entries}["etc/ssl/certs/ca-certificates.crt"]
    have = {a.fingerprint for a in read_certificates(created.content or b"", "t")}
    assert have == {CA_FP, *(fingerprint(m.cert) for m in PUBLIC)}
