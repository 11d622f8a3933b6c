"""curl's ``--connect-to``: reach a host name at another address (before DNS is in place)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from airtrust.errors import InputError

__all__ = ["ConnectTo"]


@dataclass(frozen=True)
class ConnectTo:
    """HOST:PORT:ADDR:PORT2 — reach HOST:PORT at ADDR:PORT2."""

    host: str
    port: int
    address: str
    address_port: int

    @staticmethod
    def route(rules: Sequence[ConnectTo], host: str, port: int) -> tuple[str, int]:
        """Where to connect for host:port: the first matching rule, else the name itself."""
        for rule in rules:
            if rule.host == host and rule.port == port:
                return rule.address, rule.address_port
        return host, port

    @classmethod
    def parse(cls, text: str) -> ConnectTo:
        parts = text.split(":")
        if len(parts) != 4 or not parts[1].isdigit() or not parts[3].isdigit():
            raise InputError(
                f"--connect-to {text} is not HOST:PORT:ADDR:PORT",
                hint="e.g. --connect-to runai.example.com:443:127.0.0.1:8443",
            )
        return cls(parts[0], int(parts[1]), parts[2], int(parts[3]))
