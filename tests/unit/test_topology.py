"""plan/topology.py: roles, CA secret targets, TLS secret names and hosts, sync scope."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from airtrust.config import Config, parse_config
from airtrust.errors import ConfigError
from airtrust.plan import topology
from airtrust.plan.topology import (
    CLUSTER,
    CONTROL_PLANE,
    CASecretTarget,
    ClusterTLSSpec,
    Role,
    SyncScope,
)
from airtrust.profiles import load_profile

PROFILE = load_profile()
LABELS_2_18 = {"run.ai/cluster-wide": "true", "run.ai/name": "runai-ca-cert"}


def _config(**extra: Any) -> Config:
    raw = {
        "domain": "runai.example.com",
        "ca": {"bundle": ["b.pem"]},
        "control_plane": {"context": "cp"},
        "clusters": [{"context": "gpu"}],
        **extra,
    }
    return parse_config(yaml.safe_dump(raw), source="t.yaml", base=Path("/base"))


def _never() -> Iterable[str]:
    raise AssertionError("the cluster must not be asked")


@pytest.mark.parametrize(("setting", "expected"), [("true", True), ("false", False)])
def test_openshift_as_configured_never_asks_the_cluster(setting: str, expected: bool) -> None:
    assert topology.is_openshift(setting, PROFILE, _never) is expected


def test_openshift_auto_looks_for_the_profiles_api_group() -> None:
    assert PROFILE.openshift is not None
    assert PROFILE.openshift.detect_group == "config.openshift.io"
    asked: list[int] = []

    def groups(*names: str) -> Any:
        def call() -> Iterable[str]:
            asked.append(1)
            return iter(names)

        return call

    assert topology.is_openshift("auto", PROFILE, groups("apps", "config.openshift.io"))
    assert not topology.is_openshift("auto", PROFILE, groups("apps", "openshift.io"))
    assert len(asked) == 2
    # A profile that names no OpenShift group: never OpenShift, and nothing to ask.
    plain = PROFILE.model_copy(update={"openshift": None})
    assert topology.is_openshift("auto", plain, _never) is False


def test_roles_by_context_one_context_may_hold_both() -> None:
    assert topology.roles_by_context(_config()) == {
        "cp": frozenset({CONTROL_PLANE}),
        "gpu": frozenset({CLUSTER}),
    }
    both = _config(control_plane={"context": "one"}, clusters=[{"context": "one"}])
    assert topology.roles_by_context(both) == {"one": frozenset({CONTROL_PLANE, CLUSTER})}
    clusters_only = _config(control_plane=None, clusters=[{"context": "a"}, {"context": "b"}])
    assert topology.roles_by_context(clusters_only) == {
        "a": frozenset({CLUSTER}),
        "b": frozenset({CLUSTER}),
    }
    assert str(CONTROL_PLANE) == "control-plane" and str(CLUSTER) == "cluster"


def test_cluster_entry_finds_by_context() -> None:
    config = _config(clusters=[{"context": "gpu", "domain": "gpu.example.com"}])
    entry = topology.cluster_entry(config, "gpu")
    assert entry is not None and entry.domain == "gpu.example.com"
    assert topology.cluster_entry(config, "cp") is None


@pytest.mark.parametrize(
    ("version", "openshift", "expected"),
    [
        ("2.20", False, [CASecretTarget("runai", LABELS_2_18, "CA bundle (cluster)")]),
        ("2.18", False, [CASecretTarget("runai", LABELS_2_18, "CA bundle (cluster)")]),
        ("2.17", False, [CASecretTarget("runai", {}, "CA bundle (cluster)")]),
        (
            "2.20",
            True,
            [
                CASecretTarget("runai", LABELS_2_18, "CA bundle (cluster)"),
                CASecretTarget("openshift-monitoring", {}, "CA bundle (cluster)"),
            ],
        ),
    ],
)
def test_cluster_ca_targets_follow_version_and_openshift(
    version: str, openshift: bool, expected: list[CASecretTarget]
) -> None:
    assert topology.ca_secret_targets(PROFILE, version, [CLUSTER], openshift=openshift) == expected


def test_ca_targets_for_both_roles_then_workloads() -> None:
    found = topology.ca_secret_targets(
        PROFILE, "2.20", {CONTROL_PLANE, CLUSTER}, openshift=False, workloads=["team-b", "team-a"]
    )
    assert found == [
        CASecretTarget("runai", LABELS_2_18, "CA bundle (cluster)"),
        CASecretTarget("runai-backend", {}, "CA bundle (control-plane)"),
        CASecretTarget("team-b", {}, "CA bundle (workloads)"),
        CASecretTarget("team-a", {}, "CA bundle (workloads)"),
    ]
    # The control plane has no OpenShift-only target.
    assert topology.ca_secret_targets(PROFILE, "2.20", [CONTROL_PLANE], openshift=True) == [
        CASecretTarget("runai-backend", {}, "CA bundle (control-plane)")
    ]
    assert topology.ca_secret_targets(PROFILE, "2.20", [], openshift=True) == []


@given(st.permutations([CONTROL_PLANE, CLUSTER]), st.booleans())
def test_ca_targets_do_not_depend_on_role_order(roles: list[Role], openshift: bool) -> None:
    assert topology.ca_secret_targets(
        PROFILE, "2.20", roles, openshift=openshift
    ) == topology.ca_secret_targets(PROFILE, "2.20", sorted(roles), openshift=openshift)


def test_tls_secret_name_config_wins_over_profile() -> None:
    assert topology.tls_secret_name(_config(), PROFILE) == "runai-backend-tls"
    tls = {"cert": "c.pem", "key": "k.pem"}
    assert topology.tls_secret_name(_config(tls=tls), PROFILE) == "runai-backend-tls"
    renamed = _config(tls={**tls, "secret_name": "my-tls"})
    assert topology.tls_secret_name(renamed, PROFILE) == "my-tls"


def _entry(**fields: Any) -> Any:
    return topology.cluster_entry(_config(clusters=[{"context": "gpu", **fields}]), "gpu")


def test_no_cluster_tls_without_an_entry_or_a_domain() -> None:
    assert topology.cluster_tls_specs(PROFILE, "2.20", None) == []
    assert topology.cluster_tls_specs(PROFILE, "2.20", _entry()) == []
    # An inference domain alone asks for nothing: the profile's specs need the domain.
    assert topology.cluster_tls_specs(PROFILE, "2.20", _entry(inference_domain="i.io")) == []


def test_cluster_tls_by_version_with_and_without_inference() -> None:
    domain_only = topology.cluster_tls_specs(PROFILE, "2.20", _entry(domain="gpu.example.com"))
    assert domain_only == [
        ClusterTLSSpec("runai", "runai-cluster-domain-tls-secret", ("gpu.example.com",)),
        ClusterTLSSpec("runai", "runai-cluster-domain-star-tls-secret", ("*.gpu.example.com",)),
    ]
    full = _entry(domain="gpu.example.com", inference_domain="inference.example.com")
    assert topology.cluster_tls_specs(PROFILE, "2.20", full)[-1] == ClusterTLSSpec(
        "knative-serving", "runai-cluster-inference-tls-secret", ("*.inference.example.com",)
    )
    # Before 2.20 only the plain cluster-domain secret exists.
    assert topology.cluster_tls_specs(PROFILE, "2.19", full) == [
        ClusterTLSSpec("runai", "runai-cluster-domain-tls-secret", ("gpu.example.com",))
    ]
    assert domain_only[1].ref == "runai/runai-cluster-domain-star-tls-secret"


def test_the_inject_webhook_secret_comes_first_and_needs_no_domain() -> None:
    webhook = ClusterTLSSpec(
        "airtrust",
        "airtrust-inject-tls",
        ("airtrust-inject.airtrust.svc", "airtrust-inject.airtrust.svc.cluster.local"),
    )
    assert topology.cluster_tls_specs(PROFILE, "2.20", _entry(inject_namespace="airtrust")) == [
        webhook
    ]
    with_domain = _entry(inject_namespace="airtrust", domain="gpu.example.com")
    specs = topology.cluster_tls_specs(PROFILE, "2.20", with_domain)
    assert specs[0] == webhook and len(specs) == 3


@pytest.mark.parametrize(
    ("host", "probe"),
    [
        ("*.gpu.example.com", "x.gpu.example.com"),
        ("gpu.example.com", "gpu.example.com"),
        ("*.*.example.com", "x.*.example.com"),  # only the first
    ],
)
def test_hostname_probe(host: str, probe: str) -> None:
    assert topology.hostname_probe(host) == probe


def test_target_namespaces_per_context() -> None:
    config = _config(
        clusters=[
            {
                "context": "gpu",
                "domain": "gpu.example.com",
                "inference_domain": "inf.example.com",
                "inject_namespace": "airtrust",
            }
        ]
    )
    assert topology.target_namespaces(config, PROFILE, "2.20", "cp", openshift=False) == [
        "runai-backend"
    ]
    assert topology.target_namespaces(
        config, PROFILE, "2.20", "gpu", openshift=True, workloads=["team-a", "runai"]
    ) == ["airtrust", "knative-serving", "openshift-monitoring", "runai", "team-a"]
    assert topology.target_namespaces(config, PROFILE, "2.19", "gpu", openshift=False) == [
        "airtrust",
        "runai",
    ]
    assert topology.target_namespaces(config, PROFILE, "2.20", "nobody", openshift=True) == []
    # Workloads are listed even for a context without roles (the caller chose them).
    assert topology.target_namespaces(
        config, PROFILE, "2.20", "nobody", openshift=True, workloads=["w"]
    ) == ["w"]


def test_rotation_record_lives_beside_the_control_plane() -> None:
    assert topology.rotation_location(_config(), PROFILE) == ("cp", "runai-backend")
    no_cp = _config(control_plane=None, clusters=[{"context": "a"}, {"context": "b"}])
    assert topology.rotation_location(no_cp, PROFILE) == ("a", "runai")


def test_sync_scope_from_the_config() -> None:
    config = _config(
        version="2.18",
        clusters=[{"context": "gpu", "openshift": True}],
        workloads={"namespaces": ["team-a"], "selector": "airtrust.io/ca=true"},
    )
    scope = SyncScope.from_config(config, PROFILE, "gpu")
    assert scope == SyncScope(
        roles=(CLUSTER,),
        version="2.18",
        openshift="true",
        namespaces=("team-a",),
        selector="airtrust.io/ca=true",
    )
    assert scope.args() == [
        "--role",
        "cluster",
        "--platform-version",
        "2.18",
        "--openshift",
        "true",
        "--namespace",
        "team-a",
        "--selector",
        "airtrust.io/ca=true",
    ]
    # The control plane keeps no workload namespaces; no context means the first one.
    cp = SyncScope.from_config(config, PROFILE, None)
    assert cp == SyncScope(roles=(CONTROL_PLANE,), version="2.18", openshift="auto")
    assert cp.args() == [
        "--role",
        "control-plane",
        "--platform-version",
        "2.18",
        "--openshift",
        "auto",
    ]


def test_sync_scope_defaults_to_the_profiles_version() -> None:
    scope = SyncScope.from_config(_config(), PROFILE, "gpu")
    assert scope.version == PROFILE.default_version == "2.20"
    both = _config(control_plane={"context": "one"}, clusters=[{"context": "one"}])
    assert SyncScope.from_config(both, PROFILE, "one").roles == (CLUSTER, CONTROL_PLANE)


def test_sync_scope_refuses_a_context_without_a_role() -> None:
    with pytest.raises(ConfigError) as info:
        SyncScope.from_config(_config(), PROFILE, "elsewhere")
    assert info.value.message == (
        "context 'elsewhere' plays no role in the config (its contexts: cp, gpu)"
    )
    assert info.value.hint == "pass --context with one of the config's contexts"
    assert info.value.reference == "bad-config"


def test_with_options_adds_namespaces_once_and_the_command_line_selector_wins() -> None:
    scope = SyncScope(namespaces=("a", "b"), selector="from=config")
    more = scope.with_options(namespaces=("b", "c", "a"), selector="from=cli")
    assert more.namespaces == ("a", "b", "c") and more.selector == "from=cli"
    assert scope.with_options().selector == "from=config"
    assert scope.namespaces == ("a", "b")  # frozen: the original is untouched


def test_scope_targets_keep_the_first_labels_of_a_namespace() -> None:
    scope = SyncScope(roles=(CLUSTER,), version="2.20", namespaces=("team-a", "runai"))
    assert scope.targets(PROFILE, openshift=False) == {
        "runai": LABELS_2_18,
        "team-a": {},
    }
    old = SyncScope(roles=(CLUSTER,), version="2.17")
    assert old.targets(PROFILE, openshift=True) == {"runai": {}, "openshift-monitoring": {}}
    # An empty version means the profile's default (labels of 2.20).
    assert SyncScope().targets(PROFILE, openshift=False) == {"runai": LABELS_2_18}
    assert SyncScope().args() == ["--role", "cluster", "--openshift", "auto"]


def test_the_inject_namespace_holds_the_ca_secret_a_rotation_rewrites() -> None:
    """The webhook mounts its local CA from the CA secret of its own namespace, so apply
    (and with it a rotation) writes one there, after the configured workloads."""
    config = _config(
        workloads={"namespaces": ["team-a"]},
        clusters=[{"context": "gpu", "inject_namespace": "airtrust-system"}],
    )
    assert topology.workload_namespaces(config, "gpu") == ["team-a", "airtrust-system"]
    assert topology.workload_namespaces(config, "cp") == []  # not a cluster context
    plain = _config(workloads={"namespaces": ["team-a"]})
    assert topology.workload_namespaces(plain, "gpu") == ["team-a"]
