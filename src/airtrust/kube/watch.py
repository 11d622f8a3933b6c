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

from airtrust.kube.api import METADATA_LIST, METADATA_OBJECT, KubeAPI

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
        metadata_only: bool = False,
        from_now: bool = False,
    ) -> None:
        self.api = api
        self.path = path
        self.on_event = on_event
        self.stop = stop
        self.params = dict(params or {})
        self.timeout_seconds = timeout_seconds
        self.max_backoff = max_backoff
        #: objects arrive as PartialObjectMetadata (no data, no spec): for a watcher
        #: that only needs to know that something changed
        self.metadata_only = metadata_only
        #: only changes from now on: a (re)list fetches the collection's current
        #: resourceVersion, not its objects (for a watcher whose RELIST means "judge
        #: everything again", which its owner does by reading what it needs)
        self.from_now = from_now
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
        """List in pages of 500 (one page in memory at a time, as the reflector pages)
        and hand each page on; the watch resumes from the list's resourceVersion. From
        now: one object, for the resourceVersion alone (a list with a limit is read
        from etcd, so its version is current), handed on as one RELIST."""
        params = {**self.params, "limit": "1" if self.from_now else "500"}
        accept = METADATA_LIST if self.metadata_only else "application/json"
        while True:
            response = self.api.request(
                "GET", self.path, params=params, what=f"list {self.path}", accept=accept
            )
            if response.status_code == 410:
                raise _Gone  # the continue token expired mid-list: start over
            if response.status_code != 200:
                raise OSError(f"list {self.path}: HTTP {response.status_code}")
            body = response.json()
            meta = body.get("metadata", {})
            self.on_event(RELIST, body)
            token = None if self.from_now else meta.get("continue")
            if not token:
                self.resource_version = meta.get("resourceVersion")
                break
            params["continue"] = token
        self.lists += 1

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
        accept = METADATA_OBJECT if self.metadata_only else "application/json"
        with (
            self.api.client() as http,
            http.stream(
                "GET", self.path, params=params, headers={"Accept": accept}, timeout=None
            ) as response,
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
