"""Scan workers read layer blobs from the registry themselves, and fall back to the pipe.

The registry is Debian's docker-registry on 127.0.0.1; who fetched what, and what
the registry answered, is read from its own access log (the worker names itself
``airtrust-scan-worker``, the parent's client is httpx). The reference for every
index is a scan in this process of the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit.images import small_layer

from airtrust.layers.scan import scan_layer_stream
from airtrust.registry.client import WORKER_AGENT, RegistryClient
from airtrust.registry.fetch import BlobLocation
from airtrust.registry.scanworkers import WorkerPool
from tests.integration.conftest import wait_for
from tests.integration.registry import Registry, started_registry

pytestmark = pytest.mark.integration

REPO = "scan/fetch"


BLOBS = [
    small_layer({"etc/ssl/certs/ca-certificates.crt": b"roots\n", "opt/w.bin": bytes(3 << 20)}),
    small_layer({"etc/os-release": b"ID=debian\n", "app/settings.env": b"SSL_CERT_FILE=/x\n"}),
]


def digest(blob: bytes) -> str:
    return "sha256:" + hashlib.sha256(blob).hexdigest()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with started_registry(tmp_path / "reg", access_log=True) as reg:
        with RegistryClient(reg.host) as client:
            client.ping()
            for blob in BLOBS:
                client.upload_blob(REPO, blob)
        yield reg


def gets(reg: Registry, blob: bytes) -> list[tuple[int, str]]:
    """(status, agent) of every GET of this blob the registry answered."""
    path = f"/v2/{REPO}/blobs/{digest(blob)}"
    return [
        (status, agent)
        for method, p, status, agent in reg.answers()
        if (method, p) == ("GET", path)
    ]


def never() -> Iterator[bytes]:
    raise AssertionError("the parent streamed a blob the worker should have read")
    yield b""  # pragma: no cover


def test_workers_read_the_blobs_themselves_and_find_what_this_process_finds(
    registry: Registry,
) -> None:
    extra = frozenset({"app/settings.env"})
    progress: list[int] = []
    with RegistryClient(registry.host) as client, WorkerPool(1) as pool:
        client.ping()
        got = [
            pool.scan(never(), extra, client.blob_location(REPO, digest(b)), progress.append)
            for b in BLOBS
        ]
    want = [scan_layer_stream(iter([b]), extra) for b in BLOBS]
    assert [g.to_json() for g in got] == [w.to_json() for w in want]
    assert got[1].entries["app/settings.env"].content == b"SSL_CERT_FILE=/x\n"
    assert sum(progress) == sum(map(len, BLOBS))  # the bar still moves
    for blob in BLOBS:  # one GET each, by the worker, answered 200
        wait_for("the worker's GET in the log", lambda b=blob: bool(gets(registry, b)))
        assert gets(registry, blob) == [(200, WORKER_AGENT)]


def test_a_blob_the_worker_cannot_verify_is_sent_by_the_parent_instead(
    registry: Registry,
) -> None:
    """The location names the other blob's URL: the worker reads it, the digest does not
    match, and the layer comes through the pipe from the parent's own client."""
    wanted, other = BLOBS
    with RegistryClient(registry.host) as client, WorkerPool(1) as pool:
        client.ping()
        right = client.blob_location(REPO, digest(wanted))
        assert right is not None
        wrong_url = right.url.replace(digest(wanted), digest(other))
        wrong = BlobLocation(wrong_url, digest(wanted), right.headers)
        index = pool.scan(client.stream_blob(REPO, digest(wanted)), frozenset(), wrong)
        again = pool.scan(never(), frozenset(), right)  # the worker goes on
    want = scan_layer_stream(iter([wanted]), frozenset()).to_json()
    assert index.to_json() == want and again.to_json() == want
    wait_for("both GETs in the log", lambda: len(gets(registry, wanted)) == 2)
    agents = [agent for _, agent in gets(registry, wanted)]
    assert agents[0].startswith("python-httpx") and agents[1] == WORKER_AGENT
    assert gets(registry, other) == [(200, WORKER_AGENT)]  # read, and refused by the worker


def test_no_location_behind_a_proxy_or_for_a_missing_blob(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    with RegistryClient(registry.host) as client:
        client.ping()
        assert client.blob_location(REPO, digest(b"not pushed")) is None
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # httpx would use it
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        assert client.blob_location(REPO, digest(BLOBS[0])) is None
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        location = client.blob_location(REPO, digest(BLOBS[0]))
    assert location is not None
    assert json.loads(json.dumps(location.to_json())) == location.to_json()
    assert BlobLocation.from_json(location.to_json()) == location
