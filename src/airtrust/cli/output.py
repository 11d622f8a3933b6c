"""How results reach the terminal: tables for people, JSON/YAML for programs.

Results go to stdout, warnings and errors to stderr, so ``-o json`` output can
be piped while messages stay visible. rich is imported only when a table is
drawn, and typer not at all, so the fast lane (``entry``) can use this module.

In a pipe (``| less``, CI logs, a ticket) nothing is wrapped: tables become
plain records (a ``# title`` line, a tab-separated header, one tab-separated
line per row) and every line is written whole, so a command or an image
reference can be copied from it. ``--width N`` forces rich tables at that
width. Commands and fixes are printed on their own lines in every format.
"""

from __future__ import annotations

import enum
import json
import os
import shlex
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Format",
    "PlainConsole",
    "PlainTable",
    "Settings",
    "emit",
    "error",
    "escape",
    "info",
    "invoked_as",
    "log_to_stderr",
    "plain",
    "print_lines",
    "rows_table",
    "settings",
    "strip_markup",
    "warn",
]


class Format(enum.StrEnum):
    TABLE = "table"
    JSON = "json"
    YAML = "yaml"


@dataclass
class Settings:
    quiet: bool = False
    color: bool = True
    debug: bool = False
    #: --width N: draw tables at this width even in a pipe
    width: int | None = None


settings = Settings()


def plain() -> bool:
    """Plain records instead of drawn tables: stdout is not a terminal and no --width."""
    return settings.width is None and not sys.stdout.isatty()


class PlainConsole:
    """What a table view prints to in a pipe: every line as is (tabs kept, no wrapping,
    no colour). A string printed as markup (rich's default) loses its tags, so a pipe
    never sees ``[bold]``; one printed with ``markup=False`` is written verbatim."""

    def __init__(self, stderr: bool = False) -> None:
        self.stream = sys.stderr if stderr else sys.stdout

    def print(self, *objects: Any, markup: bool = True, **_: Any) -> None:
        text = " ".join(str(o) for o in objects)
        if markup and isinstance(objects[0] if objects else None, str) and "[" in text:
            text = strip_markup(text)
        self.stream.write(text + "\n")


def strip_markup(text: str) -> str:
    """rich markup rendered to plain text (``[bold]x[/bold]`` -> ``x``); rich only
    when there may be a tag, so the fast lane stays fast."""
    from rich.markup import render

    return render(text).plain


def escape(text: str) -> str:
    """``text`` (a CN, a name, a path: data, not markup) safe inside a markup string: a
    subject like ``CN=Team [prod] CA`` prints intact and a ``[/x]`` in it cannot close a
    tag (rich would raise MarkupError); rich is imported only when a table is drawn."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def _console(stderr: bool = False) -> Any:
    if plain() and not stderr:
        return PlainConsole()
    from rich.console import Console

    return Console(
        stderr=stderr,
        no_color=not settings.color,
        highlight=False,
        width=settings.width,
        # In a pipe nothing is wrapped: a long line stays one line.
        soft_wrap=plain(),
    )


class PlainTable:
    """A table as plain records: ``# title``, a tab-separated header, one line per row."""

    def __init__(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]):
        self.lines = [f"# {title}" if title else "#", "\t".join(columns)]
        self.lines += ["\t".join(_cell(c) for c in row) for row in rows]

    def __str__(self) -> str:
        return "\n".join(self.lines)


def _cell(value: Any) -> str:
    return " ".join(str(value).split()) or "-"


def print_lines(console: Any, lines: Sequence[str]) -> None:
    """Each line whole (commands, fixes, references): never wrapped, never marked up."""
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def emit(data: Any, fmt: Format, *, table: Any = None) -> None:
    """Print ``data`` as JSON/YAML, or call ``table(console)`` for the table view."""
    if fmt is Format.JSON:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    elif fmt is Format.YAML:
        import yaml

        # Through JSON first: closed enums (str subclasses) become plain strings, as in -o json.
        plain = json.loads(json.dumps(data, default=str))
        sys.stdout.write(yaml.safe_dump(plain, sort_keys=True, default_flow_style=False))
    elif table is not None:
        # --quiet hides chatter (info, warnings, progress), never the result.
        table(_console())


def rows_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Any:
    """A rich table on a terminal (or with --width), plain records in a pipe."""
    if plain():
        return PlainTable(title, columns, rows)
    from rich.table import Table

    # Titles and cells are data (subjects, names, paths): rich would read them as markup.
    t = Table(title=escape(title), title_justify="left")
    for column in columns:
        t.add_column(column, overflow="fold")
    for row in rows:
        t.add_row(*(escape(str(c)) for c in row))
    return t


def warn(message: str) -> None:
    if not settings.quiet:
        sys.stderr.write(f"airtrust: warning: {message}\n")


def info(message: str) -> None:
    if not settings.quiet:
        sys.stderr.write(f"{message}\n")


def error(line: str) -> None:
    sys.stderr.write(f"airtrust: error: {line}\n")


def invoked_as(argv0: str | None = None) -> str:
    """How to run airtrust again, for commands it prints: ``airtrust`` when that name on
    PATH is this program, else the path the user ran (``.venv/bin/airtrust``), made
    absolute so it works from any folder; ``python -m airtrust`` as such."""
    argv0 = argv0 if argv0 is not None else sys.argv[0]
    name = os.path.basename(argv0)
    if name in ("__main__.py", "-m", "-c", ""):
        return f"{shlex.quote(sys.executable)} -m airtrust"
    on_path = shutil.which(name)
    if on_path and os.path.realpath(on_path) == os.path.realpath(shutil.which(argv0) or argv0):
        return name
    return shlex.quote(os.path.abspath(argv0))


def log_to_stderr() -> None:
    """Long-running servers (sync, inject serve) log their INFO lines to stderr, with
    the HTTP clients' per-request chatter held back."""
    import logging

    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
