"""Run the webhook: uvicorn with our TLS certificate, reloaded when the files change
(a CA rotation rewrites the mounted secret), and the bundle distributor beside it.

uvicorn handles concurrency, keep-alive and graceful shutdown on SIGTERM; the
TLS context it built stays on the listening socket and hands each handshake to the
latest certificate's own context, so a rotation never drops the socket.

With ``drain``, SIGTERM first makes the server unready and keeps it answering for
that long, each answer closing its connection: a replica being replaced stays in
the Service's endpoints until kube-proxy has caught up, and the apiserver keeps
its kept-alive connections to it. Stopping at once refused the new connections
and reset the old ones, and the apiserver waited half a second before each retry
(measured: the p99 of admissions while a replica was deleted).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from airtrust.errors import AirtrustError, InputError
from airtrust.plan.inject import MUTATE_PATH, InjectSettings
from airtrust.usecases.inject.bundles import BundleDistributor
from airtrust.usecases.inject.webhook import WebhookApp

if TYPE_CHECKING:
    import uvicorn

__all__ = ["ServingCertificate", "serve"]

log = logging.getLogger(__name__)


def _split(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise InputError(f"--listen {listen} is not HOST:PORT", hint="e.g. --listen 0.0.0.0:8443")
    return host.strip("[]") or "0.0.0.0", int(port)


def _watch_certificate(
    serving: ServingCertificate,
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
                serving.load(cert_pem, key_pem)
                seen = now
                log.info("inject: serving certificate reloaded from %s", cert)
        except (OSError, ssl.SSLError, AirtrustError) as exc:  # half-written: next time
            log.warning("inject: certificate not reloaded yet: %s", exc)


class ServingCertificate:
    """The certificate and key the webhook presents, replaced whole.

    The listening socket keeps the context uvicorn built (``front``); each handshake
    is moved, at the ClientHello, onto the context of the latest pair. Loading a new
    pair into the live context instead is not safe: OpenSSL sets the certificate and
    then the key in two steps, Python lets the event loop run between them, and a
    connection accepted in that gap gets the new certificate without its key (the
    client sees the connection cut: 'Unexpected EOF'). A pair caught half-rewritten
    (a new key beside the old certificate: a writer that is not atomic, unlike the
    kubelet's secret volumes) fails to load into its own context and is never used.
    """

    def __init__(self, front: ssl.SSLContext, ciphers: str | None = None) -> None:
        self._ciphers = ciphers
        self._current: ssl.SSLContext | None = None
        front.sni_callback = self._choose  # called for every ClientHello, SNI or not

    def load(self, cert_pem: bytes, key_pem: bytes) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if self._ciphers:
            context.set_ciphers(self._ciphers)
        with _in_memory(cert_pem) as cert_file, _in_memory(key_pem) as key_file:
            context.load_cert_chain(cert_file, key_file)
        self._current = context  # one reference swap: a handshake sees old or new

    def _choose(self, connection: ssl.SSLObject | ssl.SSLSocket, *_: object) -> None:
        current = self._current
        if current is not None:
            connection.context = current


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
    drain: float = 0.0,
) -> None:
    import uvicorn

    host, port = _split(listen)
    for path in (cert, key):
        if not path.is_file():
            raise InputError(f"{path} does not exist", hint="pass the webhook's --cert and --key")
    draining = threading.Event()

    def ready() -> bool:
        return not draining.is_set() and (distributor is None or distributor.passes > 0)

    app = WebhookApp(settings, ready=ready, closing=draining.is_set)
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
    serving = ServingCertificate(config.ssl, config.ssl_ciphers)
    threads = [
        threading.Thread(
            target=_watch_certificate,
            args=(serving, cert, key, stop),
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
        _draining_server(config, drain, draining).run()
    finally:
        stop.set()


def _draining_server(
    config: uvicorn.Config, drain: float, draining: threading.Event
) -> uvicorn.Server:
    """uvicorn's server, whose first SIGTERM starts ``drain`` seconds of answering
    unready before its own graceful shutdown (a second signal stops at once)."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if sig != signal.SIGTERM or drain <= 0 or draining.is_set():
                super().handle_exit(sig, frame)
                return
            draining.set()
            log.info("inject: SIGTERM: unready, answering for %gs more, then stopping", drain)
            stop = threading.Timer(drain, super().handle_exit, args=(sig, frame))
            stop.daemon = True
            stop.start()

    return DrainingServer(config)
