"""The console entry point of ``airtrust`` and ``kubectl-airtrust``.

Every command ends here: library errors become one line and a documented exit
code (0 ok, 1 a check failed, 2 bad input or usage, 3 environment unreachable,
4 changes pending, 70 internal error, 130 interrupted).

``inspect`` of a file or endpoint takes a fast lane that never imports typer
and click: they cost ~55 ms, more than inspect's own work on a 150-certificate
bundle, and inspect is what people run in loops over many files. The lane
recognises only the plain shapes of that command; anything else (help, other
options, a usage mistake) goes to the full CLI, which stays the one place that
defines help, usage and their errors. Both paths call the same function.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from typing import NoReturn

from airtrust.cli.output import Format, error, settings
from airtrust.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, AirtrustError

__all__ = ["GLOBAL_FLAGS", "fast_lane", "hoist_global_flags", "run"]

GLOBAL_FLAGS = ("--quiet", "-q", "--no-color", "--debug")


def hoist_global_flags(argv: list[str]) -> list[str]:
    """Let --quiet/--no-color/--debug/--width N stand anywhere, as kubectl users expect."""
    end = argv.index("--") if "--" in argv else len(argv)
    flags: list[str] = []
    rest: list[str] = []
    words = iter(argv[:end])
    for word in words:
        if word in GLOBAL_FLAGS or word.startswith("--width="):
            flags.append(word)
        elif word == "--width":
            flags += [word, *([value] if (value := next(words, None)) is not None else [])]
        else:
            rest.append(word)
    return [*flags, *rest, *argv[end:]]


def fast_lane(args: list[str]) -> Callable[[], int] | None:
    """The call that runs ``args`` without typer, or None when the lane does not apply."""
    if "_AIRTRUST_COMPLETE" in os.environ:  # shell completion is typer's job
        return None
    flags = [a for a in args if a in GLOBAL_FLAGS]
    rest = args[len(flags) :]
    if len(flags) != len(set(flags)) or rest[:1] != ["inspect"]:
        return None
    target: str | None = None
    output = Format.TABLE
    words = iter(rest[1:])
    for word in words:
        if word in ("-o", "--output"):
            value = next(words, None)
        elif word.startswith("--output="):
            value = word.removeprefix("--output=")
        elif word == "-" or not word.startswith("-"):
            if target is not None:
                return None
            target = word
            continue
        else:
            return None
        if value is None or value.lower() not in {f.value for f in Format}:
            return None
        output = Format(value.lower())
    if target is None:
        return None
    chosen_target, chosen_output = target, output

    def call() -> int:
        settings.quiet = "--quiet" in flags or "-q" in flags
        settings.color = "--no-color" not in flags
        settings.debug = "--debug" in flags
        from airtrust.cli.inspect import inspect

        inspect(chosen_target, None, chosen_output)
        return EXIT_OK

    return call


def run(argv: list[str] | None = None) -> NoReturn:
    """Console entry point: one line per error, documented exit codes."""
    args = hoist_global_flags(list(sys.argv[1:] if argv is None else argv))
    # pyca warns when it parses a non-positive serial (old roots have them);
    # inspect reports that itself, so the Python warning is only noise.
    warnings.filterwarnings("ignore", message="Parsed a serial number")
    call = fast_lane(args)
    if call is None:
        from airtrust.cli.main import dispatch

        def call() -> int:
            return dispatch(args)

    code = _guarded(call)
    sys.stdout.flush()
    raise SystemExit(code)


def _guarded(call: Callable[[], int]) -> int:
    try:
        return call()
    except AirtrustError as exc:
        if settings.debug:
            raise
        error(exc.one_line())
        return exc.exit_code
    except KeyboardInterrupt:
        error("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:
        if settings.debug:
            raise
        error(f"internal error: {type(exc).__name__}: {exc}; rerun with --debug and report it")
        return EXIT_INTERNAL
