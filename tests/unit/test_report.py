"""doctor --html's timeline is drawn as of the report's time, passed in (never the clock)."""

from __future__ import annotations

import datetime as dt

from airtrust.report import timeline

NOW = dt.datetime(2030, 6, 1, tzinfo=dt.UTC)


def _cert(subject: str, start: str, end: str) -> dict[str, str]:
    return {"subject": subject, "source": "bundle", "not_before": start, "not_after": end}


def test_states_follow_the_time_given() -> None:
    data = {
        "warn_days": 30,
        "certificates": [
            _cert("old", "2020-01-01T00:00:00+00:00", "2030-05-01T00:00:00+00:00"),
            _cert("soon", "2029-01-01T00:00:00+00:00", "2030-06-15T00:00:00+00:00"),
            _cert("fine", "2029-01-01T00:00:00+00:00", "2035-01-01T00:00:00+00:00"),
        ],
    }
    states = {m["subject"]: m["state"] for m in timeline(data, NOW)["marks"]}
    assert states == {"old": "expired", "soon": "expiring", "fine": "valid"}
    # The same data a decade earlier: nothing is expired yet.
    earlier = timeline(data, NOW - dt.timedelta(days=3650))
    assert {m["state"] for m in earlier["marks"]} == {"valid"}


def test_now_is_drawn_where_it_falls() -> None:
    data = {"certificates": [_cert("a", "2030-01-01T00:00:00+00:00", "2031-01-01T00:00:00+00:00")]}
    early = timeline(data, dt.datetime(2030, 2, 1, tzinfo=dt.UTC))["now_x"]
    late = timeline(data, dt.datetime(2030, 11, 1, tzinfo=dt.UTC))["now_x"]
    assert early < late
