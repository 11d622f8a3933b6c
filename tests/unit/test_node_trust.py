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
    K3S_CA_DIR,
    K3S_RECORD,
    PENDING_ANNOTATION,
    Registry,
    Runtime,
    containerd_certs_dir,
    containerd_hosts_toml,
    detect_runtime,
    k3s_not_loaded,
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
    v1 = '[plugins.cri.registry]\n  config_path = "/v1"\n'
    v2 = 'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/x:/y"\n'
    v3 = 'version = 3\n[plugins."io.containerd.cri.v1.images".registry]\n  config_path = "/z"\n'
    assert containerd_certs_dir(v1, "c.toml") == "/v1"
    assert containerd_certs_dir(v2, "c.toml") == "/x"
    assert containerd_certs_dir(v3, "c.toml") == "/z"
    # containerd 2.x reads its default config_path when the file sets none.
    assert containerd_certs_dir("version = 3\n", "c.toml") == "/etc/containerd/certs.d"
    for text, section in (
        ("version = 2\n", '[plugins."io.containerd.grpc.v1.cri".registry]'),
        ("", "[plugins.cri.registry]"),
    ):
        with pytest.raises(NodeTrustError) as missing:
            containerd_certs_dir(text, "/etc/containerd/config.toml")
        assert section in missing.value.hint
        # The lines to paste: two real lines, valid TOML, the section and the key.
        (lines,) = missing.value.__notes__
        assert lines.splitlines()[0] == section
        pasted = tomllib.loads(text + "\n" + lines)
        registry = pasted["plugins"][section[9:-10].strip('"')]["registry"]
        assert containerd_certs_dir(text + "\n" + lines, "c.toml") == "/etc/containerd/certs.d"
        assert registry == {"config_path": "/etc/containerd/certs.d"}


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


ALL = "mirror.local,reg.local:5000"


def _node(name: str, digest: str | None, registries: str = ALL) -> dict[str, object]:
    annotations = {} if digest is None else {
        "airtrust.io/registry-ca-sha256": digest, "airtrust.io/registry-ca-registries": registries
    }  # fmt: skip
    return {"metadata": {"name": name, "annotations": annotations}}


class _Api:
    """The reads agent_nodes makes of a cluster that is not OpenShift."""

    def __init__(self, nodes: list[dict[str, object]]) -> None:
        self.nodes = nodes
        self.calls = 0

    def api_groups(self) -> set[str]:
        return {"apps"}

    def list_objects(self, api_version: str, plural: str) -> list[dict[str, object]]:
        self.calls += 1
        assert (api_version, plural) == ("v1", "nodes")
        return self.nodes


def _session(api: object, now: dt.datetime, **node_trust: object) -> Any:
    from types import SimpleNamespace

    from airtrust.profiles import load_profile

    return SimpleNamespace(
        config=_settings(**node_trust), apis={"gpu": api}, now=now, profile=load_profile()
    )


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
    # A registry added to airtrust.yaml, the agent not rendered again: that one fails.
    short = judge_node("gpu", _node("n4", "a" * 64, "reg.local:5000"), settings, "a" * 64, "")
    assert [c.status for c in short] == [Status.FAIL, Status.OK]
    assert "n4's agent does not write the CA for mirror.local" in short[0].evidence
    assert "airtrust render --node-trust -c airtrust.yaml" in short[0].fix


def test_doctor_reads_only_clusters_with_node_trust() -> None:
    from airtrust.pki.bundle import parse_bundle
    from airtrust.plan.node_trust import registry_ca_digest
    from airtrust.usecases.doctor.node_registry import check_node_registry

    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    bundle = parse_bundle([("ca", _ca_pem("Node Registry Test CA", now))], now=now)
    digest = registry_ca_digest(bundle.to_pem())
    api = _Api([_node("b", digest), _node("a", "0" * 64)])
    session = _session(api, now)
    session.bundle = bundle
    checks = check_node_registry(session)
    assert [(c.target, str(c.status)) for c in checks] == [
        ("Node a registry mirror.local", "fail"),
        ("Node a registry reg.local:5000", "fail"),
        ("Node b registry mirror.local", "ok"),
        ("Node b registry reg.local:5000", "ok"),
    ]
    off = _session(api, now, enabled=False)
    off.bundle = bundle
    before = api.calls
    assert check_node_registry(off) == []
    assert api.calls == before


# --- rotate start and finish: every agent's node holds old + new, then the new CA -------


def _ca_pem(name: str, now: dt.datetime) -> bytes:
    from airtrust.pki import keys
    from airtrust.pki.authority import CASpec, create_root
    from airtrust.pki.bundle import certificate_to_pem

    key = keys.generate_key(keys.KeyType.EC_P256)
    return certificate_to_pem(create_root(CASpec(name), key, now=now))


def _rotation(now: dt.datetime) -> tuple[Any, str, str, str]:
    """A started rotation and the digests of old + new, the new alone, the old alone."""
    from airtrust.plan.node_trust import registry_ca_digest
    from airtrust.plan.rotation import Phase, RotationState

    state = RotationState(Phase.STARTED, _ca_pem("Old", now), _ca_pem("New", now), "t0")
    both = registry_ca_digest(state.bundle(now).to_pem())
    new = registry_ca_digest(state.new_bundle(now).to_pem())
    old = registry_ca_digest(
        RotationState(Phase.STARTED, b"", state.old_pem, "t0").new_bundle(now).to_pem()
    )
    return state, both, new, old


def test_rotate_finish_names_the_agent_nodes_without_the_new_ca() -> None:
    from airtrust.usecases.rotation.rotate import nodes_without_new_ca

    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    state, both, new, old = _rotation(now)
    nodes = [
        _node("gpu-b", old), _node("gpu-a", old), _node("cpu", both),
        _node("fresh", new), _node("no-agent", None), _node("short", new, "reg.local:5000"),
    ]  # fmt: skip
    (said,) = nodes_without_new_ca(_session(_Api(nodes), now), state)
    assert said.startswith(
        "context 'gpu': node(s) gpu-a, gpu-b, no-agent, short do not hold the new CA"
    )
    assert "no-agent: no airtrust.io/registry-ca-sha256 annotation" in said
    assert "short: its agent does not cover mirror.local" in said
    assert "cpu" not in said and "fresh" not in said
    assert nodes_without_new_ca(_session(_Api(nodes), now, configured=False), state) == []


def test_rotate_start_waits_for_old_and_new_on_every_node_then_refuses() -> None:
    """Nodes catch up while rotate start polls: it returns once every node holds old +
    new; a node that never does is named after the deadline, and nothing is re-issued."""
    from airtrust.errors import CheckFailed
    from airtrust.usecases.rotation.rotate import wait_for_nodes

    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    state, both, new, old = _rotation(now)
    api = _Api([_node("a", old), _node("b", None)])
    polls: list[float] = []

    def agents_pass(seconds: float) -> None:  # the agents' next pass, while start waits
        polls.append(seconds)
        api.nodes = [_node("a", both), _node("b", both)]

    wait_for_nodes(_session(api, now), state, timeout=60, sleep=agents_pass)
    assert len(polls) == 1
    api.nodes = [_node("a", both), _node("late", new)]  # the new CA alone is not enough
    with pytest.raises(CheckFailed) as refused:
        wait_for_nodes(_session(api, now), state, timeout=0, sleep=agents_pass)
    line = refused.value.one_line()
    assert "re-issued nothing" in line and "node(s) late do not hold old + new CA" in line
    assert "context 'gpu'" in line and "rerun the same rotate start" in line
    assert refused.value.reference == "rotation-nodes-lag"
    off = _session(_Api([_node("a", None)]), now, configured=False)
    wait_for_nodes(off, state, timeout=0, sleep=agents_pass)  # no node trust: no wait


def test_openshift_registry_cas_are_judged_per_registry_key() -> None:
    from airtrust.plan.node_trust import registry_ca_digest
    from airtrust.plan.openshift_trust import openshift_lacks

    regs = [Registry("reg.local", 5000), Registry("mirror.local")]
    digest = registry_ca_digest(pem(1))
    held = {"reg.local..5000": pem(1).decode(), "mirror.local": pem(2).decode()}
    lacks = openshift_lacks("corp", held, regs, [digest])
    assert list(lacks) == [Registry("mirror.local")]
    assert lacks[Registry("mirror.local")].startswith(
        "ConfigMap openshift-config/corp key mirror.local holds bundle sha256"
    )
    assert "has no key reg.local..5000" in openshift_lacks("corp", {}, regs, [digest])[REG]
    assert "names no additionalTrustedCA" in openshift_lacks(None, {}, regs, [digest])[REG]


def test_only_an_x509_refusal_points_at_node_install() -> None:
    from airtrust.usecases.doctor.model import Status
    from airtrust.usecases.doctor.node_registry import _pull_fix

    settings = _settings(source="secret/ns/ca").node_trust_for("gpu")
    x509 = "failed to pull: tls: failed to verify certificate: x509: certificate signed by "
    fix = _pull_fix(Status.FAIL, x509 + "unknown authority", "n1", settings, "", "k", "p")
    assert "airtrust node install" in fix
    for said in ("401 Unauthorized", "reg.local:5000/x:1: not found"):
        fix = _pull_fix(Status.FAIL, said, "n1", settings, "", "kubectl -n ns", "pod-1")
        assert "not a trust failure" in fix and "node install" not in fix, said
        assert "kubectl -n ns describe pod pod-1" in fix
    assert _pull_fix(Status.OK, "pulled", "n1", settings, "", "k", "p") == ""


def test_one_host_with_and_without_a_port_is_two_registries_for_k3s() -> None:
    """Registry's own order compares a missing port with a number: files are ordered by
    name instead, so both can be given."""
    files, _ = node_files(
        Runtime.K3S, [Registry("reg.local", 5000), Registry("reg.local")], pem(1), lambda _: None
    )
    doc = yaml.safe_load(files[-1].content)
    assert sorted(doc["configs"]) == ["reg.local", "reg.local:5000"]


def test_node_install_dry_run_writes_nothing_and_says_what_it_would(tmp_path: Any) -> None:
    from tests.conftest import run_cli

    root = tmp_path / "root"
    (root / "etc" / "docker").mkdir(parents=True)
    ca = tmp_path / "ca.pem"
    ca.write_bytes(_ca_pem("Dry Run CA", dt.datetime.now(dt.UTC)))
    args = ["node", "install", "--root", root, "--registry", "reg.local:5000", "--ca", ca]
    table = run_cli(*args, "--dry-run")
    assert table.code == 0, table.err
    assert "would write" in table.out and "/etc/docker/certs.d/reg.local:5000/ca.crt" in table.out
    assert "1 write(s) (dry run)" in table.out
    data = json.loads(run_cli(*args, "--dry-run", "-o", "json").out)
    assert data["dry_run"] is True and data["writes"] == 1
    assert [c["action"] for c in data["changes"]] == ["write"]
    assert [p for p in root.rglob("*") if p.is_file()] == []


def test_the_agent_is_ready_only_while_its_last_good_pass_is_recent() -> None:
    import time
    import urllib.error
    import urllib.request

    from airtrust.usecases.node_trust import NodeAgent

    agent = NodeAgent(Any, Any, "n1", Any, [])  # type: ignore[arg-type]
    server = agent.serve_health(0, 60)
    url = f"http://127.0.0.1:{server.server_address[1]}/readyz"

    def status() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as refused:
            return refused.code, refused.read().decode()

    try:
        assert status() == (503, "no sync pass has succeeded yet\n")
        agent.last_good = time.monotonic()
        assert status() == (200, "ok\n")
        agent.last_good = time.monotonic() - 61
        code, said = status()
        assert code == 503 and "more than 60 s" in said
    finally:
        server.shutdown()
        server.server_close()


# --- k3s / RKE2: registries.yaml written in place, trusted only once the service loaded it --
#
# Neither k3s nor RKE2 runs here: their files are judged as they read them, said plainly.
# registries.yaml is YAML (k3s loads it with a YAML decoder: configs."<host>".tls.ca_file);
# what they render on start is TOML (k3s pkg/agent/containerd writes certs.d/<host>/
# hosts.toml from its hosts template, and config.toml; containerd reads both as TOML).

K3S_CA = f"{K3S_CA_DIR}/reg.local_5000-ca.crt"
GENERATED = "var/lib/rancher/k3s/agent/etc/containerd"


def test_k3s_ca_files_live_in_airtrusts_folder_and_registries_yaml_names_them() -> None:
    files, _ = node_files(Runtime.K3S, [REG], pem(1), lambda _: None)
    assert [f.path for f in files] == [K3S_CA, "/etc/rancher/k3s/registries.yaml"]
    ca, config = files
    assert ca.content == pem(1) and not ca.mounted_alone
    assert yaml.safe_load(config.content)["configs"]["reg.local:5000"]["tls"] == {"ca_file": K3S_CA}
    assert config.mounted_alone  # the agent's pod mounts it as a file: written in place there
    assert config.backup == f"{K3S_CA_DIR}/registries.yaml.airtrust-backup"


@pytest.mark.parametrize(
    ("path", "text"),
    [
        # k3s >= 1.29.3 (and the matching 1.26-1.28 patches): a registry with only TLS
        # settings has its default endpoint's keys at the top of hosts.toml
        (
            "certs.d/reg.local:5000/hosts.toml",
            '# File generated by k3s. DO NOT EDIT.\nserver = "https://reg.local:5000/v2"\n'
            f'capabilities = ["pull", "resolve"]\nca = ["{K3S_CA}"]\n',
        ),
        # a mirror endpoint: the ca in its [host."…"] table
        (
            "certs.d/reg.local:5000/hosts.toml",
            '# File generated by k3s. DO NOT EDIT.\nserver = "https://reg.local:5000/v2"\n\n'
            f'[host."https://reg.local:5000/v2"]\n  capabilities = ["pull"]\n  ca = "{K3S_CA}"\n',
        ),
        # the folder as k3s names it on Windows (":port" is "_port_")
        ("certs.d/reg.local_5000_/hosts.toml", f'ca = ["{K3S_CA}"]\n'),
        # k3s before certs.d: the CRI registry configs in config.toml
        (
            "config.toml",
            'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry.configs.'
            f'"reg.local:5000".tls]\n  ca_file = "{K3S_CA}"\n',
        ),
    ],
)
def test_k3s_has_loaded_registries_yaml_when_what_it_rendered_names_the_ca(
    path: str, text: str
) -> None:
    files = {f"/{GENERATED}/{path}": text.encode()}
    assert tomllib.loads(text)  # as containerd reads it
    assert k3s_not_loaded(Runtime.K3S, [REG], files.get) == []
    mirror = Registry("mirror.local")  # not in what k3s rendered: not loaded
    assert k3s_not_loaded(Runtime.K3S, [REG, mirror], files.get) == [mirror]


@pytest.mark.parametrize(
    "files",
    [
        {},  # k3s has not started since: nothing rendered
        {f"/{GENERATED}/certs.d/reg.local:5000/hosts.toml": b'ca = ["/home/u/old-ca.pem"]\n'},
        {f"/{GENERATED}/certs.d/reg.local:5000/hosts.toml": b"ca = [\n"},  # half-written
        # RKE2's own folder is not k3s's
        {"/var/lib/rancher/rke2/agent/etc/containerd/certs.d/reg.local:5000/hosts.toml": (
            f'ca = ["{K3S_CA}"]\n'.encode())},
    ],
)  # fmt: skip
def test_k3s_has_not_loaded_registries_yaml_until_it_renders_our_ca(
    files: dict[str, bytes],
) -> None:
    assert k3s_not_loaded(Runtime.K3S, [REG], files.get) == [REG]


@pytest.mark.parametrize("agent", [True, False], ids=["agent-in-place", "host-rename"])
def test_registries_yaml_in_place_for_the_agent_renamed_on_a_host(
    tmp_path: Any, agent: bool
) -> None:
    """The agent's pod mounts registries.yaml alone: a rename would leave the container the
    old inode, so it is rewritten in place (same inode, same mode); node install on a host
    root keeps the atomic rename. Backup and record go to airtrust's folder, none beside
    registries.yaml (a folder the agent cannot write)."""
    import os

    from airtrust.usecases.node_trust import STATE, install

    root = tmp_path / "root"
    folder = root / "etc" / "rancher" / "k3s"
    folder.mkdir(parents=True)
    registries = folder / "registries.yaml"
    mirrors = {"mirrors": {"docker.io": {"endpoint": ["https://m"]}}}
    registries.write_text(yaml.safe_dump(mirrors))
    registries.chmod(0o600)
    before = registries.stat()
    record = K3S_RECORD if agent else STATE
    report = install(root, [REG], pem(1), runtime=Runtime.K3S, state_file=record, in_place=agent)
    assert report.writes == 2 and report.restart and "systemctl restart k3s" in report.restart
    after = registries.stat()
    assert (after.st_ino == before.st_ino) is agent
    if agent:
        assert after.st_mode & 0o777 == 0o600
    doc = yaml.safe_load(registries.read_text())  # as k3s reads it
    assert doc["mirrors"] == mirrors["mirrors"]
    ca_file = doc["configs"]["reg.local:5000"]["tls"]["ca_file"]
    assert ca_file == K3S_CA and (root / ca_file.lstrip("/")).read_bytes() == pem(1)
    assert sorted(os.listdir(folder)) == ["registries.yaml"]
    backup = root / K3S_CA_DIR.lstrip("/") / "registries.yaml.airtrust-backup"
    assert yaml.safe_load(backup.read_text()) == mirrors
    assert (root / record.lstrip("/")).exists()
    again = install(root, [REG], pem(1), runtime=Runtime.K3S, state_file=record, in_place=agent)
    assert again.writes == 0


class _NodeApi:
    """The reads and patches the node agent makes: its CA secret and its own Node."""

    context = "k3s-test"

    def __init__(self, bundle: bytes, labels: dict[str, str]) -> None:
        import base64

        self.secret = {"data": {"ca.pem": base64.b64encode(bundle).decode()}}
        self.node: dict[str, Any] = {"metadata": {"name": "n1", "labels": labels}}
        self.patches: list[list[dict[str, Any]]] = []

    def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> Any:
        return self.secret if plural == "secrets" else json.loads(json.dumps(self.node))

    def json_patch(
        self, api_version: str, plural: str, namespace: str | None, name: str, ops: Any
    ) -> None:
        self.patches.append(ops)
        for op in ops:
            if op["path"] == "/metadata/annotations":
                self.node["metadata"]["annotations"] = dict(op["value"])
                continue
            key = op["path"].rsplit("/", 1)[1].replace("~1", "/").replace("~0", "~")
            if op["op"] == "remove":
                del self.node["metadata"]["annotations"][key]
            else:
                self.node["metadata"]["annotations"][key] = op["value"]

    def close(self) -> None:
        return


@pytest.mark.parametrize(
    ("runtime", "labels", "command"),
    [
        (Runtime.K3S, {}, "systemctl restart k3s-agent"),
        (
            Runtime.RKE2,
            {"node-role.kubernetes.io/control-plane": "true"},
            "systemctl restart rke2-server",
        ),
    ],
)
def test_the_agent_says_pending_restart_until_the_service_loaded_the_ca(
    tmp_path: Any,
    caplog: pytest.LogCaptureFixture,
    runtime: Runtime,
    labels: dict[str, str],
    command: str,
) -> None:
    """Files written is not CA trusted on k3s/RKE2: the node says which restart it waits
    for (logged once) and no digest, doctor fails it with that restart as the fix and
    rotate finish counts it as lacking; once the service rendered our ca file (its
    restart), the digest is set and the pending annotation cleared."""
    import logging

    from airtrust.plan.node_trust import (
        CA_ANNOTATION,
        K3S_GENERATED,
        node_lacks,
        registry_ca_digest,
    )
    from airtrust.plan.source import Source
    from airtrust.usecases.doctor.model import Status
    from airtrust.usecases.doctor.node_registry import judge_node
    from airtrust.usecases.node_trust import NodeAgent, agent_record

    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    bundle = _ca_pem("K3s Agent Test CA", now)
    api = _NodeApi(bundle, labels)
    root = tmp_path / "host"
    (root / "etc" / "rancher" / str(runtime)).mkdir(parents=True)
    source = Source.parse("secret/airtrust-nodes/registry-ca:ca.pem", "ca.pem")
    agent = NodeAgent(
        api,  # type: ignore[arg-type]
        source,
        "n1",
        root,
        [REG],
        runtime=runtime,
        certs_dir=f"/etc/rancher/{runtime}",
        state_file=agent_record(str(runtime), f"/etc/rancher/{runtime}", None),
        clock=lambda: now,
    )
    with caplog.at_level(logging.WARNING, logger="airtrust.node"):
        first = agent.sync_once()
        agent.sync_once()  # still waiting: said once, not patched again
    assert first.writes == 2
    annotations = api.node["metadata"]["annotations"]
    assert set(annotations) == {PENDING_ANNOTATION}
    assert annotations[PENDING_ANNOTATION].startswith(command + " (")
    assert first.pending_restart == annotations[PENDING_ANNOTATION]
    (said,) = [r.getMessage() for r in caplog.records]
    assert said.endswith(f"run on the node: {command}") and "\n" not in said
    assert len(api.patches) == 1

    digest = registry_ca_digest(bundle_pem(bundle, now))
    settings = _settings(source="secret/airtrust-nodes/registry-ca").node_trust_for("gpu")
    pending = judge_node("gpu", api.node, settings, digest, "--ca ca.pem")
    assert {c.status for c in pending} == {Status.FAIL}
    assert pending[0].fix.startswith(f"on node n1: {command} ")
    assert "has not loaded them" in pending[0].evidence
    lacks = node_lacks(annotations, [digest], [REG])
    assert lacks is not None and lacks.startswith("its runtime has not loaded the bundle yet")

    # The service restarted: it rendered registries.yaml's ca_file into its hosts.toml.
    written = yaml.safe_load(
        (root / "etc" / "rancher" / str(runtime) / "registries.yaml").read_text()
    )
    ca_file = written["configs"]["reg.local:5000"]["tls"]["ca_file"]
    hosts = root / K3S_GENERATED[runtime].lstrip("/") / "certs.d" / "reg.local:5000"
    hosts.mkdir(parents=True)
    (hosts / "hosts.toml").write_text(
        f'# File generated by {runtime}. DO NOT EDIT.\nserver = "https://reg.local:5000/v2"\n'
        f'capabilities = ["pull", "resolve"]\nca = ["{ca_file}"]\n'
    )
    loaded = agent.sync_once()
    assert loaded.writes == 0 and loaded.pending_restart is None
    annotations = api.node["metadata"]["annotations"]
    assert PENDING_ANNOTATION not in annotations
    assert annotations[CA_ANNOTATION] == digest
    assert node_lacks(annotations, [digest], [REG]) is None
    assert (root / K3S_RECORD.lstrip("/")).exists()


def bundle_pem(pem_bytes: bytes, now: dt.datetime) -> bytes:
    """The bundle as the agent distributes it (sorted, deduped)."""
    from airtrust.pki.bundle import parse_bundle

    return parse_bundle([("ca", pem_bytes)], now=now).to_pem()
