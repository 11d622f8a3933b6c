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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "cold_layer_cache: the test gets an empty layer cache of its own (it measures "
        "cold reads: layers decoded, bytes or requests a registry saw, memory)",
    )


@pytest.fixture(scope="session", autouse=True)
def _session_layer_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One layer cache for the whole run, shared by every test: entries are named by
    layer digest (and scan version), so a base image read by one test is not decoded
    again by the next. Under pytest-xdist the workers share the run's temporary folder
    (one level above each worker's own); the cache writes each entry to a temporary
    file and renames it, so two workers filling one entry leave a whole file.

    The machine's cache (~/.cache/airtrust/layers) is never read: each run decodes
    every layer once, on a warm machine as on a new one. A test that measures cold
    reads takes ``@pytest.mark.cold_layer_cache``."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = shared / "shared-layer-cache"
    folder.mkdir(exist_ok=True)
    old = os.environ.get("AIRTRUST_LAYER_CACHE")
    os.environ["AIRTRUST_LAYER_CACHE"] = str(folder)
    yield
    if old is None:
        os.environ.pop("AIRTRUST_LAYER_CACHE", None)
    else:
        os.environ["AIRTRUST_LAYER_CACHE"] = old


@pytest.fixture(autouse=True)
def _layer_cache(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """A ``cold_layer_cache`` test gets an empty cache of its own; every other test
    reads the session's (``shared_layer_cache``, from when a cache per test was the
    default, now says what every test has)."""
    if request.node.get_closest_marker("cold_layer_cache") is None:
        yield
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRTRUST_LAYER_CACHE", str(tmp_path_factory.mktemp("cold-layer-cache")))
        yield


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
