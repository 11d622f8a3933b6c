"""typer parameter types shared by several commands."""

from typing import Annotated

import typer

from airtrust.cli.output import Format

__all__ = ["OutputOpt"]

OutputOpt = Annotated[
    Format, typer.Option("--output", "-o", help="Result format.", case_sensitive=False)
]
