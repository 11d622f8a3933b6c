"""What doctor reports: checks with a closed set of statuses, evidence and a fix."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography import x509

from airtrust.pki.bundle import fingerprint, is_ca

__all__ = ["APPLY_FIX", "CertificateSeen", "Check", "DoctorReport", "Status", "seen"]

APPLY_FIX = "airtrust apply -c airtrust.yaml"


class Status(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class CertificateSeen:
    """A CA or server certificate doctor met, and where: for the expiry timeline."""

    subject: str
    source: str  # "bundle", "secret runai/runai-backend-tls", "served by https://...", ...
    context: str
    fingerprint: str
    not_before: str  # ISO 8601, UTC
    not_after: str
    is_ca: bool

    def to_dict(self) -> dict[str, object]:
        return {
            "subject": self.subject,
            "source": self.source,
            "context": self.context,
            "sha256": self.fingerprint,
            "not_before": self.not_before,
            "not_after": self.not_after,
            "ca": self.is_ca,
        }


def seen(
    certs: Iterable[x509.Certificate], source: str, context: str = "-"
) -> tuple[CertificateSeen, ...]:
    out = []
    for cert in certs:
        try:
            subject = cert.subject.rfc4514_string() or "(empty subject)"
        except ValueError:
            subject = "(unreadable subject)"
        out.append(
            CertificateSeen(
                subject,
                source,
                context,
                fingerprint(cert),
                cert.not_valid_before_utc.isoformat(),
                cert.not_valid_after_utc.isoformat(),
                is_ca(cert),
            )
        )
    return tuple(out)


@dataclass(frozen=True)
class Check:
    name: str
    context: str
    target: str
    status: Status
    evidence: str
    fix: str = ""
    #: the certificates this check looked at (not part of the check's own record)
    certificates: tuple[CertificateSeen, ...] = field(default=(), compare=False, repr=False)

    def to_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "context": self.context,
            "target": self.target,
            "status": str(self.status),
            "evidence": self.evidence,
            "fix": self.fix,
        }


@dataclass(frozen=True)
class DoctorReport:
    checks: tuple[Check, ...] = field(default_factory=tuple)
    #: every certificate met, once per (fingerprint, where), for the expiry timeline
    certificates: tuple[CertificateSeen, ...] = ()
    #: the window the warnings use, and the rotation in progress, if any
    warn_days: int = 30
    rotation: dict[str, str] = field(default_factory=dict)
    generated_at: str = ""

    def to_dict(self) -> dict[str, object]:
        """What ``doctor -o json`` prints, and what the HTML report embeds."""
        return {
            "ok": not self.failed,
            "generated_at": self.generated_at,
            "warn_days": self.warn_days,
            "rotation": self.rotation,
            "checks": [c.to_dict() for c in self.checks],
            "certificates": [c.to_dict() for c in self.certificates],
        }

    @property
    def failed(self) -> bool:
        return any(c.status is Status.FAIL for c in self.checks)

    @property
    def failures(self) -> int:
        return sum(c.status is Status.FAIL for c in self.checks)
