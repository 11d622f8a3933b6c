"""What doctor reports: checks with a closed set of statuses, evidence and a fix."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = ["APPLY_FIX", "Check", "DoctorReport", "Status"]

APPLY_FIX = "airtrust apply -c airtrust.yaml"


class Status(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class Check:
    name: str
    context: str
    target: str
    status: Status
    evidence: str
    fix: str = ""

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

    @property
    def failed(self) -> bool:
        return any(c.status is Status.FAIL for c in self.checks)

    @property
    def failures(self) -> int:
        return sum(c.status is Status.FAIL for c in self.checks)
