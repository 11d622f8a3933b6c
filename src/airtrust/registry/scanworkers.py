"""Scan an image's layers on every core: worker processes fed as the blobs download.

Inflating a layer with ISA-L releases the GIL, but parsing the tar stream that
comes out of it does not, so threads scanning several layers at once share one
core for most of the work (measured: a 2 GiB, 11-layer image took as long on
two threads as on one). A worker process per core, fed the compressed bytes
as they arrive, lets the layers occupy every core while the downloads and
their digest checks stay in the parent.

The workers are plain subprocesses (``python -m airtrust.registry.scanworkers``)
speaking a framed protocol on stdin/stdout, not ``multiprocessing``: nothing
is forked from a process that holds threads, sockets and locks, and the
caller's main module (a CLI, pytest) is never imported again in the child.
They live for one image and are reused for its layers; a worker that dies
makes the scan fail with what it said, never hang.

Protocol, per layer: the parent writes a JSON line, ``{"extra": [...]}`` (the
extra paths whose contents are wanted) and, when the worker can read the blob
itself, ``"location"`` (a :class:`~airtrust.registry.fetch.BlobLocation`).
Without a location, frames of compressed bytes follow (a 4-byte big-endian
length, then the bytes), then an empty frame. The worker answers with frames
holding pickled tuples: ``("progress", bytes)`` while it reads a location, then
one of ``("ok", LayerIndex)``, ``("error", exception)``, or
``("unfetched", reason)`` when its own read failed (the parent then sends the
blob through the pipe, and its client's error is the one a user sees). Pickle
is safe here: both ends are this program, on one machine, over a private pipe.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import queue
import struct
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import IO

from airtrust.layers.scan import LayerIndex, scan_chunks
from airtrust.registry.fetch import BlobLocation, FetchError, fetch_blob

__all__ = ["ScanWorker", "WorkerPool", "main", "usable_cores", "worker_count"]

log = logging.getLogger(__name__)

FRAME = struct.Struct(">I")
#: Bytes the parent gathers into one frame: one pipe write per MiB, not per socket read.
BATCH = 1 << 20
#: Bytes a worker reads itself between progress frames to the parent.
PROGRESS = 8 << 20
#: Below this many compressed bytes to scan, starting processes costs more than it saves.
THRESHOLD = 32 << 20


def worker_count(sizes: Iterable[int]) -> int:
    """How many worker processes to scan layers of these compressed sizes: 0 means
    scan in this process. ``AIRTRUST_SCAN_WORKERS`` overrides (0 turns them off)."""
    sizes = list(sizes)
    configured = os.environ.get("AIRTRUST_SCAN_WORKERS")
    if configured is not None and configured.strip().isdigit():
        return min(int(configured), len(sizes))
    cores = usable_cores()
    if cores < 2 or len(sizes) < 2 or sum(sizes) < THRESHOLD:
        return 0
    return min(cores, len(sizes))


def usable_cores() -> int:
    """The cores this process may run on (a container's CPU set, not the machine's)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class WorkerError(RuntimeError):
    """A worker process ended without answering (killed, out of memory)."""


class ScanWorker:
    """One worker process; scans one layer at a time."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "airtrust.registry.scanworkers"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        #: False while a layer is half sent (a download that failed midway)
        self.clean = True

    def scan(
        self,
        chunks: Iterable[bytes],
        extra: frozenset[str],
        location: BlobLocation | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> LayerIndex:
        """The layer's index: read by the worker from ``location`` if given and it can,
        else from ``chunks`` sent as they come (the caller's iterator verifies the
        digest at its end)."""
        if location is not None:
            index = self._exchange(extra, location, on_progress)
            if index is not None:
                return index
        index = self._exchange(extra, chunks, None)
        assert index is not None  # only a location goes unfetched
        return index

    def _exchange(
        self,
        extra: frozenset[str],
        source: BlobLocation | Iterable[bytes],
        on_progress: Callable[[int], None] | None,
    ) -> LayerIndex | None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.clean = False
        try:
            pipe = self.proc.stdin
            head: dict[str, object] = {"extra": sorted(extra)}
            if isinstance(source, BlobLocation):
                head["location"] = source.to_json()
            pipe.write(json.dumps(head).encode() + b"\n")
            if not isinstance(source, BlobLocation):
                _send_blob(pipe, source)
            pipe.flush()
            while True:
                (length,) = FRAME.unpack(_exact(self.proc.stdout, FRAME.size))
                status, payload = pickle.loads(_exact(self.proc.stdout, length))
                if status != "progress":
                    break
                if on_progress is not None:
                    on_progress(payload)
        except (BrokenPipeError, ConnectionResetError, EOFError) as exc:
            raise WorkerError(f"layer scan worker ended: {self._stderr()}") from exc
        self.clean = True  # the whole layer went through: the worker can take another
        if status == "unfetched":
            log.debug("scan worker could not read the blob itself: %s", payload)
            return None
        if status != "ok":
            raise payload
        index: LayerIndex = payload
        return index

    def _stderr(self) -> str:
        self.close()
        if self.proc.stderr is None:
            return "no output"
        lines = self.proc.stderr.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"exit code {self.proc.returncode}"

    def close(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class WorkerPool:
    """``count`` workers, started at once, lent to one scanning thread at a time."""

    def __init__(self, count: int) -> None:
        self.idle: queue.Queue[ScanWorker] = queue.Queue()
        self.all = [ScanWorker() for _ in range(count)]
        for worker in self.all:
            self.idle.put(worker)

    def scan(
        self,
        chunks: Iterable[bytes],
        extra: frozenset[str],
        location: BlobLocation | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> LayerIndex:
        worker = self.idle.get()
        try:
            return worker.scan(chunks, extra, location, on_progress)
        finally:
            if not worker.clean:  # its pipe holds half a layer: never reuse it
                worker.close()
                self.all.remove(worker)
                worker = ScanWorker()
                self.all.append(worker)
            self.idle.put(worker)

    def close(self) -> None:
        for worker in self.all:
            worker.close()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _send_blob(pipe: IO[bytes], chunks: Iterable[bytes]) -> None:
    batch: list[bytes] = []
    size = 0
    for chunk in chunks:
        batch.append(chunk)
        size += len(chunk)
        if size >= BATCH:
            _send(pipe, b"".join(batch))
            batch, size = [], 0
    if batch:
        _send(pipe, b"".join(batch))
    pipe.write(FRAME.pack(0))


def _send(pipe: IO[bytes], data: bytes) -> None:
    pipe.write(FRAME.pack(len(data)))
    pipe.write(data)


def _exact(stream: IO[bytes], n: int) -> bytes:
    data = stream.read(n)
    if data is None or len(data) != n:
        raise EOFError(f"pipe closed after {len(data or b'')} of {n} bytes")
    return data


def _report_peak() -> None:
    """With ``AIRTRUST_SCAN_WORKER_RSS=DIR``, leave this worker's peak resident memory
    (VmHWM, KiB) in DIR/PID: the benches add the workers' peaks to the parent's."""
    folder = os.environ.get("AIRTRUST_SCAN_WORKER_RSS")
    if not folder:
        return
    with open("/proc/self/status") as status:
        peak = next((line.split()[1] for line in status if line.startswith("VmHWM:")), "0")
    with open(os.path.join(folder, str(os.getpid())), "w") as out:
        out.write(peak)


def _error_frame(exc: object) -> bytes:
    """The error pickled, or its text when it would not come back whole (an
    exception class whose constructor takes other arguments than it stores)."""
    try:
        data = pickle.dumps(("error", exc))
        pickle.loads(data)
        return data
    except Exception:
        return pickle.dumps(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))


def _frames(stream: IO[bytes]) -> Iterator[bytes]:
    while True:
        (length,) = FRAME.unpack(_exact(stream, FRAME.size))
        if length == 0:
            return
        yield _exact(stream, length)


def _reply(sink: IO[bytes], data: bytes) -> None:
    sink.write(FRAME.pack(len(data)) + data)
    sink.flush()


def _reporting(chunks: Iterator[bytes], sink: IO[bytes]) -> Iterator[bytes]:
    """The chunks, with a progress frame to the parent every PROGRESS bytes."""
    pending = 0
    for chunk in chunks:
        pending += len(chunk)
        if pending >= PROGRESS:
            _reply(sink, pickle.dumps(("progress", pending)))
            pending = 0
        yield chunk
    if pending:
        _reply(sink, pickle.dumps(("progress", pending)))


def _scan_location(
    location: BlobLocation, extra: frozenset[str], sink: IO[bytes]
) -> tuple[str, object]:
    chunks = _reporting(fetch_blob(location), sink)
    try:
        try:
            index = scan_chunks(chunks, extra)
        except FetchError:
            raise
        except Exception as exc:  # damaged in transit, or damaged at the source?
            for _ in chunks:  # the digest check at the end tells
                pass
            return ("error", exc)
        for _ in chunks:  # read to the end: the digest is checked there
            pass
    except FetchError as exc:
        return ("unfetched", str(exc))
    return ("ok", index)


def main() -> None:
    """The worker: scan layers from stdin until it closes."""
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    while True:
        line = source.readline()
        if not line:
            _report_peak()
            return
        head = json.loads(line)
        extra = frozenset(head["extra"])
        reply: tuple[str, object]
        if head.get("location"):
            reply = _scan_location(BlobLocation.from_json(head["location"]), extra, sink)
        else:
            frames = _frames(source)
            try:
                reply = ("ok", scan_chunks(frames, extra))
            except Exception as exc:  # handed to the parent, raised there
                reply = ("error", exc)
            for _ in frames:  # read to the end frame: the parent sends the whole blob
                pass
        _reply(sink, pickle.dumps(reply) if reply[0] != "error" else _error_frame(reply[1]))


if __name__ == "__main__":
    main()
