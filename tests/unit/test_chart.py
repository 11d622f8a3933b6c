"""The Helm chart's facts that must follow airtrust's own, and ``chart values``.

The chart is hand-written templates (charts/airtrust); what it hard-codes or defaults
is held here to the code it mirrors: its version to airtrust's, its Run:ai version and
project selector to the profile, its runtime folders to plan.node_trust, its resources
to the builders'. tests/integration/test_chart.py compares whole objects with helm.
"""

from __future__ import annotations

import os
import re
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from airtrust.config import CASource, Cluster, Config, ControlPlane, Workloads
from airtrust.errors import InputError, NodeTrustError
from airtrust.plan.manifests import controller_manifests
from airtrust.plan.node_trust import DEFAULT_CERTS_DIRS
from airtrust.plan.source import Source
from airtrust.plan.topology import SyncScope
from airtrust.profiles import load_profile
from airtrust.usecases.chart import ChartSettings, chart_values
from tests.conftest import ROOT, run_cli

CHART = ROOT / "charts" / "airtrust"
PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def _yaml(path: Path) -> dict[str, object]:
    loaded = yaml.safe_load(path.read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_the_chart_version_and_app_version_are_airtrusts() -> None:
    chart = _yaml(CHART / "Chart.yaml")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert chart["apiVersion"] == "v2" and chart["name"] == "airtrust"
    assert chart["version"] == chart["appVersion"] == project == version("airtrust")


def test_the_charts_defaults_follow_the_profile_and_the_builders() -> None:
    """The Run:ai version, project selector and CA secret name come from runai.toml; the
    runtime folders from plan.node_trust; the controller's resources from its builder."""
    values = _yaml(CHART / "values.yaml")
    profile = load_profile()
    assert values["platform"] == {"version": profile.default_version, "openshift": "auto"}
    assert values["ca"]["source"]["name"] == profile.ca_secret.name  # type: ignore[index]
    assert values["ca"]["source"]["key"] == profile.ca_secret.key  # type: ignore[index]
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    selector = re.search(r'define "airtrust.projectSelector" -}}\n(.+)\n', helpers)
    assert selector and selector.group(1) == profile.project_namespace_selector
    ca_secret = re.search(r'define "airtrust.caSecret" -}}\n(.+)\n', helpers)
    assert ca_secret and ca_secret.group(1) == profile.ca_secret.name
    agent = (CHART / "templates" / "node-agent.yaml").read_text()
    table = agent.split("$dirs := dict", 1)[1].split("}}")[0]
    dirs = dict(re.findall(r'"(\w+)" "(/[^"]+)"', table))
    assert dirs == {str(k): v for k, v in DEFAULT_CERTS_DIRS.items()}
    built = controller_manifests(
        image="i", namespace="n", source=Source.parse("secret/n/s", "k"), scope=SyncScope()
    )
    (deployment,) = (d for d in built if d["kind"] == "Deployment")
    resources = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert values["controller"]["resources"] == resources  # type: ignore[index]
    assert values["webhook"]["resources"] == resources  # type: ignore[index]
    # The controller reads no Secret but the profile's CA secret (and its source).
    (role,) = (d for d in built if d["kind"] == "ClusterRole")
    reads = [r for r in role["rules"] if "secrets" in r["resources"] and "get" in r["verbs"]]
    assert reads == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [profile.ca_secret.name],
            "verbs": ["get", "list", "watch"],
        }
    ]


def test_the_schema_is_json_and_closes_every_section() -> None:
    """A typo (`controler:`) must fail at install, not be ignored: every object the
    values hold is closed in the schema."""
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    values = _yaml(CHART / "values.yaml")
    assert set(schema["properties"]) >= set(values)
    for section in values:
        spec = schema["properties"][section]
        assert spec["additionalProperties"] is False, section


def _config(tmp_path: Path, **extra: object) -> Config:
    return Config(
        domain="runai.example.test",
        ca=CASource(bundle=(tmp_path / "ca.pem",)),
        control_plane=ControlPlane(context="cp"),
        clusters=(Cluster(context="gpu", openshift="false"),),
        workloads=Workloads(namespaces=("team-a",), selector="team=ml"),
        **extra,  # type: ignore[arg-type]
    )


def test_chart_values_carry_the_config_scope(tmp_path: Path) -> None:
    """The same scope render --controller -c reads: roles and OpenShift of the context,
    the version, the workload namespaces and selector; the CA as given."""
    config = _config(tmp_path, version="2.18")
    values = chart_values(
        config,
        load_profile(),
        PEM,
        ChartSettings(context="gpu", image="reg.local:5000/airtrust/controller:0.1.0"),
    )
    assert values["ca"] == {"bundle": PEM.decode()}
    assert values["platform"] == {"version": "2.18", "openshift": "false"}
    assert values["scope"] == {
        "namespaces": ["team-a"], "selector": "team=ml", "runaiProjects": False,
    }  # fmt: skip
    assert values["controller"] == {"enabled": True, "roles": ["cluster"]}
    assert values["image"] == {"repository": "reg.local:5000/airtrust/controller", "tag": "0.1.0"}
    assert values["webhook"] == {"enabled": False, "failurePolicy": "Ignore"}
    assert values["nodeAgent"]["enabled"] is False  # type: ignore[index]
    # The control-plane context plays no cluster role: no workload namespaces there.
    cp = chart_values(config, load_profile(), PEM, ChartSettings(context="cp"))
    assert cp["controller"] == {"enabled": True, "roles": ["control-plane"]}
    assert cp["scope"] == {"namespaces": [], "selector": "", "runaiProjects": False}
    assert "image" not in cp
    projects = chart_values(
        config, load_profile(), PEM, ChartSettings(context="cp", runai_projects=True)
    )
    assert projects["scope"] == {"namespaces": [], "selector": "", "runaiProjects": True}


@pytest.mark.parametrize(
    ("ref", "image"),
    [
        ("airtrust", {"repository": "airtrust", "tag": ""}),
        ("reg.local:5000/airtrust", {"repository": "reg.local:5000/airtrust", "tag": ""}),
        ("reg.local/a/b:v1", {"repository": "reg.local/a/b", "tag": "v1"}),
    ],
)
def test_an_image_is_split_at_its_tag_not_at_a_registry_port(
    tmp_path: Path, ref: str, image: dict[str, str]
) -> None:
    values = chart_values(_config(tmp_path), load_profile(), PEM, ChartSettings(image=ref))
    assert values["image"] == image


@pytest.mark.parametrize(
    ("settings", "error", "words"),
    [
        (ChartSettings(image="reg/a@sha256:" + "0" * 64), InputError, "not a digest"),
        (ChartSettings(image="reg/a:"), InputError, "is not REPOSITORY[:TAG]"),
        (ChartSettings(runtime="podman"), InputError, "--runtime podman"),
        (ChartSettings(registries=("https://reg.local",)), NodeTrustError, "has a scheme"),
        (ChartSettings(context="nope"), Exception, "plays no role"),
        (ChartSettings(context="gpu", runai_projects=True), InputError, "exclude each other"),
    ],
)
def test_bad_settings_are_refused_in_one_line(
    tmp_path: Path, settings: ChartSettings, error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=re.escape(words)):
        chart_values(_config(tmp_path), load_profile(), PEM, settings)


def _write_config(tmp_path: Path, bundle: Path) -> Path:
    config = tmp_path / "airtrust.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "domain": "runai.example.test",
                "ca": {"bundle": [str(bundle)]},
                "clusters": [{"context": "gpu"}],
            }
        )
    )
    return config


@pytest.fixture
def ca_bundle(tmp_path: Path) -> Path:
    result = run_cli("ca", "create", "--out", tmp_path / "ca")
    assert result.code == 0, result.err
    return tmp_path / "ca" / "ca.crt"


def test_chart_values_writes_the_file_0644_and_refuses_to_overwrite(
    tmp_path: Path, ca_bundle: Path
) -> None:
    config = _write_config(tmp_path, ca_bundle)
    out = tmp_path / "values.yaml"
    made = run_cli(
        "chart", "values", "--offline", "-c", config, "--out", out, "--registry", "reg.local:5000"
    )
    assert made.code == 0, made.err
    assert os.stat(out).st_mode & 0o777 == 0o644
    values = yaml.safe_load(out.read_text())
    assert values["ca"]["bundle"].startswith("-----BEGIN CERTIFICATE-----")
    assert "PRIVATE KEY" not in out.read_text()
    assert values["nodeAgent"] == {
        "enabled": True, "registries": ["reg.local:5000"], "runtime": "containerd",
    }  # fmt: skip
    again = run_cli("chart", "values", "--offline", "-c", config, "--out", out)
    assert again.code == 2 and again.error_lines and "Traceback" not in again.err
    assert "[output-exists]" in again.err
    assert run_cli("chart", "values", "--offline", "-c", config, "--out", out, "--force").code == 0


def test_chart_values_refuses_a_key_in_the_bundle_and_writes_nothing(
    tmp_path: Path, ca_bundle: Path
) -> None:
    """A bundle holding a private key never reaches a values file (it would become the
    webhook's caBundle and a Secret): one line, exit 2, no file."""
    mixed = tmp_path / "mixed.pem"
    mixed.write_bytes(ca_bundle.read_bytes() + (tmp_path / "ca" / "ca.key").read_bytes())
    config = _write_config(tmp_path, mixed)
    out = tmp_path / "values.yaml"
    refused = run_cli("chart", "values", "--offline", "-c", config, "--out", out)
    assert refused.code == 2, refused.err
    assert len(refused.err.strip().splitlines()) == 1 and "Traceback" not in refused.err
    assert "private-key-in-bundle" in refused.err
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["-c", "missing.yaml"], "[bad-config]"),
        (["--failure-policy", "Sometimes"], "'Sometimes' is not one of 'Ignore', 'Fail'"),
        (["--registry", "https://reg.local"], "has a scheme"),
    ],
)
def test_chart_values_bad_input_is_one_line_exit_2_nothing_written(
    tmp_path: Path, ca_bundle: Path, args: list[str], words: str
) -> None:
    config = _write_config(tmp_path, ca_bundle)
    out = tmp_path / "values.yaml"
    refused = run_cli(
        "chart", "values", "--offline", "-c", config, "--out", out, *args, cwd=tmp_path
    )
    assert refused.code == 2, refused.err
    assert len(refused.err.strip().splitlines()) == 1 and words in refused.err
    assert "Traceback" not in refused.err and not out.exists()
