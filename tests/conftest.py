"""Shared fixtures: the CLI as a real subprocess, and throw-away PKI material."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
SHARED = ROOT.parent / "shared"


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("airtrust: error:")]


def run_cli(
    *args: str | Path,
    env: dict[str, str] | None = None,
    stdin: bytes | None = None,
    cwd: Path | None = None,
) -> Result:
    """Run ``airtrust`` exactly as a user would: a new process, real argv and exit code."""
    proc = subprocess.run(
        [sys.executable, "-m", "airtrust", *map(str, args)],
        input=stdin,
        capture_output=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        cwd=cwd,
        timeout=120,
        check=False,
    )
    return Result(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


@pytest.fixture(scope="session", autouse=True)
def _session_layer_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Nothing in a test run reads the machine's layer cache: a warm machine must decode
    every layer again, as a new one does."""
    old = os.environ.get("AIRTRUST_LAYER_CACHE")
    os.environ["AIRTRUST_LAYER_CACHE"] = str(tmp_path_factory.mktemp("layer-cache"))
    yield
    if old is None:
        os.environ.pop("AIRTRUST_LAYER_CACHE", None)
    else:
        os.environ["AIRTRUST_LAYER_CACHE"] = old


@pytest.fixture(autouse=True)
def _layer_cache(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test gets its own layer cache, unless it is about the cache shared between runs."""
    if request.node.get_closest_marker("shared_layer_cache") is None:
        monkeypatch.setenv("AIRTRUST_LAYER_CACHE", str(tmp_path / "layer-cache"))


@pytest.fixture
def cli():
    return run_cli


def assert_one_line_error(result: Result, code: int, *needles: str) -> None:
    """The bar for bad input: exit code, exactly one error line, no traceback."""
    assert result.code == code, (result.code, result.out, result.err)
    assert "Traceback" not in result.err and "Traceback" not in result.out, result.err
    assert len(result.error_lines) == 1, result.err
    assert len(result.err.strip().splitlines()) == 1, result.err
    for needle in needles:
        assert needle in result.error_lines[0], (needle, result.err)
