"""``ca-bundle``: the bundle itself parses, holds only CAs and none is about to expire."""

from __future__ import annotations

from airtrust.pki.bundle import is_ca
from airtrust.usecases.doctor.model import Check, Status
from airtrust.usecases.session import Session

__all__ = ["check_bundle"]


def check_bundle(session: Session, warn_days: int) -> list[Check]:
    bundle = session.bundle
    files = ", ".join(str(p) for p in session.config.ca.bundle)

    def check(status: Status, evidence: str, fix: str = "") -> list[Check]:
        return [Check("ca-bundle", "-", files, status, evidence, fix)]

    problems = [c.subject.rfc4514_string() for c in bundle.certificates if not is_ca(c)]
    if problems:
        return check(
            Status.FAIL,
            f"not CA certificates: {'; '.join(problems)}",
            "airtrust bundle build CA.pem --out ca-bundle.pem (only CA certificates)",
        )
    first = min(bundle.certificates, key=lambda c: c.not_valid_after_utc)
    days = (first.not_valid_after_utc - session.now).days
    evidence = (
        f"{len(bundle.anchors)} CA certificate(s), no keys; first expiry "
        f"{first.not_valid_after_utc:%Y-%m-%d} ({days} days, "
        f"{first.subject.rfc4514_string()})"
    )
    if days < 0:
        return check(Status.FAIL, evidence, "airtrust rotate start --new-ca NEW_CA_DIR")
    if days < warn_days:
        return check(
            Status.WARN,
            evidence,
            "plan a rotation: airtrust ca create --out NEW_CA_DIR; "
            "airtrust rotate start --new-ca NEW_CA_DIR",
        )
    return check(Status.OK, evidence)
