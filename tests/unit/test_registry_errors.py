"""Registry errors keep what the registry said (status, distribution codes) and whether a
retry may pass, as go-containerregistry's transport error does."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from airtrust.errors import RegistryError
from airtrust.registry.client import Credentials, RegistryClient, _tls_context
from tests.helpers.certs import make


def _client(status: int, body: object) -> RegistryClient:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body)

    return RegistryClient(
        "reg.example.test",
        transport=httpx.MockTransport(handler),
        credentials=Credentials("", ""),
    )


def test_codes_and_status_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    body = {"errors": [{"code": "DENIED", "message": "requested access is denied"}]}
    with pytest.raises(RegistryError) as caught:
        _client(403, body).manifest("team/app", "1.0")
    assert caught.value.status == 403 and caught.value.codes == ("DENIED",)
    assert caught.value.reference == "registry-auth" and not caught.value.temporary


@pytest.mark.parametrize(
    ("status", "codes", "temporary"),
    [
        (503, (), True),
        (429, (), True),
        (400, ("BLOB_UPLOAD_INVALID",), True),
        (400, ("MANIFEST_INVALID",), False),
        (404, ("NAME_UNKNOWN",), False),
        (None, ("UNAVAILABLE",), True),
    ],
)
def test_temporary_follows_status_and_codes(
    status: int | None, codes: tuple[str, ...], temporary: bool
) -> None:
    assert RegistryError("x", status=status, codes=codes).temporary is temporary


def test_a_refused_manifest_names_its_codes_and_the_retry_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("airtrust.registry.client.RETRY_DELAYS", (0.0,))
    body = {"errors": [{"code": "UNAVAILABLE", "message": "try later"}]}
    with pytest.raises(RegistryError) as caught:
        _client(400, body).put_manifest("team/app", "1.0", b"{}", "application/json")
    failure = caught.value
    assert failure.status == 400 and failure.codes == ("UNAVAILABLE",) and failure.temporary
    assert "UNAVAILABLE: try later" in failure.message and "try again later" in failure.hint
    with pytest.raises(RegistryError) as plain:
        _client(400, "not an error document").put_manifest(
            "team/app", "1.0", b"{}", "application/json"
        )
    assert plain.value.codes == () and not plain.value.temporary
    assert "registry's log" in plain.value.hint


def test_a_ca_file_changed_in_place_gives_a_new_tls_context(tmp_path: Path) -> None:
    """Clients share one TLS context per CA file, but never one loaded from what the
    file held before: a rotated --registry-ca is read again."""
    bundle = tmp_path / "registry-ca.pem"
    first, second = make("first registry CA"), make("second registry CA")
    bundle.write_bytes(first.pem)
    before = _tls_context(bundle)
    assert _tls_context(bundle) is before  # shared while the file stays the same
    bundle.write_bytes(second.pem + first.pem)
    after = _tls_context(bundle)
    subjects = [dict(x[0] for x in c["subject"])["commonName"] for c in after.get_ca_certs()]
    assert "second registry CA" in subjects
    assert [dict(x[0] for x in c["subject"])["commonName"] for c in before.get_ca_certs()] == [
        "first registry CA"
    ]
