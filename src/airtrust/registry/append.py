"""Patch images in the registry: add one CA layer per platform, keep the index.

Like ``crane append`` but for trust stores: the base's own layers are read
(not unpacked) to learn its layout, one deterministic layer is added, and
the config gets the new diff_id, a real history entry and labels with the CA
fingerprints. Blobs already present are skipped or mounted, never
re-uploaded; manifests are pushed by digest first and the tag is moved last,
so an interrupted push never leaves a tag pointing at missing content.
Re-patching with the same CAs is a no-op; with other CAs airtrust replaces
its own earlier layer instead of stacking another.

The same layer patches the stores language runtimes carry (layers/runtime.py)
and the config gets the variables that cover what is installed later. Memory
does not grow with the image: layers are scanned as they stream (in parallel,
in worker processes, one per core, when the image is large: see scanworkers.py)
and copied across registries chunk by chunk.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from cryptography import x509

from airtrust.errors import InputError
from airtrust.layers.image import Image, LayerDescriptor, canonical, sha256_digest
from airtrust.layers.rootfs import RootFS
from airtrust.layers.runtime import (
    ClientTrust,
    TrustStatus,
    client_report,
    env_paths,
    find_stores,
    overlay,
    runtime_layer,
)
from airtrust.layers.scan import SCAN_VERSION, LayerIndex, normalise, scan_layer_stream
from airtrust.layers.tarball import build_layer
from airtrust.layers.truststore import DEFAULT_BUNDLE, Layout, detect_layout, trust_layer
from airtrust.pki.bundle import fingerprint
from airtrust.pki.truststore import DEFAULT_STORE_PASSWORD
from airtrust.registry.client import Manifest, RegistryClient
from airtrust.registry.reference import Reference
from airtrust.registry.scanworkers import WorkerPool, usable_cores, worker_count

__all__ = [
    "ATTESTATION",
    "BASE_LABEL",
    "CREATED_BY",
    "LABEL",
    "LayerCache",
    "PatchAction",
    "PatchResult",
    "Patcher",
    "PlatformResult",
    "Progress",
    "TrustReport",
    "base_layout",
    "ca_label",
    "cache_dir",
    "inspect_image",
]

log = logging.getLogger(__name__)

LABEL = "dev.airtrust.ca-sha256"
BASE_LABEL = "dev.airtrust.base-digest"
CREATED_BY = "airtrust image patch"
ATTESTATION = "vnd.docker.reference.type"
#: Base layers made present in the destination at once (HEAD, then mount or copy).
ENSURE_AT_ONCE = 4


class Progress(Protocol):
    """Where the patcher reports long transfers: the CLI draws bars, tests record."""

    def transfer(self, label: str, total: int) -> Callable[[int], None]:
        """A transfer of ``total`` bytes begins; the result is called with each chunk's size."""
        raise NotImplementedError


def _metered(chunks: Iterator[bytes], advance: Callable[[int], None]) -> Iterator[bytes]:
    for chunk in chunks:
        advance(len(chunk))
        yield chunk


def cache_dir() -> Path:
    """$AIRTRUST_LAYER_CACHE, else $AIRTRUST_CACHE/layers, else ~/.cache/airtrust/layers."""
    explicit = os.environ.get("AIRTRUST_LAYER_CACHE")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("AIRTRUST_CACHE", Path.home() / ".cache" / "airtrust")) / "layers"


class LayerCache:
    """Trust-store facts of a layer, by digest: a base read once is never read again.

    Within one process a layer is also read once while it is being read: the jobs
    of a batch (``image patch --from FILE -j N``) share their bases, and the second
    job to need a layer waits for the first one's scan instead of downloading it
    again.
    """

    _flights: ClassVar[dict[Path, Future[LayerIndex]]] = {}
    _flights_lock: ClassVar[threading.Lock] = threading.Lock()
    #: Indexes this process has read or written, by file: the jobs of a batch share a
    #: base, and reading its indexes from JSON once per job cost a tenth of a second.
    _loaded: ClassVar[dict[Path, LayerIndex]] = {}
    LOADED_KEPT: ClassVar[int] = 256

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or cache_dir()

    def once(
        self, digest: str, extra: frozenset[str], scan: Callable[[], LayerIndex]
    ) -> LayerIndex:
        """The layer's index from the cache, or from ``scan`` run by one caller at a
        time in this process (the others get its result, or its error)."""
        path = self._path(digest, extra)
        with LayerCache._flights_lock:
            flight = LayerCache._flights.get(path)
            leader = flight is None
            if flight is None:
                flight = LayerCache._flights[path] = Future()
        if not leader:
            return flight.result()
        try:
            index = self.get(digest, extra)  # another job may have just written it
            if index is None:
                index = scan()
                self.put(digest, index, extra)
            flight.set_result(index)
            return index
        except BaseException as exc:
            flight.set_exception(exc)
            raise
        finally:
            with LayerCache._flights_lock:
                del LayerCache._flights[path]

    def _path(self, digest: str, extra: frozenset[str]) -> Path:
        name = f"v{SCAN_VERSION}-{digest.replace(':', '-')}"
        if extra:  # an index that also kept the files a config names
            name += "-" + hashlib.sha256("\n".join(sorted(extra)).encode()).hexdigest()[:12]
        return self.folder / f"{name}.json"

    def get(self, digest: str, extra: frozenset[str] = frozenset()) -> LayerIndex | None:
        path = self._path(digest, extra)
        index = LayerCache._loaded.get(path)
        if index is not None:
            return index
        try:
            index = LayerIndex.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError):
            return None
        self._remember(path, index)
        return index

    @staticmethod
    def _remember(path: Path, index: LayerIndex) -> None:
        if len(LayerCache._loaded) >= LayerCache.LOADED_KEPT:  # clear() is thread-safe
            LayerCache._loaded.clear()
        LayerCache._loaded[path] = index

    def put(self, digest: str, index: LayerIndex, extra: frozenset[str] = frozenset()) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self._path(digest, extra)
            tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps(index.to_json()))
            tmp.replace(path)
            self._remember(path, index)
        except OSError as exc:  # a cache that cannot be written only costs time
            log.debug("layer cache not written: %s", exc)


class PatchAction(enum.StrEnum):
    PATCHED = "patched"
    #: the image already trusts exactly these CAs (airtrust's label says so)
    UNCHANGED = "unchanged"
    #: a platform left out by --platform, copied as it is
    COPIED = "copied"
    #: airtrust's own earlier layer replaced (other CAs), never stacked
    REPLACED_PREVIOUS = "replaced-previous"


@dataclass
class PlatformResult:
    platform: str
    source_digest: str
    result_digest: str
    action: PatchAction
    layout: str = ""
    layer_digest: str | None = None
    layer_size: int = 0
    #: what the patched image trusts, client by client
    clients: list[ClientTrust] = field(default_factory=list)
    env_added: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in vars(self).items() if k != "clients"}
        data["env_added"] = list(self.env_added)
        data["clients"] = [vars(c) for c in self.clients]
        return data


@dataclass
class PatchResult:
    source: str
    destination: str
    source_digest: str
    result_digest: str
    noop: bool
    platforms: list[PlatformResult] = field(default_factory=list)
    dropped_attestations: int = 0
    bytes_uploaded: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "destination": self.destination,
            "source_digest": self.source_digest,
            "result_digest": self.result_digest,
            "noop": self.noop,
            "bytes_uploaded": self.bytes_uploaded,
            "dropped_attestations": self.dropped_attestations,
            "warnings": self.warnings,
            "platforms": [p.to_dict() for p in self.platforms],
        }


def ca_label(cas: Sequence[x509.Certificate]) -> str:
    return ",".join(sorted(fingerprint(c) for c in cas))


def _platform(desc: dict[str, Any], config: dict[str, Any] | None = None) -> str:
    p = desc.get("platform") or {}
    if not p and config is not None:
        p = {
            "os": config.get("os", "?"),
            "architecture": config.get("architecture", "?"),
            "variant": config.get("variant"),
        }
    text = f"{p.get('os', '?')}/{p.get('architecture', '?')}"
    return text + (f"/{p['variant']}" if p.get("variant") else "")


@dataclass
class Patcher:
    client: RegistryClient  # where the source is read
    cas: Sequence[x509.Certificate]
    cache: LayerCache = field(default_factory=LayerCache)
    progress: Progress | None = None
    target: RegistryClient | None = None  # where the result goes, if another registry
    #: add the variables that point runtimes at the patched OS bundle (--no-env: False)
    set_env: bool = True
    store_password: str = DEFAULT_STORE_PASSWORD

    @property
    def to(self) -> RegistryClient:
        return self.target or self.client

    def _ensure(self, dest_repo: str, desc: dict[str, Any], src_repo: str, label: str) -> str:
        """Make a source blob exist at the destination: present, mounted or copied."""
        digest = desc["digest"]
        meter = self._meter(f"{label} {digest[7:19]}", int(desc.get("size", 0)))
        if self.target is None or self.target is self.client:
            return self.client.ensure_blob(dest_repo, digest, source=src_repo, on_progress=meter)

        # Across registries nothing can be mounted: stream the bytes through, chunk by
        # chunk (verified against the digest as they are read).
        def fetch() -> Iterator[bytes]:
            return self.client.stream_blob(src_repo, digest)

        return self.target.ensure_blob(
            dest_repo, digest, source=None, data=fetch, on_progress=meter
        )

    def _meter(self, label: str, total: int) -> Callable[[int], None] | None:
        """A byte counter whose bar appears only if bytes actually move."""
        progress = self.progress
        if progress is None:
            return None
        advance: Callable[[int], None] | None = None

        def on_bytes(n: int) -> None:
            nonlocal advance
            if advance is None:
                advance = progress.transfer(label, total)
            advance(n)

        return on_bytes

    # --- reading ------------------------------------------------------------------------

    def rootfs(
        self,
        repository: str,
        layers: Sequence[dict[str, Any]],
        extra: frozenset[str] = frozenset(),
    ) -> RootFS:
        """The merged view; ``extra``: more files whose content is wanted. Layers not in
        the cache are read at once, as many as there are cores, each as it streams."""

        cached = {d["digest"]: self.cache.get(d["digest"], extra) for d in layers}
        missing = list({d["digest"]: d for d in layers if cached[d["digest"]] is None}.values())
        processes = worker_count(int(d.get("size", 0)) for d in missing)
        pool = WorkerPool(processes) if processes else None

        def index_of(desc: dict[str, Any]) -> LayerIndex:
            digest = desc["digest"]
            index = cached[digest]
            if index is None:

                def scan() -> LayerIndex:
                    chunks = self.client.stream_blob(repository, digest)
                    size = int(desc.get("size", 0))
                    meter = self._meter(f"read layer {digest[7:19]}", size)
                    if pool is not None:  # the worker reads the blob itself where it can
                        location = self.client.blob_location(repository, digest)
                        piped = _metered(chunks, meter) if meter is not None else chunks
                        return pool.scan(piped, extra, location, meter)
                    if meter is not None:
                        chunks = _metered(chunks, meter)
                    return scan_layer_stream(chunks, extra)

                index = cached[digest] = self.cache.once(digest, extra, scan)
            return index

        # The largest layers first, so the last one to finish is a small one.
        order = sorted(missing, key=lambda d: -int(d.get("size", 0)))
        workers = max(1, min(len(order), usable_cores()))
        try:
            if workers == 1:
                for desc in order:
                    index_of(desc)
            else:
                with ThreadPoolExecutor(workers, thread_name_prefix="scan") as threads:
                    list(threads.map(index_of, order))
        finally:
            if pool is not None:
                pool.close()
        return RootFS.merge(index_of(d) for d in layers)

    def view(self, repository: str, layers: Sequence[dict[str, Any]], env: list[str]) -> RootFS:
        """The merged view with the contents of every file the config's variables name,
        through links that only the first pass can see."""
        extra = env_paths(env)
        fs = self.rootfs(repository, layers, extra)
        more = {fs.resolve(p) for p in extra} - extra
        if more:
            fs = self.rootfs(repository, layers, extra | {normalise(p) for p in more})
        return fs

    def config(self, repository: str, manifest: dict[str, Any]) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(
            self.client.blob(repository, manifest["config"]["digest"])
        )
        return data

    @staticmethod
    def airtrust_top(image: Image) -> bool:
        """Is the top layer one airtrust added (then a re-patch replaces it)?"""
        top = image.top_history()
        return top is not None and str(top.get("created_by", "")).startswith(CREATED_BY)

    # --- one platform -------------------------------------------------------------------

    def patch_manifest(
        self, src: Reference, dest: Reference, manifest: Manifest, platform: str
    ) -> tuple[Manifest, PlatformResult, tuple[str, ...]]:
        """The patched manifest, what was done, and the stores that could not be patched."""
        body = manifest.json()
        image = Image(body, self.config(src.repository, body), manifest.media_type)
        label = ca_label(self.cas)
        if image.labels.get(LABEL) == label:
            self._copy(src, dest, manifest)
            return (
                manifest,
                PlatformResult(platform, manifest.digest, manifest.digest, PatchAction.UNCHANGED),
                (),
            )
        base, replaced = image, self.airtrust_top(image)
        if replaced:
            base = image.without_top_layer()
        fs = self.view(src.repository, base.layers, base.env)
        stores = find_stores(fs)
        seed = next((fs.read(s.real) or b"" for s in stores if not s.kind.java), b"")
        layout, entries = trust_layer(fs, self.cas, seed=seed)
        bundle = layout.bundles[0] if layout.bundles else fs.resolve(DEFAULT_BUNDLE)
        written = {e.path: e.content or b"" for e in entries if e.kind == "file"}
        runtime = runtime_layer(
            fs,
            self.cas,
            env=base.env,
            bundle=bundle,
            written=written,
            set_env=self.set_env,
            store_password=self.store_password,
        )
        entries = sorted([*entries, *runtime.entries], key=lambda e: e.path)
        layer = build_layer(entries)
        env = runtime.env if runtime.env is not None else base.env
        clients = client_report(
            overlay(fs, entries), self.cas, env, store_password=self.store_password
        )
        base_digest = image.labels.get(BASE_LABEL, manifest.digest) if replaced else manifest.digest
        comment = f"trust store: {_describe(layout)}; runtime stores: {len(runtime.entries)}"
        if runtime.added_env:
            comment += f"; env: {', '.join(runtime.added_env)}"
        patched = base.append(
            LayerDescriptor(layer.digest, layer.diff_id, layer.size),
            history={
                "created": image.config.get("created") or "1970-01-01T00:00:00Z",
                "created_by": f"{CREATED_BY}: add CA sha256 {label}",
                "comment": comment,
            },
            labels={LABEL: label, BASE_LABEL: base_digest},
            annotations={LABEL: label, "org.opencontainers.image.base.digest": manifest.digest},
            env=runtime.env,
        )

        # Blobs first, manifest last: nothing refers to content that is not there. In
        # one registry the base's layers at once (each a HEAD and a mount: round trips);
        # across registries one at a time, as each one's bytes pass through here.
        def ensure(desc: dict[str, Any]) -> None:
            how = self._ensure(dest.repository, desc, src.repository, "push layer")
            log.debug("layer %s %s", desc["digest"][:19], how)

        at_once = ENSURE_AT_ONCE if self.target in (None, self.client) else 1
        with ThreadPoolExecutor(at_once, thread_name_prefix="ensure") as pool:
            list(pool.map(ensure, base.layers))
        self.to.ensure_blob(
            dest.repository,
            layer.digest,
            source=None,
            data=lambda: layer.blob,
            on_progress=self._meter(f"push layer {layer.digest[7:19]}", layer.size),
        )
        config_raw = patched.config_raw
        self.to.ensure_blob(
            dest.repository, sha256_digest(config_raw), source=None, data=lambda: config_raw
        )
        result = Manifest(patched.manifest_raw, manifest.media_type, patched.digest)
        return (
            result,
            PlatformResult(
                platform,
                manifest.digest,
                result.digest,
                PatchAction.REPLACED_PREVIOUS if replaced else PatchAction.PATCHED,
                layout=_describe(layout),
                layer_digest=layer.digest,
                layer_size=layer.size,
                clients=clients,
                env_added=runtime.added_env,
            ),
            runtime.problems,
        )

    def _copy(self, src: Reference, dest: Reference, manifest: Manifest) -> None:
        """Make a manifest and its blobs exist in the destination repository."""
        if (src.registry, src.repository) == (dest.registry, dest.repository):
            return
        body = manifest.json()
        if manifest.is_index:
            for entry in body.get("manifests", []):
                child = self.client.manifest(src.repository, entry["digest"])
                self._copy(src, dest, child)
                self.to.put_manifest(dest.repository, child.digest, child.raw, child.media_type)
            return
        for desc in [body["config"], *body.get("layers", [])]:
            self._ensure(dest.repository, desc, src.repository, "copy blob")

    # --- whole image --------------------------------------------------------------------

    def patch(
        self, src: Reference, dest: Reference, *, platforms: Sequence[str] = ()
    ) -> PatchResult:
        self.client.ping()
        if self.target is not None and self.target is not self.client:
            self.target.ping()
        top = self.client.manifest(src.repository, src.ref)
        result = PatchResult(str(src), str(dest), top.digest, top.digest, noop=True)
        if not top.is_index:
            new, info, problems = self.patch_manifest(src, dest, top, "")
            config = self.config(src.repository, top.json())
            info.platform = _platform({}, config)
            result.warnings += _problems(info.platform, problems, info.clients)
            result.platforms.append(info)
            result.noop = info.action is PatchAction.UNCHANGED and src == dest
            if not result.noop:
                self._push_top(dest, new, result)
            return result
        index = top.json()
        patched: dict[str, str] = {}
        entries = []
        for entry in index.get("manifests", []):
            annotations = entry.get("annotations") or {}
            if annotations.get(ATTESTATION):
                entries.append(entry)
                continue
            platform = _platform(entry)
            child = self.client.manifest(src.repository, entry["digest"])
            if platforms and platform not in platforms:
                self._copy(src, dest, child)
                self.to.put_manifest(dest.repository, child.digest, child.raw, child.media_type)
                result.platforms.append(
                    PlatformResult(platform, child.digest, child.digest, PatchAction.COPIED)
                )
                entries.append(entry)
                continue
            new, info, problems = self.patch_manifest(src, dest, child, platform)
            result.warnings += _problems(platform, problems, info.clients)
            self.to.put_manifest(dest.repository, new.digest, new.raw, new.media_type)
            result.platforms.append(info)
            if new.digest != child.digest:
                patched[child.digest] = new.digest
            entries.append(
                {**entry, "digest": new.digest, "size": len(new.raw), "mediaType": new.media_type}
            )
        kept = []
        for entry in entries:
            ref = (entry.get("annotations") or {}).get("vnd.docker.reference.digest")
            if (entry.get("annotations") or {}).get(ATTESTATION) and ref in patched:
                # An attestation describes the unpatched image; carrying it over would
                # attest content the new manifest does not have.
                result.dropped_attestations += 1
                continue
            if (entry.get("annotations") or {}).get(ATTESTATION):
                child = self.client.manifest(src.repository, entry["digest"])
                self._copy(src, dest, child)
                self.to.put_manifest(dest.repository, child.digest, child.raw, child.media_type)
            kept.append(entry)
        if result.dropped_attestations:
            result.warnings.append(
                f"dropped {result.dropped_attestations} attestation manifest(s): they describe "
                "the unpatched images; regenerate them for the patched ones if you need them"
            )
        if not patched and src == dest:
            return result
        new_index = {**index, "manifests": kept}
        raw = canonical(new_index)
        self._push_top(dest, Manifest(raw, top.media_type, sha256_digest(raw)), result)
        result.noop = False
        return result

    def _push_top(self, dest: Reference, manifest: Manifest, result: PatchResult) -> None:
        ref = dest.tag or manifest.digest
        self.to.put_manifest(dest.repository, ref, manifest.raw, manifest.media_type)
        result.result_digest = manifest.digest
        result.bytes_uploaded = self.to.bytes_uploaded


def _problems(platform: str, problems: Sequence[str], clients: Sequence[ClientTrust]) -> list[str]:
    """One warning per store left unpatched and per client that cannot be patched."""
    out = [f"{platform}: not patched: {p}" for p in problems]
    for c in clients:
        if c.status is not TrustStatus.OK and not any(c.where.lstrip("$") in p for p in problems):
            out.append(f"{platform}: {c.client} ({c.where}): {c.status} {c.detail}".rstrip())
    return out


def _describe(layout: Layout) -> str:
    return f"{layout.family}: {', '.join(layout.bundles) or 'no bundle (created)'}"


@dataclass
class TrustReport:
    platform: str
    digest: str
    layout: Layout
    bundles: dict[str, bool]  # bundle path -> contains every CA
    anchors: list[str]
    user: str
    entrypoint: list[str]
    labelled: bool
    clients: list[ClientTrust] = field(default_factory=list)

    @property
    def trusted(self) -> bool:
        """Every client's store (OS bundle, runtime stores, variables) holds every CA."""
        return (
            bool(self.bundles)
            and all(self.bundles.values())
            and all(c.status is TrustStatus.OK for c in self.clients)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "digest": self.digest,
            "trusted": self.trusted,
            "family": self.layout.family,
            "bundles": self.bundles,
            "anchors": self.anchors,
            "clients": [vars(c) for c in self.clients],
            "user": self.user,
            "entrypoint": self.entrypoint,
            "patched_by_airtrust": self.labelled,
        }


def inspect_image(
    client: RegistryClient,
    ref: Reference,
    cas: Sequence[x509.Certificate],
    cache: LayerCache | None = None,
    store_password: str = DEFAULT_STORE_PASSWORD,
) -> list[TrustReport]:
    """Does each platform's every client trust every CA? From the registry alone."""
    from airtrust.layers.truststore import BUNDLES, file_name
    from airtrust.pki.bundle import read_certificates

    client.ping()
    patcher = Patcher(client, cas, cache or LayerCache())
    top = client.manifest(ref.repository, ref.ref)
    targets: list[tuple[str, Manifest]] = []
    if top.is_index:
        for entry in top.json().get("manifests", []):
            if (entry.get("annotations") or {}).get(ATTESTATION):
                continue
            targets.append((_platform(entry), client.manifest(ref.repository, entry["digest"])))
    else:
        targets.append(("", top))
    wanted = {fingerprint(c) for c in cas}
    reports = []
    for platform, manifest in targets:
        body = manifest.json()
        config = patcher.config(ref.repository, body)
        env = list((config.get("config") or {}).get("Env") or [])
        fs = patcher.view(ref.repository, body["layers"], env)
        layout = detect_layout(fs)
        bundles = {}
        for candidate in BUNDLES:
            real = fs.resolve(candidate)
            data = fs.read(real)
            if data is None or real in bundles:
                continue
            try:
                have = {a.fingerprint for a in read_certificates(data, real)}
            except Exception:
                have = set()
            bundles[real] = wanted <= have
        anchors = [p for p in fs.entries if any(file_name(c) in p for c in cas)]
        cfg = config.get("config") or {}
        reports.append(
            TrustReport(
                platform or _platform({}, config),
                manifest.digest,
                layout,
                bundles,
                sorted(anchors),
                str(cfg.get("User", "")),
                list(cfg.get("Entrypoint") or []),
                LABEL in (cfg.get("Labels") or {}),
                client_report(fs, cas, env, store_password=store_password),
            )
        )
    return reports


def base_layout(client: RegistryClient, ref: Reference) -> tuple[Layout, RootFS, dict[str, Any]]:
    """Layout, merged files and config of a single-platform image (or the first platform)."""
    client.ping()
    top = client.manifest(ref.repository, ref.ref)
    manifest = top
    if top.is_index:
        entries = [
            e
            for e in top.json().get("manifests", [])
            if not (e.get("annotations") or {}).get(ATTESTATION)
        ]
        if not entries:
            raise InputError(f"{ref} has no image manifests", hint="check the reference")
        manifest = client.manifest(ref.repository, entries[0]["digest"])
    patcher = Patcher(client, ())
    body = manifest.json()
    fs = patcher.rootfs(ref.repository, body["layers"])
    return detect_layout(fs), fs, patcher.config(ref.repository, body)
