"""The adapters' own logic, against ``MockTransport`` handlers: retries, conflict parsing,
lease renewal, auth challenges, watch resumption.

These add to the real-server tests in ``tests/integration`` (real registry, real
apiserver), which remain the proof; here each branch is driven on purpose,
including the ones a real server rarely takes (a 503 burst, a lost lease race).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable
from typing import Any

import httpx
import httpx2
import pytest

from airtrust.errors import ApiFailure, Conflict, PermissionDenied, RegistryError
from airtrust.kube.api import KubeAPI
from airtrust.kube.watch import RELIST, Watcher
from airtrust.plan.manifests import micro_time
from airtrust.registry.auth import Credentials, RegistryAuth, scope_for
from airtrust.registry.client import RegistryClient
from airtrust.usecases.sync.lease import LeaderElector

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def kube(handler: Callable[[httpx2.Request], httpx2.Response]) -> KubeAPI:
    def factory() -> httpx2.Client:
        return httpx2.Client(transport=httpx2.MockTransport(handler), base_url="https://k8s")

    return KubeAPI("test-ctx", factory)


def registry(
    handler: Callable[[httpx.Request], httpx.Response], credentials: Credentials | None = None
) -> RegistryClient:
    return RegistryClient(
        "reg.example.test",
        transport=httpx.MockTransport(handler),
        credentials=credentials or Credentials("", ""),
    )


# --- kube: conflicts, RBAC, other failures -------------------------------------------------


def test_apply_409_names_every_manager_and_field() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        assert request.url.params["fieldManager"] == "airtrust"
        assert request.headers["content-type"] == "application/apply-patch+yaml"
        return httpx2.Response(
            409,
            json={
                "message": "Apply failed with 2 conflicts",
                "details": {
                    "causes": [
                        {"message": 'conflict with "kubectl-create"', "field": ".data.a"},
                        {"message": 'conflict with "helm"', "field": ".data.b"},
                        {"message": "no manager named", "field": ".type"},
                    ]
                },
            },
        )

    manifest = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "n"}}
    with pytest.raises(Conflict) as caught:
        kube(handler).apply(manifest)
    assert caught.value.managers == ("helm", "kubectl-create")
    text = caught.value.one_line()
    assert "context 'test-ctx'" in text and ".data.a, .data.b, .type" in text
    assert "--force-conflicts" in text


def test_rbac_denial_and_other_403_are_told_apart() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("/denied"):
            return httpx2.Response(403, json={"message": 'User "x" cannot get resource "secrets"'})
        return httpx2.Response(403, json={"message": "namespace n is being terminated"})

    api = kube(handler)
    with pytest.raises(PermissionDenied, match="forbidden"):
        api.get("v1", "secrets", "n", "denied")
    with pytest.raises(ApiFailure, match="being terminated"):
        api.get("v1", "secrets", "n", "other")


def test_each_thread_gets_its_own_client_while_it_uses_it() -> None:
    """No client (so no TLS connection) is used by two threads at once."""
    in_use: set[int] = set()
    overlaps = []
    lock = threading.Lock()
    clients: list[httpx2.Client] = []
    barrier = threading.Barrier(8)
    together = [True]

    def factory() -> httpx2.Client:
        client: httpx2.Client

        def handler(request: httpx2.Request) -> httpx2.Response:
            with lock:
                if id(client) in in_use:
                    overlaps.append(id(client))
                in_use.add(id(client))
            if together[0]:
                barrier.wait(timeout=5)  # every thread is inside a request now
            with lock:
                in_use.discard(id(client))
            return httpx2.Response(200, json={"kind": "Secret"})

        client = httpx2.Client(transport=httpx2.MockTransport(handler), base_url="https://k8s")
        clients.append(client)
        return client

    api = KubeAPI("ctx", factory)
    threads = [
        threading.Thread(target=api.get, args=("v1", "secrets", "n", f"s{i}")) for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not overlaps and len(clients) == 8
    together[0] = False
    api.get("v1", "secrets", "n", "again")  # reuses an idle client, makes none
    assert len(clients) == 8
    api.close()


# --- lease ---------------------------------------------------------------------------------


class LeaseServer:
    """Just enough of the Lease API to drive the elector: GET, POST, PUT with 409 on a
    stale resourceVersion."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "GET":
            return (
                httpx2.Response(404, json={})
                if self.lease is None
                else httpx2.Response(200, json=self.lease)
            )
        body = json.loads(request.content)
        if request.method == "POST":
            if self.lease is not None:
                return httpx2.Response(409, json={"message": "exists"})
        elif body["metadata"].get("resourceVersion") != str(self.version):
            return httpx2.Response(409, json={"message": "the object has been modified"})
        self.version += 1
        body["metadata"]["resourceVersion"] = str(self.version)
        self.lease = body
        return httpx2.Response(201 if request.method == "POST" else 200, json=body)


def test_lease_acquire_renew_refuse_and_take_over_when_expired() -> None:
    server = LeaseServer()
    clock = [NOW]
    a = LeaderElector(kube(server), "ns", "a", 15, clock=lambda: clock[0])
    b = LeaderElector(kube(server), "ns", "b", 15, clock=lambda: clock[0])
    assert a.try_acquire()  # created
    assert server.lease is not None and server.lease["spec"]["holderIdentity"] == "a"
    clock[0] += dt.timedelta(seconds=5)
    assert a.try_acquire()  # renewed
    assert server.lease["spec"]["renewTime"] == micro_time(clock[0])
    assert not b.try_acquire()  # held, not expired
    clock[0] += dt.timedelta(seconds=16)
    assert b.try_acquire()  # expired: taken over
    assert server.lease["spec"]["holderIdentity"] == "b"
    assert server.lease["spec"]["leaseTransitions"] == 1


def test_lease_renewal_that_loses_the_race_is_not_leadership() -> None:
    server = LeaseServer()
    elector = LeaderElector(kube(server), "ns", "a", 15, clock=lambda: NOW)
    assert elector.try_acquire()

    def racing(request: httpx2.Request) -> httpx2.Response:
        if request.method == "PUT":  # someone renewed between our GET and PUT
            server.version += 1
        return server(request)

    elector.api = kube(racing)
    assert not elector.try_acquire()


# --- watch ---------------------------------------------------------------------------------


def test_watch_resumes_from_the_last_version_and_relists_after_410() -> None:
    stop = threading.Event()
    seen: list[tuple[str, str]] = []
    requests: list[dict[str, str]] = []
    streams = iter(
        [
            # a stream with one event and a bookmark, then it ends (apiserver timeout)
            [
                {"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "11"}}},
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}},
            ],
            # resumed at 15: the version was compacted
            [{"type": "ERROR", "object": {"code": 410, "message": "too old"}}],
            # after the relist at 20
            [{"type": "MODIFIED", "object": {"metadata": {"name": "b", "resourceVersion": "21"}}}],
        ]
    )
    lists = iter(["10", "20"])

    def handler(request: httpx2.Request) -> httpx2.Response:
        params = dict(request.url.params)
        requests.append(params)
        if "watch" not in params:
            return httpx2.Response(200, json={"metadata": {"resourceVersion": next(lists)}})
        try:
            events = next(streams)
        except StopIteration:
            stop.set()
            return httpx2.Response(200, content=b"")
        return httpx2.Response(200, content=b"\n".join(json.dumps(e).encode() for e in events))

    def on_event(kind: str, obj: Any) -> None:
        seen.append((kind, (obj.get("metadata") or {}).get("name", "")))

    Watcher(kube(handler), "/api/v1/secrets", on_event, stop, max_backoff=0.01).run()
    assert seen == [(RELIST, ""), ("ADDED", "a"), (RELIST, ""), ("MODIFIED", "b")]
    watches = [r for r in requests if "watch" in r]
    assert [w.get("resourceVersion") for w in watches] == ["10", "15", "20", "21"]
    assert all(w["allowWatchBookmarks"] == "true" for w in watches)


def test_metadata_watch_lists_in_pages_and_resumes_from_the_last_page() -> None:
    """A metadata-only watcher asks for PartialObjectMetadata on the list and the
    stream, pages the list (one page in memory at a time) and resumes from the
    resourceVersion the last page gives."""
    stop = threading.Event()
    pages: list[str] = []
    accepts: list[str] = []
    watched: list[str] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        params = dict(request.url.params)
        accepts.append(request.headers["accept"])
        if "watch" in params:
            watched.append(params.get("resourceVersion", ""))
            stop.set()
            return httpx2.Response(200, content=b"")
        pages.append(params.get("continue", ""))
        assert params["limit"] == "500"
        if "continue" not in params:
            return httpx2.Response(200, json={"metadata": {"continue": "p2"}, "items": [{}]})
        return httpx2.Response(200, json={"metadata": {"resourceVersion": "42"}, "items": [{}]})

    relists: list[int] = []
    watcher = Watcher(
        kube(handler),
        "/api/v1/secrets",
        lambda kind, obj: relists.append(len(obj.get("items", []))),
        stop,
        metadata_only=True,
    )
    watcher.run()
    assert pages == ["", "p2"] and relists == [1, 1] and watched == ["42"]
    assert watcher.lists == 1
    assert all("as=PartialObjectMetadata" in a for a in accepts)
    assert "as=PartialObjectMetadataList" in accepts[0]
    assert "as=PartialObjectMetadata;" in accepts[-1]


def test_a_watch_from_now_reads_one_object_for_the_version_and_no_page_more() -> None:
    """From now: the list asks for one object (its version is the collection's current
    one) and does not follow the continue token; one RELIST, and the watch starts
    there. A controller that judges everything again on a RELIST does not page through
    thousands of objects it would drop."""
    stop = threading.Event()
    lists: list[dict[str, str]] = []
    watched: list[str] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        params = dict(request.url.params)
        if "watch" in params:
            watched.append(params.get("resourceVersion", ""))
            stop.set()
            return httpx2.Response(200, content=b"")
        lists.append(params)
        return httpx2.Response(
            200, json={"metadata": {"continue": "p2", "resourceVersion": "77"}, "items": [{}]}
        )

    seen: list[str] = []
    watcher = Watcher(
        kube(handler),
        "/api/v1/namespaces",
        lambda kind, obj: seen.append(kind),
        stop,
        metadata_only=True,
        from_now=True,
    )
    watcher.run()
    assert [p["limit"] for p in lists] == ["1"] and "continue" not in lists[0]
    assert seen == [RELIST] and watched == ["77"]


def test_parallel_count_runs_every_item_and_raises_the_first_error() -> None:
    from airtrust.usecases.parallel import parallel_count

    ran: list[int] = []
    lock = threading.Lock()

    def record(item: int) -> None:
        with lock:
            ran.append(item)

    assert parallel_count(list(range(300)), record, workers=4) == 300
    assert sorted(ran) == list(range(300))

    def fail(item: int) -> None:
        if item == 5:
            raise ApiFailure("boom", hint="none")

    with pytest.raises(ApiFailure, match="boom"):
        parallel_count(list(range(50)), fail, workers=4)


# --- registry: retries and auth ------------------------------------------------------------


def test_registry_retries_5xx_and_429_then_succeeds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("airtrust.registry.client.RETRY_DELAYS", (0.0, 0.0, 0.0, 0.0))
    answers = iter([503, 429, 502, 200])
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        return httpx.Response(next(answers))

    assert registry(handler).blob_exists("app", "sha256:" + "0" * 64)
    assert calls == ["HEAD"] * 4


def test_streamed_upload_sends_exact_chunks_resends_on_retry_and_lets_go(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A blob from an iterator of odd-sized pieces goes up in CHUNK-sized PATCHes with
    exact ranges and lengths, never chunked transfer encoding; a 503 resends the same
    bytes."""
    import hashlib

    monkeypatch.setattr("airtrust.registry.client.RETRY_DELAYS", (0.0,))
    monkeypatch.setattr("airtrust.registry.client.CHUNK", 1000)
    data = bytes(range(256)) * 10  # 2560 bytes: chunks of 1000, 1000, 560
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    received = bytearray()
    seen: list[tuple[str, str, str]] = []
    fail_once = iter([True])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(202, headers={"Location": "/v2/app/blobs/uploads/u1"})
        if request.method == "PATCH":
            body = b"".join(request.stream)  # type: ignore[arg-type]
            if len(received) == 1000 and next(fail_once, False):
                return httpx.Response(503)
            seen.append((request.headers["Content-Range"], request.headers["Content-Length"], ""))
            assert "Transfer-Encoding" not in request.headers
            received.extend(body)
            return httpx.Response(202, headers={"Location": "/v2/app/blobs/uploads/u1"})
        assert request.method == "PUT" and request.url.params["digest"] == digest
        assert hashlib.sha256(bytes(received)).hexdigest() == digest[7:]
        return httpx.Response(201)

    pieces = iter([data[:7], data[7:1500], data[1500:]])
    assert registry(handler).upload_blob("app", pieces, digest) == digest
    assert [r for r, _, _ in seen] == ["0-999", "1000-1999", "2000-2559"]
    assert [n for _, n, _ in seen] == ["1000", "1000", "560"]
    assert bytes(received) == data
    # (That no chunk outlives its answer is measured with the real transport, which does
    # not buffer request bodies as MockTransport does: tests/integration/test_image_scale.)


def test_registry_gives_up_after_the_last_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("airtrust.registry.client.RETRY_DELAYS", (0.0, 0.0))

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json={"errors": [{"code": "UNKNOWN", "message": "disk"}]})

    with pytest.raises(RegistryError, match="UNKNOWN: disk"):
        registry(handler).blob_exists("app", "sha256:" + "0" * 64)


def test_bearer_challenge_fetches_a_token_for_the_request_scope_once() -> None:
    tokens = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example.test":
            assert request.headers["authorization"].startswith("Basic ")
            tokens.append(request.url.params.get_list("scope"))
            return httpx.Response(200, json={"token": "t-1"})
        if request.headers.get("authorization") != "Bearer t-1":
            return httpx.Response(
                401,
                headers={
                    "WWW-Authenticate": 'Bearer realm="https://auth.example.test/token",'
                    'service="reg"'
                },
            )
        return httpx.Response(200)

    client = registry(handler, Credentials("u", "secret-password"))
    assert client.blob_exists("team/app", "sha256:" + "1" * 64)
    assert client.blob_exists("team/app", "sha256:" + "2" * 64)  # cached token
    assert tokens == [["repository:team/app:pull"]]


def test_mount_asks_for_push_here_and_pull_on_the_source() -> None:
    request = httpx.Request(
        "POST", "https://r/v2/dst/app/blobs/uploads/?mount=sha256:ab&from=src/app"
    )
    assert scope_for(request) == "repository:dst/app:pull,push repository:src/app:pull"
    assert scope_for(httpx.Request("GET", "https://r/v2/")) == ""


def test_basic_challenge_without_login_is_one_clear_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})

    auth = RegistryAuth("reg.example.test", None)
    with (
        httpx.Client(transport=httpx.MockTransport(handler), auth=auth) as http,
        pytest.raises(RegistryError, match="requires a login"),
    ):
        http.get("https://reg.example.test/v2/app/manifests/1")


def test_basic_login_is_sent_after_the_challenge_and_never_shown() -> None:
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        if request.headers.get("authorization") is None:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        return httpx.Response(403, json={"errors": [{"code": "DENIED", "message": "no"}]})

    client = registry(handler, Credentials("user", "hunter2-secret"))
    with pytest.raises(RegistryError) as caught:
        client.blob_exists("app", "sha256:" + "3" * 64)
    assert seen[0] is None and seen[1] is not None and seen[1].startswith("Basic ")
    assert "hunter2" not in caught.value.one_line()
    assert "hunter2" not in repr(Credentials("user", "hunter2-secret"))
