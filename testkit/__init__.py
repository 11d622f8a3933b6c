"""The real peers and images that the integration tests and the benches share.

One recipe for each: starting Debian's docker-registry on 127.0.0.1, building
the Debian and AI workload images (mmdebstrap, pip, ISA-L gzip) under one
cache in ~/.cache/airtrust/images, pushing them with crane or skopeo, and
reading a process's peak memory. Two copies of a recipe drift apart while
sharing one cache name, and then a bench and a test run read different bytes
under it, so tests/integration and bench/ both import this package; it imports
neither of them, nor pytest.

A missing tool or a failed build raises :class:`SetupFailed`: a bench that does
not catch it ends with the reason (it is a ``SystemExit``), and the tests'
wrappers turn it into a test failure saying the same.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "CACHE",
    "CRANE",
    "IMAGES",
    "POLL",
    "SetupFailed",
    "free_port",
    "locked",
    "require",
    "run_checked",
    "wait_for_port",
]

CACHE = Path(os.environ.get("AIRTRUST_CACHE", Path.home() / ".cache" / "airtrust"))
IMAGES = CACHE / "images"
#: Built by scripts/build-testbins (scripts/test runs it).
CRANE = CACHE / "bin" / "crane"
#: How often deadline loops look again (never a wait for its own sake).
POLL = 0.05


class SetupFailed(SystemExit):
    """A peer or an image could not be had: the message says what and why.

    A ``SystemExit`` so that a bench ends with the message and no traceback, as
    ``raise SystemExit(message)`` does; the tests catch it and fail the test."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise SetupFailed(f"{tool} is not installed; run scripts/test (or apt-get install it)")
    return path


def run_checked(what: str, *cmd: str | Path, timeout: float = 600) -> str:
    """Run ``cmd``; its stdout, or :class:`SetupFailed` naming ``what`` with its stderr."""
    proc = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise SetupFailed(f"{what} failed ({proc.returncode}): {proc.stderr[-1500:]}")
    return proc.stdout


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Serialise builds of one cached artifact across processes (CI, a developer and a
    bench at once): one build at a time, the others then reuse it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / (path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(
    port: int, proc: subprocess.Popen[bytes], log: Path | None = None, timeout: float = 15
) -> None:
    """Until something listens on 127.0.0.1:``port``; :class:`SetupFailed` with the end of
    ``log`` (where ``proc`` writes) if ``proc`` exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            said = log.read_text(errors="replace")[-2000:] if log is not None else ""
            raise SetupFailed(f"server exited early ({proc.returncode}): {said}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(POLL)
    raise SetupFailed(f"nothing listens on 127.0.0.1:{port} after {timeout}s")
