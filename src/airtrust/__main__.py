"""``python -m airtrust``: the same entry point as the ``airtrust`` script."""

from airtrust.cli.entry import run

run()
