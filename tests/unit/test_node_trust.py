"""The runtimes' trust files as plan.node_trust writes them (pure)."""

from __future__ import annotations

import datetime as dt
import json
import re
import tomllib
from typing import Any

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


# --- doctor node-registry: a node's annotation against the bundle -------------------------


def _settings(**node_trust: object) -> Any:
    from airtrust.config import parse_config

    text = (
        "domain: d.test\nca: {bundle: [ca.pem]}\nclusters: [{context: gpu}]\n"
        "registries: [reg.local:5000, mirror.local]\n"
    )
    if node_trust.pop("configured", True):
        text += "node_trust: " + json.dumps({"runtime": "containerd", **node_trust}) + "\n"
    from pathlib import Path

    return parse_config(text, source="airtrust.yaml", base=Path("/cfg"))


def _node(name: str, digest: str | None) -> dict[str, object]:
    annotations = {} if digest is None else {"airtrust.io/registry-ca-sha256": digest}
    return {"metadata": {"name": name, "annotations": annotations}}


def test_the_agent_and_doctor_share_one_digest() -> None:
    import hashlib

    from airtrust.plan.node_trust import registry_ca_digest
    from airtrust.usecases import node_trust

    assert registry_ca_digest(pem(1)) == hashlib.sha256(pem(1)).hexdigest()
    assert node_trust.CA_ANNOTATION == "airtrust.io/registry-ca-sha256"


def test_doctor_judges_each_node_and_registry_by_its_annotation() -> None:
    from airtrust.usecases.doctor.model import Status
    from airtrust.usecases.doctor.node_registry import judge_node

    settings = _settings(source="secret/airtrust-nodes/registry-ca").node_trust_for("gpu")
    good = judge_node("gpu", _node("n1", "a" * 64), settings, "a" * 64, "--ca ca.pem")
    assert [c.status for c in good] == [Status.OK, Status.OK]
    assert [c.target for c in good] == [
        "Node n1 registry mirror.local",
        "Node n1 registry reg.local:5000",
    ]
    old = judge_node("gpu", _node("n2", "b" * 64), settings, "a" * 64, "--ca ca.pem")
    assert {c.status for c in old} == {Status.FAIL}
    assert "node n2 holds bundle sha256 bbbbbbbbbbbb" in old[0].evidence
    assert "--field-selector spec.nodeName=n2" in old[0].fix
    assert "airtrust node install --root / --runtime containerd" in old[0].fix
    none = judge_node("gpu", _node("n3", None), settings, "a" * 64, "--ca ca.pem")
    assert "node n3 has no airtrust.io/registry-ca-sha256" in none[0].evidence
    assert "pulls from mirror.local" in none[0].evidence


def test_doctor_reads_only_clusters_with_node_trust() -> None:
    import datetime as dt
    from types import SimpleNamespace

    from airtrust.pki.bundle import parse_bundle
    from airtrust.plan.node_trust import registry_ca_digest
    from airtrust.usecases.doctor.node_registry import check_node_registry

    class Api:
        calls = 0

        def list_objects(self, api_version: str, plural: str) -> list[dict[str, object]]:
            Api.calls += 1
            assert (api_version, plural) == ("v1", "nodes")
            return [_node("b", digest), _node("a", "0" * 64)]

    from airtrust.pki import keys
    from airtrust.pki.authority import CASpec, create_root
    from airtrust.pki.bundle import certificate_to_pem

    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    root = create_root(
        CASpec("Node Registry Test CA"), keys.generate_key(keys.KeyType.EC_P256), now=now
    )
    bundle = parse_bundle([("ca", certificate_to_pem(root))], now=now)
    digest = registry_ca_digest(bundle.to_pem())
    session: Any = SimpleNamespace(config=_settings(), bundle=bundle, apis={"gpu": Api()})
    checks = check_node_registry(session)
    assert [(c.target, str(c.status)) for c in checks] == [
        ("Node a registry mirror.local", "fail"),
        ("Node a registry reg.local:5000", "fail"),
        ("Node b registry mirror.local", "ok"),
        ("Node b registry reg.local:5000", "ok"),
    ]
    session = SimpleNamespace(config=_settings(enabled=False), bundle=bundle, apis={"gpu": Api()})
    before = Api.calls
    assert check_node_registry(session) == []
    assert Api.calls == before


# --- rotate finish: every agent's node holds the new CA --------------------------------


def _ca_pem(name: str, now: dt.datetime) -> bytes:
    from airtrust.pki import keys
    from airtrust.pki.authority import CASpec, create_root
    from airtrust.pki.bundle import certificate_to_pem

    key = keys.generate_key(keys.KeyType.EC_P256)
    return certificate_to_pem(create_root(CASpec(name), key, now=now))


def test_rotate_finish_names_the_agent_nodes_without_the_new_ca() -> None:
    from types import SimpleNamespace

    from airtrust.plan.node_trust import registry_ca_digest
    from airtrust.plan.rotation import Phase, RotationState
    from airtrust.usecases.rotation.rotate import nodes_without_new_ca

    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    state = RotationState(Phase.STARTED, _ca_pem("Old", now), _ca_pem("New", now), "t0")
    both = registry_ca_digest(state.bundle(now).to_pem())
    new = registry_ca_digest(state.new_bundle(now).to_pem())
    # the old CA alone, as an agent that missed the rotation reports it
    old = registry_ca_digest(
        RotationState(Phase.STARTED, b"", state.old_pem, "t0").new_bundle(now).to_pem()
    )
    nodes = [
        _node("gpu-b", old), _node("gpu-a", old), _node("cpu", both),
        _node("fresh", new), _node("no-agent", None),
    ]  # fmt: skip

    class Api:
        def list_objects(self, api_version: str, plural: str) -> list[dict[str, object]]:
            return nodes

    session: Any = SimpleNamespace(config=_settings(), apis={"gpu": Api()}, now=now)
    (said,) = nodes_without_new_ca(session, state)
    assert said.startswith("context 'gpu': node(s) gpu-a, gpu-b do not hold the new CA")
    assert "no-agent" not in said and "cpu" not in said and "fresh" not in said
    off: Any = SimpleNamespace(config=_settings(configured=False), apis={"gpu": Api()}, now=now)
    assert nodes_without_new_ca(off, state) == []


def test_one_host_with_and_without_a_port_is_two_registries_for_k3s() -> None:
    """Registry's own order compares a missing port with a number: files are ordered by
    name instead, so both can be given."""
    files, _ = node_files(
        Runtime.K3S, [Registry("reg.local", 5000), Registry("reg.local")], pem(1), lambda _: None
    )
    doc = yaml.safe_load(files[-1].content)
    assert sorted(doc["configs"]) == ["reg.local", "reg.local:5000"]
