"""The trust stores language runtimes carry inside an image, and the variables that move them.

In an AI workload image the OS bundle is often not what fails: ``requests``,
``huggingface_hub`` and friends read certifi's ``cacert.pem`` (one per
environment), pip its vendored copy, botocore and grpcio their own files,
conda its prefix's ``ssl/cacert.pem``, Java its ``cacerts`` keystore, and
Node.js roots compiled into its binary (shared reference runtime-trust.md).
Patching the files covers what is installed; variables in the image config
cover what a notebook installs later. A variable that *replaces* a store
points at the full OS bundle (public roots plus the CA), never at the CA
alone, and a variable the image already sets is kept: the file it names is
patched instead.

Everything here is pure: a merged :class:`RootFS` and the config's ``Env``
in, layer entries, the new ``Env`` and a per-client verdict out. The verdict
(:func:`client_report`) judges any view, so ``image patch`` reports what the
patched image will trust and ``image inspect`` what a pushed image does.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography import x509

from airtrust.layers.rootfs import RootFS
from airtrust.layers.scan import Entry, LayerIndex, normalise
from airtrust.layers.truststore import BUNDLES, joined_bundle
from airtrust.pki.bundle import fingerprint, pem_fingerprints
from airtrust.pki.truststore import (
    DEFAULT_STORE_PASSWORD,
    KeystoreError,
    add_to_keystore,
    read_keystore,
)

__all__ = [
    "ENV_VARS",
    "KINDS",
    "ClientTrust",
    "RuntimePlan",
    "Store",
    "StoreKind",
    "TrustStatus",
    "client_report",
    "env_paths",
    "find_stores",
    "overlay",
    "parse_env",
    "runtime_layer",
]


@dataclass(frozen=True)
class StoreKind:
    name: str
    clients: str  # who reads the file, as a user would recognise them
    pattern: re.Pattern[str]
    java: bool = False


KINDS = (
    StoreKind(
        "pip", "pip (vendored certifi)", re.compile(r"(?:^|/)pip/_vendor/certifi/cacert\.pem$")
    ),
    StoreKind(
        "certifi",
        "requests, httpx, huggingface_hub (certifi)",
        re.compile(r"(?:^|/)(?:site|dist)-packages/certifi/cacert\.pem$"),
    ),
    StoreKind(
        "botocore",
        "botocore, boto3 (vendored bundle)",
        re.compile(r"(?:^|/)(?:site|dist)-packages/botocore/cacert\.pem$"),
    ),
    StoreKind(
        "grpcio",
        "grpcio (bundled roots)",
        re.compile(r"(?:^|/)(?:site|dist)-packages/grpc/_cython/_credentials/roots\.pem$"),
    ),
    StoreKind("conda", "conda's OpenSSL (prefix ssl/)", re.compile(r"(?:^|/)ssl/cacert\.pem$")),
    StoreKind(
        "java",
        "Java (cacerts keystore)",
        re.compile(r"(?:^|/)lib/security/cacerts$|^etc/ssl/certs/java/cacerts$"),
        java=True,
    ),
)
#: conda's package cache holds copies (hard links) of installed files; they are not stores.
_PACKAGE_CACHE = re.compile(r"(?:^|/)pkgs/")
#: What each variable moves, and for whom. All replace a store except NODE_EXTRA_CA_CERTS.
ENV_VARS = {
    "SSL_CERT_FILE": "OpenSSL, Python ssl, httpx, Go",
    "REQUESTS_CA_BUNDLE": "requests, pip",
    "PIP_CERT": "pip",
    "CURL_CA_BUNDLE": "curl, requests",
    "NODE_EXTRA_CA_CERTS": "Node.js",
    "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": "grpcio",
    "AWS_CA_BUNDLE": "botocore, boto3, AWS CLI",
}
#: Node.js builds with compiled-in roots (nodejs.org's, as in the node images), which
#: only NODE_EXTRA_CA_CERTS can extend. A distro's build (Debian's links libnode.so and
#: the system OpenSSL, with --openssl-use-def-ca-store) reads the OS bundle instead.
_NODE = ("usr/local/bin/node", "usr/bin/node", "opt/node/bin/node")
_DISTRO_LIBNODE = re.compile(r"^usr/lib/(?:[^/]+/)?libnode\.so[.\d]*$")


def _node_with_own_roots(fs: RootFS) -> str | None:
    """The path of a Node.js whose roots are compiled in, if the image has one."""
    distro = any(_DISTRO_LIBNODE.match(p) for p in fs.entries)
    for path in _NODE:
        if fs.exists(path) and not (distro and path == "usr/bin/node"):
            return path
    return None


class TrustStatus(enum.StrEnum):
    OK = "ok"
    MISSING = "missing"
    CANNOT_PATCH = "cannot patch"


@dataclass(frozen=True)
class ClientTrust:
    client: str
    where: str  # "/path/to/file" or "$VARIABLE"
    status: TrustStatus
    detail: str = ""


@dataclass(frozen=True)
class Store:
    kind: StoreKind
    path: str  # where clients look (may be a link)
    real: str  # where the bytes are


def parse_env(env: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in env:
        key, sep, value = item.partition("=")
        if sep:
            out[key] = value
    return out


def env_paths(env: Sequence[str]) -> frozenset[str]:
    """Files the config's variables name, whose contents the scan must keep."""
    values = parse_env(env)
    return frozenset(normalise(values[v]) for v in ENV_VARS if values.get(v, "").startswith("/"))


def find_stores(fs: RootFS) -> list[Store]:
    """Every runtime store in the merged view, once per name that must be rewritten.

    A rewrite lands where symlinks lead (every link then sees it), but a hard link is
    its own name: once layered, writing the other name changes only that one (conda
    links ``ssl/cacert.pem`` from its package cache), so hard links are not followed.
    """
    found: dict[str, Store] = {}
    for path in sorted(fs.entries):
        if _PACKAGE_CACHE.search(path):
            continue
        for kind in KINDS:
            if not kind.pattern.search(path):
                continue
            if kind.name == "conda":
                prefix = path[: -len("ssl/cacert.pem")].rstrip("/")
                if not fs.exists(f"{prefix}/conda-meta" if prefix else "conda-meta"):
                    break
            real = fs.resolve(path)
            entry = fs.entries.get(real)
            if entry is not None and entry.kind in ("file", "hardlink") and real not in found:
                found[real] = Store(kind, path, real)
            break
    return list(found.values())


def _has_all(data: bytes | None, wanted: set[str], origin: str) -> bool | None:
    """Whether a PEM file holds every wanted CA; None if it cannot be read as PEM."""
    if data is None:
        return False
    have = pem_fingerprints(data)
    if have is None:  # a file we cannot parse is reported, not trusted
        return None
    return wanted <= have


@dataclass(frozen=True)
class RuntimePlan:
    entries: list[Entry]
    env: list[str] | None  # the config's new Env; None when left alone
    added_env: tuple[str, ...]
    problems: tuple[str, ...]  # stores found but not patchable, one line each


def runtime_layer(
    fs: RootFS,
    cas: Sequence[x509.Certificate],
    *,
    env: Sequence[str],
    bundle: str,
    written: Mapping[str, bytes],
    set_env: bool = True,
    store_password: str = DEFAULT_STORE_PASSWORD,
) -> RuntimePlan:
    """Entries rewriting each runtime store (and each file a variable names) with the CAs,
    and the config's new ``Env``. ``written``: the OS entries already in the layer, which
    are not written twice; ``bundle``: the OS bundle variables point at."""
    entries: dict[str, Entry] = {}
    problems: list[str] = []

    def rewrite(real: str, data: bytes, java: bool, what: str) -> None:
        base = fs.entries[real]
        if java:
            try:
                content = add_to_keystore(data, cas, store_password)
            except KeystoreError as exc:
                problems.append(f"{what} /{real}: {exc}")
                return
        else:
            content = joined_bundle(data, cas)
        if content != data:
            entries[real] = Entry(
                real, "file", base.mode, content=content, uid=base.uid, gid=base.gid
            )

    for store in find_stores(fs):
        if store.real in written:
            continue
        data = fs.read(store.real)
        if data is not None:
            rewrite(store.real, data, store.kind.java, store.kind.clients)
    values = parse_env(env)
    added: list[str] = []
    new_env = list(env)
    for var in ENV_VARS:
        value = values.get(var)
        if value is None:
            if set_env:
                new_env.append(f"{var}=/{bundle}")
                added.append(var)
            continue
        real = fs.resolve(normalise(value))
        data = fs.read(real)
        if data is None:
            problems.append(f"${var} names {value}, which the image does not have")
        elif real not in written and real not in entries:
            rewrite(real, data, False, f"${var}")
    return RuntimePlan(
        sorted(entries.values(), key=lambda e: e.path),
        new_env if added else None,
        tuple(added),
        tuple(problems),
    )


def client_report(
    fs: RootFS,
    cas: Sequence[x509.Certificate],
    env: Sequence[str],
    *,
    store_password: str = DEFAULT_STORE_PASSWORD,
) -> list[ClientTrust]:
    """Per client: does the store it reads (file or variable) hold every CA?"""
    wanted = {fingerprint(c) for c in cas}
    out: list[ClientTrust] = []

    def judge_pem(client: str, where: str, real: str) -> ClientTrust:
        verdict = _has_all(fs.read(real), wanted, real)
        if verdict is None:
            return ClientTrust(client, where, TrustStatus.CANNOT_PATCH, "not a PEM bundle")
        return ClientTrust(client, where, TrustStatus.OK if verdict else TrustStatus.MISSING)

    seen: set[str] = set()
    for candidate in BUNDLES:
        real = fs.resolve(candidate)
        if fs.read(real) is None or real in seen:
            continue
        seen.add(real)
        out.append(judge_pem("OS bundle (OpenSSL, curl, git, Go)", f"/{real}", real))
    if not seen:
        out.append(
            ClientTrust("OS bundle (OpenSSL, curl, git, Go)", "-", TrustStatus.MISSING, "none")
        )
    for store in find_stores(fs):
        where = f"/{store.path}" + (f" -> /{store.real}" if store.real != store.path else "")
        if not store.kind.java:
            out.append(judge_pem(store.kind.clients, where, store.real))
            continue
        try:
            keystore = read_keystore(fs.read(store.real) or b"", store_password)
        except KeystoreError as exc:
            out.append(
                ClientTrust(
                    store.kind.clients,
                    where,
                    TrustStatus.CANNOT_PATCH,
                    f"{exc} (pass --store-password-env)",
                )
            )
            continue
        ok = wanted <= keystore.fingerprints
        out.append(
            ClientTrust(
                store.kind.clients,
                where,
                TrustStatus.OK if ok else TrustStatus.MISSING,
                str(keystore.format),
            )
        )
    values = parse_env(env)
    for var, clients in ENV_VARS.items():
        value = values.get(var)
        if value is None:
            node = _node_with_own_roots(fs) if var == "NODE_EXTRA_CA_CERTS" else None
            if node is not None:
                out.append(
                    ClientTrust(
                        "Node.js",
                        f"${var}",
                        TrustStatus.CANNOT_PATCH,
                        f"/{node} has its roots compiled in; only this variable adds a CA",
                    )
                )
            continue
        real = fs.resolve(normalise(value))
        if fs.read(real) is None:
            out.append(
                ClientTrust(clients, f"${var}", TrustStatus.MISSING, f"{value} does not exist")
            )
            continue
        verdict = judge_pem(clients, f"${var}", real)
        out.append(ClientTrust(verdict.client, f"${var}={value}", verdict.status, verdict.detail))
    return out


def overlay(fs: RootFS, entries: Sequence[Entry]) -> RootFS:
    """The view with a new layer's entries on top (what the patched image will hold)."""
    return RootFS.merge([LayerIndex(dict(fs.entries)), LayerIndex({e.path: e for e in entries})])
