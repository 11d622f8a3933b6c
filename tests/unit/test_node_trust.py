"""The runtimes' trust files as plan.node_trust writes them (pure)."""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from airtrust.errors import NodeTrustError
from airtrust.plan.node_trust import (
    Registry,
    Runtime,
    containerd_certs_dir,
    containerd_hosts_toml,
    detect_runtime,
    k3s_registries_yaml,
    node_files,
    parse_registry,
)

REG = Registry("reg.local", 5000)
CA = "/etc/containerd/certs.d/reg.local:5000/airtrust-ca.crt"


def pem(n: int) -> bytes:
    return f"-----BEGIN CERTIFICATE-----\nQ{n}==\n-----END CERTIFICATE-----\n".encode()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("reg.local:5000", Registry("reg.local", 5000)),
        ("Reg.Local", Registry("reg.local")),
        ("10.0.0.7:443", Registry("10.0.0.7", 443)),
        ("[fd00::1]:5000", Registry("fd00::1", 5000)),
    ],
)
def test_registry_names(text: str, expected: Registry) -> None:
    assert parse_registry(text) == expected


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("https://reg.local", "has a scheme"),
        ("reg.local/team", "has a path"),
        ("reg.local:0", "is not 1-65535"),
        ("reg.local:abc", "is not 1-65535"),
        ("reg_local", "is not HOST[:PORT]"),
        ("", "is not HOST[:PORT]"),
    ],
)
def test_bad_registry_names_are_refused(text: str, said: str) -> None:
    with pytest.raises(NodeTrustError, match=re.escape(said)):
        parse_registry(text)


@given(st.from_regex(r"[a-z][a-z0-9]{0,10}(\.[a-z][a-z0-9]{0,10}){0,3}", fullmatch=True),
       st.integers(1, 65535))  # fmt: skip
def test_a_registry_name_round_trips(host: str, port: int) -> None:
    registry = parse_registry(f"{host}:{port}")
    assert str(registry) == f"{host}:{port}"
    assert registry.openshift_key == f"{host}..{port}"


def test_a_new_hosts_toml() -> None:
    doc = tomllib.loads(containerd_hosts_toml(None, REG, CA))
    assert doc == {
        "server": "https://reg.local:5000",
        "host": {"https://reg.local:5000": {"capabilities": ["pull", "resolve"], "ca": CA}},
    }


def test_only_the_matching_hosts_ca_changes() -> None:
    existing = (
        '# ours\nserver = "https://reg.local:5000"\n\n'
        '[host."https://mirror:5000"]\n  capabilities = ["pull"]\n  ca = "/m.crt"\n\n'
        '[host."https://reg.local:5000"]\n  capabilities = ["pull", "resolve"]\n'
        '  ca = [\n    "/a.crt",\n  ]\n  skip_verify = false\n'
    )
    text = containerd_hosts_toml(existing, REG, CA)
    assert text.startswith("# ours\n")
    doc = tomllib.loads(text)
    assert doc["host"]["https://mirror:5000"] == {"capabilities": ["pull"], "ca": "/m.crt"}
    assert doc["host"]["https://reg.local:5000"] == {
        "capabilities": ["pull", "resolve"], "ca": ["/a.crt", CA], "skip_verify": False,
    }  # fmt: skip
    assert containerd_hosts_toml(text, REG, CA) == text  # idempotent


def test_the_server_of_a_file_without_its_host_table_gets_a_top_level_ca() -> None:
    existing = (
        'server = "https://reg.local:5000"\n\n[host."https://mirror:5000"]\n'
        '  capabilities = ["pull"]\n'
    )
    doc = tomllib.loads(containerd_hosts_toml(existing, REG, CA))
    assert doc["ca"] == CA
    assert list(doc["host"]) == ["https://mirror:5000"]  # the mirror stays first and alone


def test_another_servers_file_gets_a_host_table_after_its_own() -> None:
    existing = (
        'server = "https://docker.io"\n\n[host."https://mirror:5000"]\n  capabilities = ["pull"]\n'
    )
    doc = tomllib.loads(containerd_hosts_toml(existing, REG, CA))
    assert doc["server"] == "https://docker.io"
    assert list(doc["host"]) == ["https://mirror:5000", "https://reg.local:5000"]


def test_containerd_config_path_by_version() -> None:
    v2 = 'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/x:/y"\n'
    v3 = 'version = 3\n[plugins."io.containerd.cri.v1.images".registry]\n  config_path = "/z"\n'
    assert containerd_certs_dir(v2, "c.toml") == "/x"
    assert containerd_certs_dir(v3, "c.toml") == "/z"
    with pytest.raises(NodeTrustError) as missing:
        containerd_certs_dir("version = 3\n", "/etc/containerd/config.toml")
    assert 'plugins."io.containerd.cri.v1.images".registry' in missing.value.hint
    with pytest.raises(NodeTrustError) as old:
        containerd_certs_dir("version = 2\n", "/etc/containerd/config.toml")
    assert 'plugins."io.containerd.grpc.v1.cri".registry' in old.value.hint


def test_k3s_before_containerd_and_nothing_is_an_error() -> None:
    assert detect_runtime(lambda p: p in {"etc/containerd", "etc/rancher/k3s"}) is Runtime.K3S
    assert detect_runtime(lambda p: p == "etc/crio") is Runtime.CRIO
    with pytest.raises(NodeTrustError, match="no container runtime"):
        detect_runtime(lambda p: False)


def test_registries_yaml_is_merged() -> None:
    existing = yaml.safe_dump(
        {"mirrors": {"docker.io": {"endpoint": ["https://m"]}},
         "configs": {"reg.local:5000": {"auth": {"username": "u"}}}}
    )  # fmt: skip
    doc = yaml.safe_load(k3s_registries_yaml(existing, {REG: "/ca.crt"}))
    assert doc["mirrors"] == {"docker.io": {"endpoint": ["https://m"]}}
    assert doc["configs"]["reg.local:5000"] == {
        "auth": {"username": "u"},
        "tls": {"ca_file": "/ca.crt"},
    }


def test_a_shared_ca_crt_keeps_others_and_drops_airtrusts_old_ca() -> None:
    path = "/etc/docker/certs.d/reg.local:5000/ca.crt"
    theirs, old, new = pem(1), pem(2), pem(3)
    files = {path: theirs + old}
    (change,), _ = node_files(Runtime.DOCKER, [REG], new, files.get, written={path: old})
    assert change.content == theirs + new


def test_k3s_needs_a_restart_containerd_does_not() -> None:
    _, restart = node_files(Runtime.K3S, [REG], pem(1), lambda p: None)
    assert restart is not None and "restart k3s" in restart
    _, none = node_files(Runtime.CONTAINERD, [REG], pem(1), lambda p: None)
    assert none is None
