"""The record of a CA rotation, as data (pure).

A rotation is kept in the ConfigMap ``airtrust-rotation`` beside the control
plane (public data only: CA certificates, phase, image references), so any
machine with the config can continue or inspect it. This module turns that
record into the bundle every session must distribute while it lasts.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography import x509

from airtrust.pki.bundle import Bundle, build_bundle, fingerprint, read_certificates
from airtrust.plan.manifests import ROTATION_RECORD

__all__ = ["Phase", "RotationState", "TLSState"]


class Phase(enum.StrEnum):
    STARTED = "started"
    FINISHED = "finished"


class TLSState(enum.StrEnum):
    #: the TLS certificates still come from the old CA
    KEPT = "kept"
    #: re-issued under the new CA: only certificates from it may be kept
    REISSUED = "reissued"


@dataclass(frozen=True)
class RotationState:
    phase: Phase
    old_pem: bytes
    new_pem: bytes
    started_at: str
    finished_at: str = ""
    tls: TLSState = TLSState.KEPT
    images: Mapping[str, str] = field(default_factory=dict)

    @staticmethod
    def certificates(pem: bytes) -> list[x509.Certificate]:
        return [a.certificate for a in read_certificates(pem, ROTATION_RECORD)]

    @property
    def new_certificates(self) -> list[x509.Certificate]:
        return self.certificates(self.new_pem)

    def bundle(self, now: dt.datetime) -> Bundle:
        """Old + new while started; the new CA alone once finished."""
        pem = self.new_pem if self.phase is Phase.FINISHED else self.old_pem + self.new_pem
        return build_bundle(read_certificates(pem, ROTATION_RECORD), now=now)

    def new_bundle(self, now: dt.datetime) -> Bundle:
        return build_bundle(read_certificates(self.new_pem, ROTATION_RECORD), now=now)

    def evolve(self, **changes: Any) -> RotationState:
        return replace(self, **changes)

    def to_data(self) -> dict[str, str]:
        return {
            "phase": str(self.phase),
            "old-ca.pem": self.old_pem.decode(),
            "new-ca.pem": self.new_pem.decode(),
            "started-at": self.started_at,
            "finished-at": self.finished_at,
            "tls": str(self.tls),
            "images": json.dumps(dict(self.images), sort_keys=True),
        }

    @classmethod
    def from_data(cls, data: Mapping[str, str]) -> RotationState:
        """Raises KeyError or ValueError for a record that is not one."""
        return cls(
            Phase(data["phase"]),
            data["old-ca.pem"].encode(),
            data["new-ca.pem"].encode(),
            data.get("started-at", ""),
            data.get("finished-at", ""),
            TLSState(data.get("tls", TLSState.KEPT)),
            json.loads(data.get("images") or "{}"),
        )

    def summary(self) -> dict[str, Any]:
        return {
            "phase": str(self.phase),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "tls": str(self.tls),
            "images": dict(self.images),
            "old": [fingerprint(c) for c in self.certificates(self.old_pem)],
            "new": [fingerprint(c) for c in self.certificates(self.new_pem)],
        }
