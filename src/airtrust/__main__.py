"""``python -m airtrust``: the same entry point as the ``airtrust`` script."""

from airtrust.cli.main import run

run()
