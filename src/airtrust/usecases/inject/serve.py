"""Run the webhook: uvicorn with our TLS certificate, reloaded when the files change
(a CA rotation rewrites the mounted secret), and the bundle distributor beside it.

uvicorn handles concurrency, keep-alive and graceful shutdown on SIGTERM; the
TLS context it built is kept and fed the new certificate in place, so a
rotation never drops the listening socket.
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from airtrust.errors import AirtrustError, InputError
from airtrust.plan.inject import MUTATE_PATH, InjectSettings
from airtrust.usecases.inject.bundles import BundleDistributor
from airtrust.usecases.inject.webhook import WebhookApp

__all__ = ["load_serving_pair", "serve"]

log = logging.getLogger(__name__)


def _split(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise InputError(f"--listen {listen} is not HOST:PORT", hint="e.g. --listen 0.0.0.0:8443")
    return host.strip("[]") or "0.0.0.0", int(port)


def _watch_certificate(
    context: ssl.SSLContext,
    cert: Path,
    key: Path,
    stop: threading.Event,
    every: float = 2.0,
    may_serve: Callable[[bytes], bool] | None = None,
) -> None:
    """Reload the files when they change, once ``may_serve`` allows the new certificate
    (the apiserver must trust it before it is served)."""

    def stamp() -> tuple[float, float]:
        return cert.stat().st_mtime, key.stat().st_mtime

    seen = stamp()
    while not stop.wait(every):
        try:
            now = stamp()
            if now == seen:
                continue
            cert_pem, key_pem = cert.read_bytes(), key.read_bytes()
            if may_serve is None or may_serve(cert_pem):
                load_serving_pair(context, cert_pem, key_pem)
                seen = now
                log.info("inject: serving certificate reloaded from %s", cert)
        except (OSError, ssl.SSLError, AirtrustError) as exc:  # half-written: next time
            log.warning("inject: certificate not reloaded yet: %s", exc)


def load_serving_pair(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """Feed the live context a certificate and key read once, only if they belong
    together. OpenSSL sets the certificate first and drops the context's key when it
    does not match it, so loading a pair caught half-rewritten (a new key beside the
    old certificate: a writer that is not atomic, unlike the kubelet's secret
    volumes) would leave the server with no key and every handshake failing until
    the next reload. A scratch context judges the pair; the live one is touched only
    when it loads, from the same bytes."""
    with _in_memory(cert_pem) as cert_file, _in_memory(key_pem) as key_file:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_file, key_file)
        context.load_cert_chain(cert_file, key_file)


@contextlib.contextmanager
def _in_memory(data: bytes) -> Iterator[str]:
    """A path ``ssl`` can read ``data`` from: an anonymous memory file (the webhook's
    root filesystem is read-only, so nothing may be written to disk), or a private
    temporary file where the system has no memfd."""
    if hasattr(os, "memfd_create"):
        descriptor = os.memfd_create("airtrust-tls", os.MFD_CLOEXEC)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view) :]
            yield f"/proc/self/fd/{descriptor}"
        finally:
            os.close(descriptor)
        return
    with tempfile.TemporaryDirectory(prefix="airtrust-tls-") as folder:
        path = os.path.join(folder, "pem")
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(data)
        yield path


def serve(
    *,
    listen: str,
    cert: Path,
    key: Path,
    settings: InjectSettings,
    distributor: BundleDistributor | None,
    interval: float = 30.0,
) -> None:
    import uvicorn

    host, port = _split(listen)
    for path in (cert, key):
        if not path.is_file():
            raise InputError(f"{path} does not exist", hint="pass the webhook's --cert and --key")

    def ready() -> bool:
        return distributor is None or distributor.passes > 0

    app = WebhookApp(settings, ready=ready)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=10,
        access_log=False,
    )
    config.load()
    if config.ssl is None:  # uvicorn builds the context from the files in load()
        raise InputError("TLS is not configured", hint="pass --cert and --key")
    stop = threading.Event()
    may_serve = distributor.may_serve if distributor is not None else None
    threads = [
        threading.Thread(
            target=_watch_certificate,
            args=(config.ssl, cert, key, stop),
            kwargs={"may_serve": may_serve},
            daemon=True,
        )
    ]
    if distributor is not None:
        threads.append(threading.Thread(target=distributor.run, args=(stop, interval), daemon=True))
    for thread in threads:
        thread.start()
    log.info(
        "inject: serving https://%s:%d%s; namespaces in scope: %s; bundle ConfigMap %s%s",
        host,
        port,
        MUTATE_PATH,
        distributor.selector if distributor is not None else "(not distributed)",
        settings.configmap,
        f", written on label and every {interval:g}s" if distributor is not None else "",
    )
    try:
        uvicorn.Server(config).run()
    finally:
        stop.set()
