"""Read deployed Helm releases straight from their release Secrets.

Helm 3 stores each revision as Secret ``sh.helm.release.v1.<name>.v<N>``
(labels ``owner=helm``, ``name``, ``status``, ``version``) whose ``release``
key holds base64(gzip(JSON)) on top of the Secret's own base64. Reading it
needs no helm binary and no chart: the effective values are the chart's
defaults overlaid with the user-supplied ones, as ``helm get values -a``
shows them.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
from typing import Any

from airtrust.errors import ReleaseUnreadable
from airtrust.kube.api import KubeAPI
from airtrust.plan.helm import Release, merge_values

__all__ = ["decode_release", "deployed_release"]

_GZIP_MAGIC = b"\x1f\x8b"


def decode_release(data: str, *, source: str) -> dict[str, Any]:
    """The release JSON from the Secret's ``release`` value (still Kubernetes-base64)."""
    try:
        raw = base64.b64decode(base64.b64decode(data, validate=True), validate=True)
        if raw[:2] == _GZIP_MAGIC:
            raw = gzip.decompress(raw)
        release: dict[str, Any] = json.loads(raw)
    except (binascii.Error, ValueError, OSError, EOFError) as exc:
        raise ReleaseUnreadable(
            f"{source} is not a Helm 3 release record ({exc})",
            hint="check the Secret was written by Helm 3",
        ) from None
    return release


def deployed_release(api: KubeAPI, name: str, namespace: str) -> Release | None:
    """The newest deployed revision of release ``name``, or None if not installed."""
    secrets = list(
        api.list_objects("v1", "secrets", namespace, label_selector=f"owner=helm,name={name}")
    )
    candidates = []
    for secret in secrets:
        labels = secret["metadata"].get("labels", {})
        try:
            revision = int(labels.get("version", "0"))
        except ValueError:
            continue
        candidates.append((labels.get("status") == "deployed", revision, secret))
    if not candidates:
        return None
    _, revision, secret = max(candidates, key=lambda c: (c[0], c[1]))
    source = f"context '{api.context}': Secret {namespace}/{secret['metadata']['name']}"
    record = decode_release(secret.get("data", {}).get("release", ""), source=source)
    chart = record.get("chart") or {}
    metadata = chart.get("metadata") or {}
    return Release(
        name=name,
        namespace=namespace,
        revision=revision,
        status=str((record.get("info") or {}).get("status", "unknown")),
        chart=str(metadata.get("name", "")),
        chart_version=str(metadata.get("version", "")),
        values=merge_values(chart.get("values") or {}, record.get("config") or {}),
        user_values=dict(record.get("config") or {}),
    )
