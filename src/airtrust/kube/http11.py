"""Plain requests to the apiserver over the standard library's HTTP/1.1 client.

httpx validates and wraps every request in several layers of Python (the URL checked
character by character, an auth flow, hooks, httpcore, h11): measured on the test
apiserver, about 0.6 ms of CPU per request of the 1.1 ms a Secret write costs, and a
controller writes one Secret per namespace, thousands after a CA change. These
requests are simple (one JSON body, one JSON answer), so a ``http.client`` connection
per thread carries them, with the TLS context and the credentials lightkube set up
for httpx. The watch streams stay on httpx, and so does any request whose credentials
must be fetched again (an exec plugin's token after a 401): the caller is told to
retry there.
"""

from __future__ import annotations

import contextlib
import http.client
import ssl
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlencode, urlsplit

import httpx2 as httpx

__all__ = ["Http11Pool"]

#: how long an Authorization header taken from the auth flow is used (a token file
#: is re-read as often by lightkube's own auth)
AUTH_TTL = 60.0
#: a connection the server closed while idle fails at once on reuse: one retry
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class Http11Pool:
    """Keep-alive connections to one apiserver, one per thread at a time."""

    def __init__(
        self,
        base_url: str,
        context: ssl.SSLContext | None,
        auth: httpx.Auth | None,
        timeout: float,
    ) -> None:
        parts = urlsplit(base_url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")  # a server behind a path (Rancher's proxy)
        self._context = context
        self._auth = auth
        self._timeout = timeout
        self._base_url = base_url
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._header: tuple[str | None, float] | None = None

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str],
        params: dict[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response | None:
        """The apiserver's answer, or None when the credentials were refused (the
        caller asks again through httpx, whose auth flow refreshes them). Transport
        failures raise OSError or http.client.HTTPException."""
        target = self._prefix + path + (f"?{urlencode(params)}" if params else "")
        headers = {**headers, "Host": self._host_header()}
        authorization = self._authorization()
        if authorization:
            headers["Authorization"] = authorization
        if content is not None:
            headers["Content-Length"] = str(len(content))
        try:
            answer, body = self._exchange(method, target, headers, content, fresh=False)
        except _STALE:  # the server closed the connection while it was idle: once more
            answer, body = self._exchange(method, target, headers, content, fresh=True)
        if answer.status == 401 and self._auth is not None:
            self._header = None
            return None
        return httpx.Response(answer.status, headers=answer.getheaders(), content=body)

    def _exchange(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        content: bytes | None,
        *,
        fresh: bool,
    ) -> tuple[http.client.HTTPResponse, bytes]:
        """One request and its whole answer; a failure closes the connection."""
        with self._connection() as connection:
            if fresh:
                connection.close()  # reopened by the request
            try:
                connection.request(method, target, body=content, headers=headers)
                answer = connection.getresponse()
                body = answer.read()
            except BaseException:
                connection.close()
                raise
            if answer.will_close:
                connection.close()
            return answer, body

    def _host_header(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        default = 443 if self._https else 80
        return host if self._port == default else f"{host}:{self._port}"

    def _authorization(self) -> str | None:
        """The header lightkube's auth would set (a bearer token, from a file or an
        exec plugin, or basic auth), taken from its flow and kept for a minute."""
        if self._auth is None:
            return None
        kept = self._header
        if kept is not None and time.monotonic() - kept[1] < AUTH_TTL:
            return kept[0]
        flow = self._auth.sync_auth_flow(httpx.Request("GET", self._base_url))
        try:
            value = next(flow).headers.get("Authorization")
        finally:
            flow.close()
        self._header = (value, time.monotonic())
        return value

    @contextlib.contextmanager
    def _connection(self) -> Iterator[http.client.HTTPConnection]:
        with self._lock:
            connection = self._idle.pop() if self._idle else None
        if connection is None:
            connection = (
                http.client.HTTPSConnection(
                    self._host, self._port, timeout=self._timeout, context=self._context
                )
                if self._https
                else http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
            )
        try:
            yield connection
        finally:
            with self._lock:
                self._idle.append(connection)
