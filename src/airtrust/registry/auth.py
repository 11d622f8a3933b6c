"""Registry authentication as an ``httpx.Auth`` flow: anonymous, Basic, and Bearer tokens.

Kept apart from the retry policy (in :mod:`airtrust.registry.client`): a
request that the registry answers 401 is answered by the challenge in its
``WWW-Authenticate`` header (distribution's token protocol: realm, service,
scope), retried once with the credential, and its token cached by scope. The
scope is read from the request itself (``/v2/<repository>/...``; pushing
methods ask for push; a mount's ``from`` repository is added as pull), so a
caller never names it. Credentials never appear in errors or logs.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Generator
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import httpx

from airtrust.errors import RegistryError

__all__ = ["Credentials", "RegistryAuth", "parse_challenge", "scope_for"]

_REPOSITORY = re.compile(r"^/v2/(?P<repo>.+?)/(?:manifests|blobs|tags)/")
_READS = ("GET", "HEAD")


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="..."`` -> ("bearer", {...})."""
    scheme, _, rest = header.partition(" ")
    return scheme.lower(), dict(re.findall(r'(\w+)="([^"]*)"', rest))


def scope_for(request: httpx.Request) -> str:
    """The token scope a registry request needs, from its path, method and query."""
    match = _REPOSITORY.match(request.url.path)
    if match is None:
        return ""
    repo = match["repo"]
    scopes = [f"repository:{repo}:{'pull' if request.method in _READS else 'pull,push'}"]
    source = parse_qs(request.url.query.decode()).get("from")
    if source and source[0] != repo:
        scopes.append(f"repository:{source[0]}:pull")
    return " ".join(scopes)


class RegistryAuth(httpx.Auth):
    """One registry host's login state; safe to share between threads."""

    def __init__(self, registry: str, credentials: Credentials | None) -> None:
        self.registry = registry
        self.credentials = credentials
        self._tokens: dict[str, str] = {}
        self._basic = False
        self._lock = threading.Lock()

    def _authorize(self, request: httpx.Request, scope: str) -> None:
        with self._lock:
            token = self._tokens.get(scope)
            basic = self._basic
        if token is not None:
            request.headers["Authorization"] = f"Bearer {token}"
        elif basic and self.credentials is not None:
            request.headers["Authorization"] = self.credentials.basic()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        scope = scope_for(request)
        self._authorize(request, scope)
        response = yield request
        if response.status_code != 401:
            return
        scheme, params = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if scheme == "basic":
            if self.credentials is None:
                raise RegistryError(
                    f"registry {self.registry} requires a login",
                    hint="log in (docker/podman login writes the auth file) or pass --username",
                    reference="registry-auth",
                )
            with self._lock:
                self._basic = True
        elif scheme == "bearer" and "realm" in params:
            token_response = yield self._token_request(params, scope)
            token = self._token_from(token_response)
            with self._lock:
                self._tokens[scope] = token
        else:
            raise RegistryError(
                f"registry {self.registry}: unsupported auth '{scheme or 'none'}'",
                hint="use a registry with Basic or token auth",
            )
        request.headers.pop("Authorization", None)
        self._authorize(request, scope)
        yield request  # once: a second 401 is the caller's to report

    def _token_request(self, params: dict[str, str], scope: str) -> httpx.Request:
        query: list[tuple[str, str | int | float | bool | None]] = []
        if params.get("service"):
            query.append(("service", params["service"]))
        query += [("scope", s) for s in scope.split(" ") if s]
        headers = {}
        if self.credentials is not None:
            headers["Authorization"] = self.credentials.basic()
        return httpx.Request("GET", params["realm"], params=query, headers=headers)

    def _token_from(self, response: httpx.Response) -> str:
        response.read()  # the flow does not read bodies, so blob streams stay streams
        if response.status_code != 200:
            raise RegistryError(
                f"registry {self.registry}: token service refused ({response.status_code})",
                hint="check the credentials and that the account may access the repository",
                reference="registry-auth",
            )
        try:
            body = response.json()
        except ValueError:
            body = {}
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not token:
            raise RegistryError(
                f"registry {self.registry}: token service sent no token",
                hint="check the token service",
            )
        return str(token)
