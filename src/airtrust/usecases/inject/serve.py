"""Run the webhook: uvicorn with our TLS certificate, reloaded when the files change
(a CA rotation rewrites the mounted secret), and the bundle distributor beside it.

uvicorn handles concurrency, keep-alive and graceful shutdown on SIGTERM; the
TLS context it built is kept and fed the new certificate in place, so a
rotation never drops the listening socket.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from pathlib import Path

from airtrust.errors import AirtrustError, InputError
from airtrust.plan.inject import MUTATE_PATH, InjectSettings
from airtrust.usecases.inject.bundles import BundleDistributor
from airtrust.usecases.inject.webhook import WebhookApp

__all__ = ["serve"]

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
            if now != seen and (may_serve is None or may_serve(cert.read_bytes())):
                context.load_cert_chain(str(cert), str(key))
                seen = now
                log.info("inject: serving certificate reloaded from %s", cert)
        except (OSError, ssl.SSLError, AirtrustError) as exc:  # half-written: next time
            log.warning("inject: certificate not reloaded yet: %s", exc)


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
