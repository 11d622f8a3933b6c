"""A small OCI distribution client on httpx: what image patching needs, done carefully.

Covers the ``/v2/`` ping; anonymous, Basic and Bearer-token auth (realm,
service and scope from the ``WWW-Authenticate`` challenge); blob HEAD, GET,
cross-repository mount (201, or the 202 upload fallback), monolithic upload
for small blobs and chunked upload for large ones; manifest GET/PUT with
Docker schema 2 and OCI media types. TLS is verified with the given CA
bundle; plain HTTP only for loopback registries or with ``insecure``.
Transient failures (5xx, 429, dropped connections) are retried with backoff.
Credentials are never logged or put into error messages.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import os
import shutil
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx  # (the package __init__ keeps httpx's own CLI from loading)

from airtrust.errors import ImageNotFound, InputError, RegistryError, Unreachable
from airtrust.layers.image import INDEX_TYPES, MANIFEST_TYPES, MediaType, sha256_digest
from airtrust.registry.auth import Credentials, RegistryAuth
from airtrust.registry.fetch import BlobLocation
from airtrust.registry.reference import DOCKER_HUB, is_loopback

__all__ = [
    "ACCEPT",
    "CHUNK",
    "DOCKER_LIST",
    "DOCKER_MANIFEST",
    "INDEX_TYPES",
    "MANIFEST_TYPES",
    "MONOLITHIC_LIMIT",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "RETRY_DELAYS",
    "WORKER_AGENT",
    "Credentials",
    "Manifest",
    "RegistryClient",
    "auth_files",
    "load_credentials",
    "sha256_digest",
]

log = logging.getLogger(__name__)

OCI_INDEX = MediaType.OCI_INDEX
OCI_MANIFEST = MediaType.OCI_MANIFEST
DOCKER_LIST = MediaType.DOCKER_LIST
DOCKER_MANIFEST = MediaType.DOCKER_MANIFEST
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
CHUNK = 8 * 1024 * 1024
MONOLITHIC_LIMIT = 16 * 1024 * 1024
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0)
#: How a scan worker reading a blob itself names itself in the registry's access log.
WORKER_AGENT = "airtrust-scan-worker"


def auth_files() -> list[Path]:
    """Where podman and docker keep registry logins, in the order they are read."""
    files = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        files.append(Path(os.environ["REGISTRY_AUTH_FILE"]))
    if os.environ.get("XDG_RUNTIME_DIR"):  # podman login's default
        files.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    files.append(Path.home() / ".config" / "containers" / "auth.json")
    docker = os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
    files.append(Path(docker) / "config.json")
    return files


def load_credentials(registry: str) -> Credentials | None:
    """A login for ``registry`` from the auth files: a credential helper named for it
    (``credHelpers``), an ``auths`` entry, or the default store (``credsStore``)."""
    keys = {registry, f"https://{registry}", f"http://{registry}"}
    if registry == DOCKER_HUB:
        keys |= {"docker.io", "https://index.docker.io/v1/"}
    for path in auth_files():
        if not path.exists():
            continue
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read {path}: {exc}", hint="fix the auth file") from None
        helpers = config.get("credHelpers") or {}
        for key in keys:
            if key in helpers:
                return _from_helper(helpers[key], registry, path)
        auths = config.get("auths") or {}
        for key in keys:
            entry = auths.get(key)
            if entry and entry.get("auth"):
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
                return Credentials(user, password)
        if config.get("credsStore"):
            found = _from_helper(config["credsStore"], registry, path)
            if found is not None:
                return found
    return None


def _from_helper(name: str, registry: str, source: Path) -> Credentials | None:
    """Ask ``docker-credential-NAME get`` (docker's helper protocol); None if it has none."""
    program = shutil.which(f"docker-credential-{name}")
    where = f"credential helper docker-credential-{name} (named in {source})"
    if program is None:
        raise InputError(
            f"{where} is not on PATH",
            hint="install the helper, or remove it from the auth file and log in again",
            reference="registry-auth",
        )
    server = "https://index.docker.io/v1/" if registry == DOCKER_HUB else registry
    try:
        proc = subprocess.run(
            [program, "get"], input=server.encode(), capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InputError(
            f"{where} failed for {registry} ({type(exc).__name__})",
            hint="run it by hand: echo REGISTRY | docker-credential-NAME get",
            reference="registry-auth",
        ) from None
    if proc.returncode != 0:
        said = (proc.stderr or proc.stdout).decode(errors="replace").strip()
        if "credentials not found" in said.lower():
            return None
        # Its stdout may hold a secret on success only; on failure it holds the reason.
        raise InputError(
            f"{where} failed for {registry}: {said.splitlines()[0][:200] if said else 'no output'}",
            hint="log in again (docker login / podman login), then rerun",
            reference="registry-auth",
        )
    try:
        data = json.loads(proc.stdout)
        username, secret = str(data["Username"]), str(data["Secret"])
    except (ValueError, KeyError, TypeError):
        raise InputError(
            f"{where} did not answer {registry} with Username and Secret",
            hint="check the helper works: echo REGISTRY | docker-credential-NAME get",
            reference="registry-auth",
        ) from None
    if username == "<token>":
        raise InputError(
            f"{where} holds an identity token for {registry}, which airtrust does not use",
            hint="log in with a username and password or pass --username/--password-env",
            reference="registry-auth",
        )
    return Credentials(username, secret)


@dataclass(frozen=True)
class Manifest:
    raw: bytes
    media_type: MediaType
    digest: str

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.raw)
        return data

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


class RegistryClient:
    """One registry host; thread-safe for reading and uploading distinct blobs."""

    def __init__(
        self,
        registry: str,
        *,
        ca_bundle: Path | None = None,
        insecure: bool = False,
        credentials: Credentials | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.registry = registry
        self.credentials = credentials if credentials is not None else load_credentials(registry)
        self._ca_bundle, self._insecure, self._timeout = ca_bundle, insecure, timeout
        self._transport = transport
        self._plain_allowed = insecure or is_loopback(registry)
        # Without --registry-ca, the host's trust store, not certifi's web bundle:
        # on an isolated network the local CA is installed there, never in certifi.
        verify: ssl.SSLContext | bool = False
        if ca_bundle is not None or not insecure:
            verify = _tls_context(ca_bundle)
        self._http = httpx.Client(
            verify=verify,
            timeout=timeout,
            transport=transport,
            follow_redirects=True,
            auth=RegistryAuth(registry, self.credentials),
        )
        self.scheme = "https"
        self.bytes_uploaded = 0

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transport ----------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return path if path.startswith("http") else f"{self.scheme}://{self.registry}{path}"

    def ping(self) -> None:
        """Find the scheme: HTTPS, or plain HTTP where allowed (loopback or --insecure)."""
        try:
            self._http.get(self._url("/v2/"))
            return
        except (httpx.ConnectError, httpx.ReadError, ssl.SSLError) as exc:
            # A certificate we do not trust is an answer, not a reason to try plain HTTP.
            if not self._plain_allowed or "CERTIFICATE_VERIFY_FAILED" in str(exc):
                raise self._unreachable(exc) from None
            https_error = exc
        self.scheme = "http"
        try:
            self._http.get(self._url("/v2/"))
        except httpx.TransportError:
            self.scheme = "https"
            raise self._unreachable(https_error) from None

    def _unreachable(self, exc: Exception) -> Unreachable:
        text = str(exc)
        if "CERTIFICATE_VERIFY_FAILED" in text:
            return Unreachable(
                f"registry {self.registry}: TLS certificate not trusted ({text})",
                hint="pass --registry-ca with the CA that issued the registry's certificate",
                reference="registry-tls",
            )
        return Unreachable(
            f"registry {self.registry} unreachable ({text})",
            hint="check the address, or pass --insecure for a plain-HTTP registry",
            reference="registry-unreachable",
        )

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request with the retry policy: transport errors, 5xx and 429 are tried again
        with backoff (authentication is the client's ``auth`` flow, not this loop)."""
        for attempt, delay in enumerate((*RETRY_DELAYS, None)):
            try:
                response = self._http.request(method, self._url(url), **kwargs)
            except httpx.TransportError as exc:
                if delay is None or (isinstance(exc, httpx.ConnectError) and attempt > 1):
                    raise self._unreachable(exc) from None
                log.debug("retrying %s %s after %s", method, url, type(exc).__name__)
                time.sleep(delay)
                continue
            if (response.status_code >= 500 or response.status_code == 429) and delay is not None:
                time.sleep(delay)
                continue
            return response
        raise AssertionError("unreachable")

    def _fail(self, response: httpx.Response, what: str) -> RegistryError:
        errors: list[dict[str, Any]] = []
        try:
            body = response.json()
            errors = [e for e in body.get("errors", []) if isinstance(e, dict)]
            detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
        except (ValueError, AttributeError):
            detail = response.text[:200]
        codes = tuple(str(e.get("code")) for e in errors if e.get("code"))
        status = response.status_code
        if status in (401, 403):
            return RegistryError(
                f"registry {self.registry}: {what} denied ({detail or status})",
                hint="check the credentials and the account's rights on the repository",
                reference="registry-auth",
                status=status,
                codes=codes,
            )
        failed = RegistryError(
            f"registry {self.registry}: {what} failed: {status} {detail}",
            status=status,
            codes=codes,
        )
        failed.hint = (
            "try again later (the registry says it may pass)"
            if failed.temporary
            else "see the registry's log"
        )
        return failed

    # --- manifests ----------------------------------------------------------------------

    def manifest(self, repository: str, ref: str) -> Manifest:
        response = self._send(
            "GET",
            f"/v2/{repository}/manifests/{ref}",
            headers={"Accept": ACCEPT},
        )
        if response.status_code == 404:
            raise ImageNotFound(
                f"{self.registry}/{repository}:{ref} does not exist",
                hint="check the repository and tag (is the image mirrored there?)",
            )
        if response.status_code != 200:
            raise self._fail(response, f"GET manifest {repository}:{ref}")
        raw = response.content
        media = response.headers.get("Content-Type", "").split(";")[0]
        if media not in INDEX_TYPES + MANIFEST_TYPES:
            media = json.loads(raw).get("mediaType", media)
        if media not in INDEX_TYPES + MANIFEST_TYPES:
            raise RegistryError(
                f"{repository}:{ref} has unsupported manifest type '{media}'",
                hint="airtrust handles OCI and Docker schema 2 images",
            )
        return Manifest(raw, MediaType(media), sha256_digest(raw))

    def put_manifest(self, repository: str, ref: str, raw: bytes, media_type: str) -> str:
        response = self._send(
            "PUT",
            f"/v2/{repository}/manifests/{ref}",
            content=raw,
            headers={"Content-Type": media_type},
        )
        if response.status_code not in (200, 201):
            raise self._fail(response, f"PUT manifest {repository}:{ref}")
        self.bytes_uploaded += len(raw)
        return sha256_digest(raw)

    # --- blobs --------------------------------------------------------------------------

    def blob_exists(self, repository: str, digest: str) -> bool:
        response = self._send("HEAD", f"/v2/{repository}/blobs/{digest}")
        if response.status_code in (200, 404):
            return response.status_code == 200
        raise self._fail(response, f"HEAD blob {digest[:19]}")

    def blob(self, repository: str, digest: str) -> bytes:
        response = self._send("GET", f"/v2/{repository}/blobs/{digest}")
        if response.status_code != 200:
            raise self._fail(response, f"GET blob {digest[:19]}")
        data = response.content
        if sha256_digest(data) != digest:
            raise RegistryError(
                f"blob {digest[:19]} from {repository} is corrupt",
                hint="retry; if it persists the registry's storage is damaged",
            )
        return data

    def stream_blob(self, repository: str, digest: str) -> Iterator[bytes]:
        """Chunks of a blob, verified against its digest at the end."""
        hasher = hashlib.sha256()
        with self._http.stream("GET", self._url(f"/v2/{repository}/blobs/{digest}")) as response:
            if response.status_code != 200:
                response.read()
                raise self._fail(response, f"GET blob {digest[:19]}")
            # As the transport hands them over (64 KiB): re-joining into bigger pieces
            # costs a copy of every byte, measured ~25% of a layer read here.
            for chunk in response.iter_raw():
                hasher.update(chunk)
                yield chunk
        if "sha256:" + hasher.hexdigest() != digest:
            raise RegistryError(
                f"blob {digest[:19]} from {repository} is corrupt",
                hint="retry; if it persists the registry's storage is damaged",
            )

    def blob_location(self, repository: str, digest: str) -> BlobLocation | None:
        """Where a scan worker may GET this blob itself (see fetch.py), with the header
        this client's authentication ended with; None when only this client can reach
        it (a transport of its own, a proxy in between, or a HEAD that did not answer
        200: the client's own GET then gives the error)."""
        url = self._url(f"/v2/{repository}/blobs/{digest}")
        if self._transport is not None or _proxied(url):
            return None
        response = self._send("HEAD", url)
        if response.status_code != 200:
            return None
        first = response.history[0] if response.history else response
        headers = {"User-Agent": WORKER_AGENT}
        if "Authorization" in first.request.headers:
            headers["Authorization"] = first.request.headers["Authorization"]
        cafile = str(self._ca_bundle) if self._ca_bundle is not None else None
        return BlobLocation(url, digest, headers, cafile, self._insecure, self._timeout)

    def mount_blob(self, repository: str, digest: str, source: str) -> bool:
        """Cross-repository mount; False when the registry wants an upload instead (202)."""
        response = self._send(
            "POST",
            f"/v2/{repository}/blobs/uploads/",
            params={"mount": digest, "from": source},
        )
        if response.status_code == 201:
            return True
        if response.status_code == 202:
            location = response.headers.get("Location")
            if location:  # cancel the upload session the fallback opened
                self._send("DELETE", location)
            return False
        raise self._fail(response, f"mount blob {digest[:19]}")

    def upload_blob(
        self,
        repository: str,
        data: bytes | Iterable[bytes],
        digest: str | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> str:
        """Upload a blob: small bytes in one PUT, anything else streamed in CHUNK-sized
        PATCH requests, so a 10 GB layer never sits in memory (only one chunk does)."""
        if isinstance(data, bytes):
            digest = digest or sha256_digest(data)
        elif digest is None:
            raise ValueError("a streamed upload needs its digest")
        response = self._send("POST", f"/v2/{repository}/blobs/uploads/")
        if response.status_code != 202:
            raise self._fail(response, "start upload")
        location = response.headers["Location"]
        body = b""
        if isinstance(data, bytes) and len(data) <= MONOLITHIC_LIMIT:
            body = data
        else:
            offset = 0
            for chunk in _rechunk(data, CHUNK):
                piece = _Body(chunk)
                response = self._send(
                    "PATCH",
                    location,
                    content=piece,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Length": str(len(chunk)),
                        "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
                    },
                )
                piece.release()
                if response.status_code != 202:
                    raise self._fail(response, "upload chunk")
                location = response.headers["Location"]
                offset += len(chunk)
                self.bytes_uploaded += len(chunk)
                if on_progress:
                    on_progress(len(chunk))
        sep = "&" if "?" in location else "?"
        response = self._send(
            "PUT",
            f"{location}{sep}digest={digest}",
            content=body,
            headers={"Content-Type": "application/octet-stream"},
        )
        if response.status_code != 201:
            raise self._fail(response, f"finish upload {digest[:19]}")
        if body:
            self.bytes_uploaded += len(body)
            if on_progress:
                on_progress(len(body))
        return digest

    def ensure_blob(
        self,
        repository: str,
        digest: str,
        *,
        source: str | None,
        data: Callable[[], bytes | Iterable[bytes]] | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> str:
        """Make ``digest`` exist in ``repository``: already there, mounted, or uploaded
        (``data`` gives the bytes or a stream of them; without it the blob is streamed
        from ``source`` in this registry)."""
        if self.blob_exists(repository, digest):
            return "present"
        if source and source != repository and self.mount_blob(repository, digest, source):
            return "mounted"
        payload = data() if data is not None else self.stream_blob(source or repository, digest)
        self.upload_blob(repository, payload, digest, on_progress=on_progress)
        return "uploaded"


def _tls_context(cafile: Path | None) -> ssl.SSLContext:
    """One context per trust source in a process: loading the host's trust store costs
    about 0.1 s, once for each client of a batch before (an SSLContext is safe to
    share). The key holds what the context was loaded from: the file's size and
    mtime, and the variables OpenSSL's default paths read."""
    stat = cafile.stat() if cafile is not None and cafile.exists() else None
    return _cached_context(
        str(cafile) if cafile is not None else None,
        (stat.st_size, stat.st_mtime_ns) if stat is not None else None,
        os.environ.get("SSL_CERT_FILE"),
        os.environ.get("SSL_CERT_DIR"),
    )


@functools.lru_cache(maxsize=8)
def _cached_context(cafile: str | None, *_version: object) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cafile)


def _proxied(url: str) -> bool:
    """Would httpx send this URL through a proxy from the environment (as it does by
    default)? Read the way urllib reads it: HTTP(S)_PROXY, ALL_PROXY and NO_PROXY."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.netloc)


class _Body:
    """A request body that lets go of its bytes once answered. httpx keeps each response
    in a reference cycle with its stream, and the request (with its body) hangs off the
    response: chunks of a 10 GB upload would wait for the cycle collector, and memory
    would follow the blob's size. Iterable again until released, so a retry resends it."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def __iter__(self) -> Iterator[bytes]:
        yield self._data

    def release(self) -> None:
        self._data = b""


def _rechunk(data: bytes | Iterable[bytes], size: int) -> Iterator[bytes]:
    """``data`` as pieces of exactly ``size`` bytes (the last one shorter)."""
    if isinstance(data, bytes):
        view = memoryview(data)
        for start in range(0, len(view), size):
            yield bytes(view[start : start + size])
        return
    pending = bytearray()
    for chunk in data:
        pending += chunk
        while len(pending) >= size:
            yield bytes(pending[:size])
            del pending[:size]
    if pending:
        yield bytes(pending)
