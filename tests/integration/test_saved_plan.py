"""``plan --out FILE`` then ``apply FILE``: carried out only while the clusters and the
config are what the plan saw, as terraform refuses a stale saved plan. kubectl judges
what was (not) written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import assert_one_line_error, run_cli
from tests.integration.kube import KubeCluster
from tests.integration.test_user_cluster import DOMAIN, _config, _ok

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def qs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("saved-plan") / "qs"
    _ok(run_cli("quickstart", "--domain", DOMAIN, "--out", folder))
    return folder


def _versions(cluster: KubeCluster) -> dict[str, str]:
    items = cluster.get("secrets", "-A")["items"]
    return {
        f"{s['metadata']['namespace']}/{s['metadata']['name']}": s["metadata"]["resourceVersion"]
        for s in items
    }


def test_a_saved_plan_is_applied_exactly_and_refused_once_stale(
    tidy_cluster: KubeCluster, qs: Path, tmp_path: Path
) -> None:
    config = _config(tmp_path, qs, tidy_cluster.kubeconfig)
    saved = tmp_path / "plan.json"
    planned = _ok(run_cli("plan", "-c", config, "--out", saved, "-o", "json"))
    assert json.loads(planned.out)["pending"] > 0
    text = saved.read_text()
    assert "PRIVATE KEY" not in text and (qs / "tls.key").read_text().splitlines()[1] not in text
    assert f"apply {saved}" in planned.err
    applied = _ok(run_cli("apply", saved, "-o", "json"))
    assert json.loads(applied.out)["writes"] == json.loads(planned.out)["pending"]
    assert "runai/runai-ca-cert" in _versions(tidy_cluster)

    # A second plan, then someone changes a secret it covers: apply FILE refuses.
    again = tmp_path / "again.json"
    _ok(run_cli("plan", "-c", config, "--out", again))
    tidy_cluster.kubectl("-n", "runai", "label", "secret", "runai-ca-cert", "team=someone-else")
    before = _versions(tidy_cluster)
    refused = run_cli("apply", again)
    assert_one_line_error(
        refused, 2, "[stale-plan]", "Secret runai/runai-ca-cert", "resourceVersion"
    )
    assert _versions(tidy_cluster) == before  # kubectl: nothing was written
    # Planned again, it applies (nothing to change: the label is not airtrust's).
    fresh = tmp_path / "fresh.json"
    _ok(run_cli("plan", "-c", config, "--out", fresh))
    assert json.loads(_ok(run_cli("apply", fresh, "-o", "json")).out)["writes"] == 0


def test_a_saved_plan_is_refused_when_the_config_changed(
    tidy_cluster: KubeCluster, qs: Path, tmp_path: Path
) -> None:
    config = _config(tmp_path, qs, tidy_cluster.kubeconfig)
    saved = tmp_path / "plan.json"
    _ok(run_cli("plan", "-c", config, "--out", saved))
    # 2.17 predates the labels 2.18 puts on the CA secret: the objects would differ.
    text = config.read_text()
    assert "version: '2.20'" in text
    config.write_text(text.replace("version: '2.20'", "version: '2.17'"))
    refused = run_cli("apply", saved)
    assert_one_line_error(refused, 2, "[stale-plan]", "sent differently")
    names = [s["metadata"]["name"] for s in tidy_cluster.get("secrets", "-A")["items"]]
    assert "runai-ca-cert" not in names, names


def test_a_file_that_is_not_a_plan_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "plan.json"
    bogus.write_text('{"hello": 1}')
    assert_one_line_error(
        run_cli("apply", bogus), 2, "is not a plan airtrust saved", "[bad-plan-file]"
    )
