"""Which argument shapes the entry point's fast lane takes, and which it hands on."""

from __future__ import annotations

import pytest

from airtrust.cli.entry import fast_lane, hoist_global_flags


@pytest.mark.parametrize(
    "argv",
    [
        ["inspect", "b.pem"],
        ["inspect", "-"],
        ["inspect", "b.pem", "-o", "json"],
        ["inspect", "-o", "YAML", "b.pem"],
        ["inspect", "b.pem", "--output=table"],
        ["inspect", "https://127.0.0.1:8443"],
        ["inspect", "b.pem", "-q", "--no-color"],
    ],
)
def test_plain_inspect_takes_the_lane(argv: list[str]) -> None:
    assert fast_lane(hoist_global_flags(argv)) is not None


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--help"],
        ["inspect"],
        ["inspect", "--help"],
        ["inspect", "a.pem", "b.pem"],
        ["inspect", "b.pem", "-o"],
        ["inspect", "b.pem", "-o", "xml"],
        ["inspect", "b.pem", "--connect-to", "127.0.0.1"],
        ["inspect", "--", "b.pem"],
        ["inspect", "b.pem", "--version"],
        ["verify", "--ca", "a.pem", "b.pem"],
        ["--version", "inspect", "b.pem"],
        ["-q", "-q", "inspect", "b.pem"],
    ],
)
def test_everything_else_goes_to_the_full_cli(argv: list[str]) -> None:
    assert fast_lane(hoist_global_flags(argv)) is None


def test_global_flags_move_to_the_front_but_not_past_double_dash() -> None:
    assert hoist_global_flags(["inspect", "x", "-q", "--", "--debug"]) == [
        "-q",
        "inspect",
        "x",
        "--",
        "--debug",
    ]


def test_shell_completion_goes_to_typer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_AIRTRUST_COMPLETE", "complete_bash")
    assert fast_lane(["inspect", "b.pem"]) is None
