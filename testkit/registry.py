"""Debian's docker-registry (distribution 2.8) on 127.0.0.1, the real one, never a stand-in.

Plain HTTP by default (airtrust and the peers allow that for loopback
registries only), TLS, htpasswd or token auth on request, and with
``access_log`` every request it answered in its own log: what reached the
registry, whatever a client reports about itself.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from testkit import free_port, require, wait_for_port

__all__ = ["Registry", "started_registry"]


@dataclass
class Registry:
    host: str
    folder: Path
    process: subprocess.Popen[bytes] | None = None
    config: Path | None = None
    tls: bool = False
    ca: Path | None = None
    credentials: tuple[str, str] | None = None
    extra: dict[str, object] = field(default_factory=dict)
    access_log: bool = False

    @property
    def log(self) -> Path:
        return self.folder / "registry.log"

    def ref(self, path: str) -> str:
        return f"{self.host}/{path}"

    def requests(self) -> list[tuple[str, str]]:
        """(method, path) of every request the registry has answered, from its own access
        log: what reached the registry, whatever a client reports about itself."""
        if not self.access_log:
            raise ValueError("this registry was started without access_log=True")
        text = self.log.read_text(errors="replace")
        return [(m[1], m[2]) for m in re.finditer(r'"([A-Z]+) (/v2/\S*) HTTP/[\d.]+"', text)]

    def answers(self) -> list[tuple[str, str, int, str]]:
        """(method, path, status, user agent) of every request the registry answered, from
        its access log (combined format): who asked, and what the registry said."""
        if not self.access_log:
            raise ValueError("this registry was started without access_log=True")
        text = self.log.read_text(errors="replace")
        pattern = r'"([A-Z]+) (/v2/\S*) HTTP/[\d.]+" (\d{3}) \S+ "[^"]*" "([^"]*)"'
        return [(m[1], m[2], int(m[3]), m[4]) for m in re.finditer(pattern, text)]

    def blob_uploads(self) -> list[tuple[str, str]]:
        """The requests that start, carry or finish a blob upload (POST, PATCH, PUT of
        /v2/NAME/blobs/uploads/), cross-repository mounts included."""
        return [r for r in self.requests() if "/blobs/uploads/" in r[1]]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def start(self) -> None:
        """(Re)start the registry on its port and storage, as after a crash."""
        assert self.config is not None
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [require("docker-registry"), "serve", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(int(self.host.rsplit(":", 1)[1]), self.process, self.log)


@contextlib.contextmanager
def started_registry(
    folder: Path,
    *,
    tls: tuple[Path, Path] | None = None,
    htpasswd: Path | None = None,
    token: dict[str, object] | None = None,
    port: int | None = None,
    access_log: bool = False,
) -> Iterator[Registry]:
    """docker-registry on 127.0.0.1 storing under ``folder``, stopped on exit; ``tls`` is
    (certificate, key); with ``access_log`` it logs every request to ``folder/registry.log``
    (read by :meth:`Registry.requests`)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    http: dict[str, object] = {
        "addr": f"127.0.0.1:{port}",
        "headers": {"X-Content-Type-Options": ["nosniff"]},
    }
    if tls is not None:
        http["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}
    config: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": not access_log}},
        "storage": {
            "filesystem": {"rootdirectory": str(folder / "data")},
            "delete": {"enabled": True},
        },
        "http": http,
    }
    if htpasswd is not None:
        config["auth"] = {"htpasswd": {"realm": "airtrust-test", "path": str(htpasswd)}}
    if token is not None:
        config["auth"] = {"token": token}
    path = folder / "config.yml"
    path.write_text(yaml.safe_dump(config))
    registry = Registry(
        f"127.0.0.1:{port}", folder, config=path, tls=tls is not None, access_log=access_log
    )
    registry.start()
    try:
        yield registry
    finally:
        registry.stop()
