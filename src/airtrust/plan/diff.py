"""Compare a desired object with the live one (pure).

Secret data is compared by meaning, not bytes alone: CA bundles and
certificate chains by SHA-256 fingerprints (which are shown), keys by a
digest that is never shown. Ownership comes from ``managedFields``: data
that another field manager wrote is "foreign", and overwriting it needs
``--force-conflicts`` and gets a backup first.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

from airtrust.errors import AirtrustError
from airtrust.plan.model import Action, Change, Desired, JsonObj

__all__ = ["diff", "foreign_managers", "pem_fingerprints", "secret_holds", "written_by_only"]


def _decode(value: str | None) -> bytes | None:
    if value is None:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def pem_fingerprints(data: bytes | None) -> list[str] | None:
    """Fingerprints of the certificates in PEM data, or None if it is not a PEM bundle."""
    if not data:
        return None
    from airtrust.pki.bundle import read_certificates

    try:
        return [a.fingerprint for a in read_certificates(data, "live")]
    except AirtrustError:
        return None


def _short(fps: list[str] | None) -> str:
    if fps is None:
        return "not a PEM bundle"
    return "{" + ", ".join(fp[:12] for fp in fps) + "}"


def foreign_managers(live: JsonObj, data_keys: list[str], manager: str) -> tuple[str, ...]:
    """Managers other than ``manager`` that own ``.data.<key>`` or ``.type`` of the live object."""
    owners = set()
    for entry in live.get("metadata", {}).get("managedFields") or []:
        owner = entry.get("manager", "")
        if owner == manager:
            continue
        fields: Any = entry.get("fieldsV1") or {}
        owned_data = fields.get("f:data", {})
        if any(f"f:{k}" in owned_data for k in data_keys) or "f:type" in fields:
            owners.add(owner)
    return tuple(sorted(owners))


def diff(desired: Desired, live: JsonObj | None, *, manager: str) -> Change:
    """What applying ``desired`` as field manager ``manager`` would change on ``live``."""
    if desired.kind == "Namespace":
        return Change(desired, Action.CREATE if live is None else Action.UNCHANGED)
    if desired.manifest is None:  # cluster-config patch
        if not desired.patches:
            return Change(desired, Action.UNCHANGED)
        reasons = tuple(p.reason() for p in desired.patches)
        version = (live or {}).get("metadata", {}).get("resourceVersion")
        return Change(desired, Action.UPDATE, reasons, live_resource_version=version, live=live)
    if live is None:
        return Change(desired, Action.CREATE, ("does not exist",))
    if desired.kind != "Secret":
        return _diff_fields(desired, live)
    return _diff_secret(desired, live, manager)


def _differences(want: Any, have: Any, path: str) -> list[str]:
    """Where ``have`` lacks what ``want`` sets (maps compared key by key: keys others
    own in the live object are theirs, as server-side apply keeps them)."""
    if isinstance(want, dict):
        have_map = have if isinstance(have, dict) else {}
        return [
            r
            for k, v in sorted(want.items())
            for r in _differences(v, have_map.get(k), f"{path}.{k}")
        ]
    return [] if want == have else [f"{path.lstrip('.')} differs"]


def _diff_fields(desired: Desired, live: JsonObj) -> Change:
    """A ConfigMap or a config object: only the fields airtrust sends are judged."""
    manifest = desired.manifest
    assert manifest is not None
    reasons = [
        r
        for field in sorted(set(manifest) - {"apiVersion", "kind", "metadata"})
        for r in _differences(manifest[field], live.get(field), field)
    ]
    version = (live.get("metadata") or {}).get("resourceVersion")
    action = Action.UPDATE if reasons else Action.UNCHANGED
    return Change(desired, action, tuple(reasons), live_resource_version=version, live=live)


def secret_holds(manifest: JsonObj, live: JsonObj) -> bool:
    """Whether applying the Secret ``manifest`` would change nothing on ``live``: the
    same type, every data value byte for byte, and every label and annotation it sets.
    The same rule as :func:`diff`'s, without the reasons (a controller judging
    thousands of Secrets needs the answer, not the certificates parsed to explain it)."""
    if live.get("type", "Opaque") != manifest["type"]:
        return False
    live_data = live.get("data") or {}
    if any(live_data.get(k) != v for k, v in manifest["data"].items()):
        return False
    return _metadata_holds(manifest["metadata"], live.get("metadata") or {})


def _metadata_holds(want: JsonObj, have: JsonObj) -> bool:
    for field in ("labels", "annotations"):
        have_map = have.get(field) or {}
        if any(have_map.get(k) != v for k, v in (want.get(field) or {}).items()):
            return False
    return True


def written_by_only(manifest: JsonObj, live_metadata: JsonObj, manager: str) -> bool:
    """Whether a live Secret, seen by its metadata alone (a watch event without data),
    still holds what ``manager`` applied from ``manifest``: the labels and annotations
    (among them the bundle's digest) are there, and no other field manager owns a data
    key or the type. Ownership is the apiserver's own record, so an edit of the data by
    anyone else shows here without reading the data; False means "read it and judge"."""
    if not _metadata_holds(manifest["metadata"], live_metadata):
        return False
    return not foreign_managers({"metadata": live_metadata}, list(manifest["data"]), manager)


def _diff_secret(desired: Desired, live: JsonObj, manager: str) -> Change:
    manifest = desired.manifest
    assert manifest is not None
    meta = live.get("metadata", {})
    if secret_holds(manifest, live):
        return Change(
            desired, Action.UNCHANGED, live_resource_version=meta.get("resourceVersion"), live=live
        )
    reasons: list[str] = []
    if live.get("type", "Opaque") != manifest["type"]:
        reasons.append(f"type is {live.get('type')}, must be {manifest['type']}")
    live_data: dict[str, str] = live.get("data") or {}
    changed_keys = []
    for key, value in manifest["data"].items():
        if live_data.get(key) == value:
            continue
        changed_keys.append(key)
        want, have = _decode(value), _decode(live_data.get(key))
        if have is None:
            reasons.append(f"data key {key} is missing")
        elif key in (desired.bundle_key, desired.cert_key):
            want_fps, have_fps = pem_fingerprints(want), pem_fingerprints(have)
            if want_fps is not None and have_fps is not None and set(want_fps) == set(have_fps):
                reasons.append(f"{key}: same certificates, different encoding or order")
            else:
                reasons.append(f"{key}: certificates {_short(have_fps)} -> {_short(want_fps)}")
        elif key.endswith(".key"):
            reasons.append(f"{key}: a different private key (contents not shown)")
        else:
            reasons.append(f"{key} differs (sha256 {hashlib.sha256(have).hexdigest()[:12]})")
    for field in ("labels", "annotations"):
        want_map = manifest["metadata"].get(field) or {}
        have_map = meta.get(field) or {}
        for k, v in sorted(want_map.items()):
            if have_map.get(k) != v:
                reasons.append(
                    f"{field[:-1]} {k}={v} missing"
                    if k not in have_map
                    else f"{field[:-1]} {k} is {have_map[k]!r}, must be {v!r}"
                )
    owners = foreign_managers(live, changed_keys, manager) if changed_keys else ()
    return Change(
        desired,
        Action.UPDATE,
        tuple(reasons),
        foreign_managers=owners,
        overwrites_foreign_data=bool(changed_keys) and bool(owners),
        replaces_data=any(live_data.get(k) is not None for k in changed_keys),
        live_resource_version=meta.get("resourceVersion"),
        live=live,
    )
