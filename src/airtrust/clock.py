"""The one wall clock: read at the edge (CLI, the sync loop), passed inward as ``now``.

Nothing in ``pki/`` or ``plan/`` reads the time; a session reads it once, so
every decision of one command (expiry windows, certificate dates, rotation
stamps) uses the same instant and tests can pin it.
"""

from __future__ import annotations

import datetime as dt

__all__ = ["utc_now"]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
