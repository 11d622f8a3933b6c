"""The mutating admission webhook as an ASGI application (served by uvicorn).

The apiserver POSTs an ``AdmissionReview`` for each Pod CREATE in scope; the
answer is always ``allowed``: with a JSON Patch when the pod needs the bundle,
without one when it does not, and without one (plus a warning the client
sees) when anything goes wrong here. What the client should know about the
mutation itself (a pod left as written, envFrom names now overridden) goes back
as admission ``warnings``, which kubectl prints as ``Warning: ...``. Refusing
pods is the apiserver's call, through the webhook configuration's
``failurePolicy``, never this server's.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from airtrust.plan.inject import MUTATE_PATH, InjectSettings, mutate_pod

__all__ = ["Stats", "WebhookApp", "review_response"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
#: A review larger than this is refused before parsing (the apiserver sends one Pod).
MAX_BODY = 3 << 20


@dataclass
class Stats:
    reviews: int = 0
    mutated: int = 0
    errors: int = 0
    seconds: list[float] = field(default_factory=list)  # recent review durations
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, mutated: bool, error: bool, seconds: float) -> None:
        with self.lock:
            self.reviews += 1
            self.mutated += mutated
            self.errors += error
            self.seconds.append(seconds)
            del self.seconds[:-10000]

    def render(self) -> str:
        with self.lock:
            rows = [
                ("airtrust_inject_reviews_total", "counter", self.reviews),
                ("airtrust_inject_mutated_total", "counter", self.mutated),
                ("airtrust_inject_errors_total", "counter", self.errors),
            ]
        return "".join(f"# TYPE {n} {t}\n{n} {v}\n" for n, t, v in rows)


def review_response(
    review: dict[str, Any], settings: InjectSettings
) -> tuple[dict[str, Any], bool]:
    """(the AdmissionReview answer, whether the pod was mutated). Raises on a review
    that is not one (the caller answers 400)."""
    request = review["request"]
    uid = request["uid"]
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    mutated = False
    kind = (request.get("kind") or {}).get("kind")
    if kind == "Pod" and request.get("operation", "CREATE") == "CREATE":
        try:
            mutation = mutate_pod(request.get("object") or {}, settings)
        except Exception as exc:  # never block a pod on our own bug
            log.exception("inject: cannot mutate pod %s", request.get("name"))
            response["warnings"] = [f"airtrust inject: pod left unchanged ({type(exc).__name__})"]
            raise _Failed(_answer(review, response)) from exc
        warnings = list(mutation.warnings)
        if mutation.conflict:
            warnings.append(
                f"airtrust inject: pod left unchanged: {mutation.conflict} (the CA bundle "
                "is not injected)"
            )
        if warnings:
            response["warnings"] = warnings
        if mutation.patch:
            response["patchType"] = "JSONPatch"
            response["patch"] = base64.b64encode(json.dumps(mutation.patch).encode()).decode()
            mutated = True
    return _answer(review, response), mutated


def _answer(review: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": review.get("apiVersion", "admission.k8s.io/v1"),
        "kind": "AdmissionReview",
        "response": response,
    }


class _Failed(Exception):
    def __init__(self, answer: dict[str, Any]) -> None:
        super().__init__("mutation failed")
        self.answer = answer


@dataclass
class WebhookApp:
    """POST /mutate (AdmissionReview v1), GET /healthz, /readyz and /metrics."""

    settings: InjectSettings
    stats: Stats = field(default_factory=Stats)
    ready: Callable[[], bool] = lambda: True
    #: while true every answer closes its connection (the server is draining)
    closing: Callable[[], bool] = lambda: False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope.get("path", ""), scope.get("method", "GET")
        if method == "GET" and path == "/healthz":
            await self._reply(send, 200, b"ok\n", b"text/plain")
        elif method == "GET" and path == "/readyz":
            ok = self.ready()
            body = b"ok\n" if ok else b"draining\n" if self.closing() else b"not ready\n"
            await self._reply(send, 200 if ok else 503, body, b"text/plain")
        elif method == "GET" and path == "/metrics":
            await self._reply(send, 200, self.stats.render().encode(), b"text/plain; version=0.0.4")
        elif method == "POST" and path == MUTATE_PATH:
            await self._mutate(receive, send)
        else:
            await self._reply(send, 404, b"not found\n", b"text/plain")

    async def _mutate(self, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > MAX_BODY:
                await self._reply(send, 413, b"review too large\n", b"text/plain")
                return
            if not message.get("more_body"):
                break
        try:
            review = json.loads(body)
            answer, mutated = review_response(review, self.settings)
            error = False
        except _Failed as failed:
            answer, mutated, error = failed.answer, False, True
        except (ValueError, KeyError, TypeError):
            await self._reply(send, 400, b"not an AdmissionReview\n", b"text/plain")
            return
        self.stats.record(mutated, error, time.perf_counter() - start)
        await self._reply(send, 200, json.dumps(answer).encode(), b"application/json")

    async def _reply(self, send: Send, status: int, body: bytes, content_type: bytes) -> None:
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
        if self.closing():  # the client reconnects, through the Service, to another replica
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
