"""``helm``: the control-plane and cluster releases have the custom-CA values in effect."""

from __future__ import annotations

from airtrust.usecases.doctor.model import Check, Status
from airtrust.usecases.helm import observe_helm
from airtrust.usecases.session import Session

__all__ = ["check_helm"]


def check_helm(session: Session) -> list[Check]:
    out = []
    for step in observe_helm(session):
        target = f"{step.namespace}/{step.release}"
        values = ", ".join(f"{k}={v}" for k, v in step.values.items())
        if step.installed is None:
            out.append(
                Check(
                    "helm",
                    step.context,
                    target,
                    Status.WARN,
                    "release not installed" + (f"; {step.note}" if step.note else ""),
                    step.command(),
                )
            )
        elif not step.enabled:
            out.append(
                Check(
                    "helm",
                    step.context,
                    target,
                    Status.FAIL,
                    f"{step.installed}: custom CA values not in effect ({values})",
                    step.command(),
                )
            )
        else:
            out.append(
                Check("helm", step.context, target, Status.OK, f"{step.installed}: {values}")
            )
    return out
