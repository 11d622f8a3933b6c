"""How results reach the terminal: tables for people, JSON/YAML for programs.

Results go to stdout, warnings and errors to stderr, so ``-o json`` output can
be piped while messages stay visible. rich is imported only when a table is
drawn, and typer not at all, so the fast lane (``entry``) can use this module.
"""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Format", "Settings", "emit", "error", "info", "rows_table", "settings", "warn"]


class Format(enum.StrEnum):
    TABLE = "table"
    JSON = "json"
    YAML = "yaml"


@dataclass
class Settings:
    quiet: bool = False
    color: bool = True
    debug: bool = False


settings = Settings()


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, no_color=not settings.color, highlight=False, soft_wrap=False)


def emit(data: Any, fmt: Format, *, table: Any = None) -> None:
    """Print ``data`` as JSON/YAML, or call ``table(console)`` for the table view."""
    if fmt is Format.JSON:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    elif fmt is Format.YAML:
        import yaml

        # Through JSON first: closed enums (str subclasses) become plain strings, as in -o json.
        plain = json.loads(json.dumps(data, default=str))
        sys.stdout.write(yaml.safe_dump(plain, sort_keys=True, default_flow_style=False))
    elif not settings.quiet and table is not None:
        table(_console())


def rows_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Any:
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for column in columns:
        t.add_column(column, overflow="fold")
    for row in rows:
        t.add_row(*(str(c) for c in row))
    return t


def warn(message: str) -> None:
    if not settings.quiet:
        sys.stderr.write(f"airtrust: warning: {message}\n")


def info(message: str) -> None:
    if not settings.quiet:
        sys.stderr.write(f"{message}\n")


def error(line: str) -> None:
    sys.stderr.write(f"airtrust: error: {line}\n")
