"""The closed sets that use cases take from the command line (``sync --role``,
``sync --openshift``).

Kept apart from the use cases that read them, and free of pydantic, so the CLI
can declare them as typed options (typer lists and completes the values, click
refuses the rest) and hand them down as they are, while ``airtrust --help``
still starts without importing the use cases.
"""

from __future__ import annotations

import enum

__all__ = ["OpenShiftChoice", "RoleChoice"]


class OpenShiftChoice(enum.StrEnum):
    """Is the cluster OpenShift? ``auto`` asks the cluster (:func:`~airtrust.plan.topology.
    is_openshift`), as airtrust.yaml's ``openshift:`` does."""

    AUTO = "auto"
    TRUE = "true"
    FALSE = "false"


class RoleChoice(enum.StrEnum):
    """:class:`airtrust.plan.topology.Role`'s values; that module imports pydantic."""

    CONTROL_PLANE = "control-plane"
    CLUSTER = "cluster"
