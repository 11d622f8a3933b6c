"""Watch a collection and resume where the stream ended, as client-go's reflector does.

A watch stream ends often (the apiserver's timeout, a restart, a dropped
connection). Resuming from the last resourceVersion seen loses no event and
replays none; only when the apiserver says that version is gone (410 Gone,
compacted) does the watcher list again. Bookmarks keep the version fresh on
quiet collections, so a resume rarely needs a relist.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from airtrust.kube.api import KubeAPI

__all__ = ["RELIST", "Watcher"]

log = logging.getLogger(__name__)

#: The event type handed to ``on_event`` after a (re)list: any object may have changed.
RELIST = "RELIST"


class _Gone(Exception):
    """The resourceVersion we hold was compacted away: list again."""


class Watcher:
    """Calls ``on_event(type, object)`` for every change under ``path`` until ``stop``."""

    def __init__(
        self,
        api: KubeAPI,
        path: str,
        on_event: Callable[[str, Mapping[str, Any]], None],
        stop: threading.Event,
        *,
        params: Mapping[str, str] | None = None,
        timeout_seconds: int = 60,
        max_backoff: float = 5.0,
    ) -> None:
        self.api = api
        self.path = path
        self.on_event = on_event
        self.stop = stop
        self.params = dict(params or {})
        self.timeout_seconds = timeout_seconds
        self.max_backoff = max_backoff
        #: the last resourceVersion seen; None means list first
        self.resource_version: str | None = None
        #: how many times the stream was (re)opened and how many lists were needed
        self.streams = 0
        self.lists = 0

    def run(self) -> None:
        delay = 0.25
        while not self.stop.is_set():
            try:
                if self.resource_version is None:
                    self._list()
                self._stream()
                delay = 0.25
            except _Gone:
                log.debug("watch %s: resourceVersion gone, listing again", self.path)
                self.resource_version = None
            except Exception as exc:  # apiserver restarts, dropped streams: resume
                log.debug("watch %s interrupted: %s", self.path, exc)
                self.stop.wait(delay)
                delay = min(delay * 2, self.max_backoff)

    def _list(self) -> None:
        response = self.api.request("GET", self.path, params=self.params, what=f"list {self.path}")
        if response.status_code != 200:
            raise OSError(f"list {self.path}: HTTP {response.status_code}")
        body = response.json()
        self.resource_version = body.get("metadata", {}).get("resourceVersion")
        self.lists += 1
        self.on_event(RELIST, body)

    def _stream(self) -> None:
        params = {
            **self.params,
            "watch": "1",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(self.timeout_seconds),
        }
        if self.resource_version:
            params["resourceVersion"] = self.resource_version
        self.streams += 1
        with (
            self.api.client() as http,
            http.stream("GET", self.path, params=params, timeout=None) as response,
        ):
            if response.status_code == 410:
                raise _Gone
            if response.status_code != 200:
                raise OSError(f"watch {self.path}: HTTP {response.status_code}")
            for line in response.iter_lines():
                if self.stop.is_set():
                    return
                if line:
                    self._event(json.loads(line))

    def _event(self, event: Mapping[str, Any]) -> None:
        kind = str(event.get("type", ""))
        obj = event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Gone
            raise OSError(f"watch {self.path}: {obj.get('message', 'error event')}")
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:
            self.resource_version = version
        if kind != "BOOKMARK":
            self.on_event(kind, obj)
