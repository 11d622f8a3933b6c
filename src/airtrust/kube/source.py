"""A CA bundle read from a Secret or ConfigMap (the source ``sync`` and the node agent follow)."""

from __future__ import annotations

import base64
import datetime as dt

from airtrust.errors import InputError
from airtrust.kube.api import KubeAPI
from airtrust.pki.bundle import Bundle, parse_bundle
from airtrust.plan.source import Source, SourceKind

__all__ = ["read_source"]


def read_source(api: KubeAPI, source: Source, now: dt.datetime) -> Bundle:
    """The validated bundle under ``source``; an InputError says what is missing."""
    live = api.get("v1", source.plural, source.namespace, source.name)
    if live is None:
        raise InputError(
            f"{source.kind} {source.namespace}/{source.name} does not exist "
            f"(context '{api.context}')",
            hint="create the CA source",
        )
    raw = (live.get("data") or {}).get(source.key)
    if raw is None:
        raise InputError(
            f"{source.kind} {source.namespace}/{source.name} has no key {source.key}",
            hint="put the CA bundle under that key",
        )
    data = base64.b64decode(raw) if source.kind is SourceKind.SECRET else raw.encode()
    return parse_bundle([(f"{source.kind} {source.namespace}/{source.name}", data)], now=now)
