"""Layer scanning in worker processes gives what scanning in this process gives, and
the jobs of a batch read a shared layer once.

The workers are real subprocesses (``python -m airtrust.registry.scanworkers``);
the reference is :func:`airtrust.layers.scan.scan_layer_stream` in this process.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit.images import small_layer

from airtrust.layers.scan import LayerIndex, scan_layer_stream
from airtrust.registry.append import LayerCache
from airtrust.registry.scanworkers import THRESHOLD, WorkerPool, worker_count


def layer(files: dict[str, bytes]) -> bytes:
    return small_layer(files, uid=1000, links={"etc/ssl/cert.pem": "certs/ca-certificates.crt"})


def chunked(blob: bytes, size: int = 7000) -> Iterator[bytes]:
    for start in range(0, len(blob), size):
        yield blob[start : start + size]


FILES = {
    "etc/ssl/certs/ca-certificates.crt": b"-----BEGIN CERTIFICATE-----\nAAAA\n",
    "usr/lib/python3/dist-packages/certifi/cacert.pem": b"roots\n",
    "opt/model/weights.bin": bytes(300_000),
    "app/settings.env": b"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt\n",
}


def test_a_worker_finds_what_this_process_finds_and_is_reused() -> None:
    extra = frozenset({"app/settings.env"})
    blobs = [layer(FILES), layer({"etc/os-release": b"ID=debian\n"})]
    with WorkerPool(1) as pool:  # one worker: the second layer reuses it
        got = [pool.scan(chunked(b), extra) for b in blobs]
    want = [scan_layer_stream(chunked(b), extra) for b in blobs]
    assert [g.to_json() for g in got] == [w.to_json() for w in want]
    assert got[0].entries["app/settings.env"].content == FILES["app/settings.env"]
    assert got[0].entries["etc/ssl/cert.pem"].kind == "symlink"


def test_a_damaged_layer_fails_with_the_inflaters_error_and_the_worker_goes_on() -> None:
    good = layer(FILES)
    damaged = good[:40] + bytes(len(good) - 80) + good[-40:]
    with WorkerPool(1) as pool:
        with pytest.raises(Exception, match=r"[Ii]nvalid deflate"):  # ISA-L's own words
            pool.scan(chunked(damaged), frozenset())
        assert "etc/ssl/cert.pem" in pool.scan(chunked(good), frozenset()).entries


def test_a_download_that_fails_midway_retires_the_worker() -> None:
    good = layer(FILES)

    def broken() -> Iterator[bytes]:
        yield good[:5000]
        raise ConnectionError("digest mismatch")

    with WorkerPool(1) as pool:
        first = pool.all[0]
        with pytest.raises(ConnectionError):
            pool.scan(broken(), frozenset())
        assert first not in pool.all and first.proc.poll() is not None
        assert "etc/ssl/cert.pem" in pool.scan(chunked(good), frozenset()).entries


def test_worker_count_follows_size_layers_and_the_override(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AIRTRUST_SCAN_WORKERS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    assert worker_count([THRESHOLD, THRESHOLD]) == 2
    assert worker_count([THRESHOLD // 4, THRESHOLD // 4]) == 0  # small: threads
    assert worker_count([THRESHOLD * 4]) == 0  # one layer: nothing to share
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0}, raising=False)
    assert worker_count([THRESHOLD, THRESHOLD]) == 0  # one core
    monkeypatch.setenv("AIRTRUST_SCAN_WORKERS", "3")
    assert worker_count([1, 1, 1, 1]) == 3
    monkeypatch.setenv("AIRTRUST_SCAN_WORKERS", "0")
    assert worker_count([THRESHOLD] * 4) == 0


def test_jobs_that_need_one_layer_at_once_scan_it_once(tmp_path: Path) -> None:
    """Two jobs of a batch (two LayerCache objects, one folder) ask for the same layer
    at the same moment: one scan runs, both get its index, the cache holds it."""
    started, release = threading.Event(), threading.Event()
    scans: list[int] = []
    want = scan_layer_stream(chunked(layer(FILES)), frozenset())

    def scan() -> LayerIndex:
        scans.append(1)
        started.set()
        release.wait(10)
        return want

    got: list[LayerIndex] = []
    first = threading.Thread(
        target=lambda: got.append(LayerCache(tmp_path).once("sha256:ab", frozenset(), scan))
    )
    first.start()
    assert started.wait(10)
    second = threading.Thread(
        target=lambda: got.append(LayerCache(tmp_path).once("sha256:ab", frozenset(), scan))
    )
    second.start()
    release.set()
    first.join(10)
    second.join(10)
    assert len(scans) == 1 and len(got) == 2
    assert got[0].to_json() == got[1].to_json() == want.to_json()
    cached = LayerCache(tmp_path).get("sha256:ab")
    assert cached is not None and cached.to_json() == want.to_json()


def test_a_failed_scan_is_not_cached_and_the_next_job_scans_again(tmp_path: Path) -> None:
    def broken() -> LayerIndex:
        raise ConnectionError("registry went away")

    with pytest.raises(ConnectionError):
        LayerCache(tmp_path).once("sha256:cd", frozenset(), broken)
    index = LayerCache(tmp_path).once("sha256:cd", frozenset(), LayerIndex)
    assert index.entries == {}
