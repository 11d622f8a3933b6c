"""`airtrust render --inject --url` as a new user types it: a bare https://HOST:PORT is
the server's mutate path, and a URL that would never reach it is refused in one line
with nothing written (a wrong path was once rendered as given: every admission then
fell through failurePolicy Ignore, uninjected, and nothing said so)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import Result, assert_one_line_error, run_cli

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("render-url") / "qs"
    made = run_cli("quickstart", "--domain", "inject.example.test", "--out", folder)
    assert made.code == 0, made.err
    return folder / "ca-bundle.pem"


def _render(bundle: Path, out: Path, url: str, *extra: str) -> Result:
    return run_cli("render", "--inject", "--url", url, "--ca", bundle, "--out", out, *extra)


def _url(out: Path) -> str:
    config = yaml.safe_load((out / "00-mutatingwebhookconfiguration.yaml").read_text())
    url: str = config["webhooks"][0]["clientConfig"]["url"]
    return url


@pytest.mark.parametrize("given", ["https://127.0.0.1:8443", "https://127.0.0.1:8443/"])
def test_a_bare_url_is_rendered_as_the_mutate_path(
    bundle: Path, tmp_path: Path, given: str
) -> None:
    out = tmp_path / "w"
    result = _render(bundle, out, given)
    assert result.code == 0, result.err
    assert _url(out) == "https://127.0.0.1:8443/mutate"
    again = tmp_path / "again"
    assert _render(bundle, again, "https://127.0.0.1:8443/mutate").code == 0
    assert _url(again) == _url(out)


@pytest.mark.parametrize(
    ("given", "said"),
    [
        (
            "https://h:1/inject",
            "--url https://h:1/inject: the webhook serves admissions at /mutate only; "
            "give https://h:1 or https://h:1/mutate [bad-webhook-url]",
        ),
        (
            "https://h:1/mutate/x",
            "--url https://h:1/mutate/x: the webhook serves admissions at /mutate only; "
            "give https://h:1 or https://h:1/mutate [bad-webhook-url]",
        ),
        (
            "http://h:1/mutate",
            "--url http://h:1/mutate: the apiserver calls webhooks over https only; "
            "give https://h:1 [bad-webhook-url]",
        ),
        (
            "https://h:1/mutate?debug=1",
            "--url https://h:1/mutate?debug=1: the apiserver refuses a query string or "
            "fragment in a webhook URL; give https://h:1 [bad-webhook-url]",
        ),
        (
            "https://h:1/mutate#x",
            "--url https://h:1/mutate#x: the apiserver refuses a query string or fragment "
            "in a webhook URL; give https://h:1 [bad-webhook-url]",
        ),
    ],
)
def test_a_url_that_never_reaches_the_mutate_path_is_refused_and_nothing_written(
    bundle: Path, tmp_path: Path, given: str, said: str
) -> None:
    out = tmp_path / "new"
    refused = _render(bundle, out, given)
    assert_one_line_error(refused, 2, said)
    assert not out.exists()
    # Nor with --force into a folder that holds a good render: it is left as it was.
    kept = tmp_path / "kept"
    assert _render(bundle, kept, "https://h:1").code == 0
    before = {p.name: p.read_bytes() for p in kept.iterdir()}
    assert_one_line_error(_render(bundle, kept, given, "--force"), 2, said)
    assert {p.name: p.read_bytes() for p in kept.iterdir()} == before
