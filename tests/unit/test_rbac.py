"""plan/rbac.py: the rights each role reads and each change writes, and the one error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from airtrust.config import Config, parse_config
from airtrust.errors import EXIT_UNREACHABLE, PermissionDenied
from airtrust.plan.model import Action, Change, Desired
from airtrust.plan.rbac import Need, denied, possible_write_needs, read_needs, write_needs
from airtrust.profiles import load_profile

PROFILE = load_profile()


def _config(**extra: Any) -> Config:
    raw = {
        "domain": "runai.example.com",
        "ca": {"bundle": ["b.pem"]},
        "control_plane": {"context": "cp"},
        "clusters": [{"context": "gpu"}],
        **extra,
    }
    return parse_config(yaml.safe_dump(raw), source="t.yaml", base=Path("/base"))


def test_a_need_reads_like_a_kubectl_auth_question() -> None:
    assert str(Need("get", "namespaces")) == "get namespaces (cluster-wide)"
    assert str(Need("patch", "secrets", "runai")) == "patch secrets in runai"
    assert str(Need("get", "runaiconfigs", "runai", "run.ai")) == "get runaiconfigs.run.ai in runai"
    assert str(Need("list", "things", None, "x.io")) == "list things.x.io (cluster-wide)"


def test_read_needs_of_the_control_plane_include_the_rotation_record() -> None:
    needs = read_needs(_config(), PROFILE, "cp", ["runai-backend"])
    assert needs == [
        Need("get", "namespaces"),
        Need("list", "namespaces"),
        Need("get", "secrets", "runai-backend"),
        Need("get", "configmaps", "runai-backend"),
    ]


def test_a_cluster_reads_its_runaiconfig_only_with_patched_images() -> None:
    plain = read_needs(_config(), PROFILE, "gpu", ["runai", "team-a"])
    assert plain == [
        Need("get", "namespaces"),
        Need("list", "namespaces"),
        Need("get", "secrets", "runai"),
        Need("get", "secrets", "team-a"),
    ]
    patched = _config(images={"references": {"gcr.io/run-ai-prod/goofys": "reg/goofys:1"}})
    assert read_needs(patched, PROFILE, "gpu", ["runai"])[-1] == Need(
        "get", "runaiconfigs", "runai", "run.ai"
    )
    # The control plane never reads the cluster configuration.
    assert Need("get", "runaiconfigs", "runai", "run.ai") not in read_needs(
        patched, PROFILE, "cp", []
    )
    # A profile without a cluster configuration asks for none.
    bare = PROFILE.model_copy(update={"cluster_config": None})
    assert len(read_needs(patched, bare, "gpu", ["runai"])) == 3


def test_one_context_with_both_roles_reads_both() -> None:
    both = _config(
        control_plane={"context": "one"},
        clusters=[{"context": "one"}],
        images={"references": {"a": "b"}},
    )
    needs = read_needs(both, PROFILE, "one", [])
    assert needs[2:] == [
        Need("get", "runaiconfigs", "runai", "run.ai"),
        Need("get", "configmaps", "runai-backend"),
    ]


def test_possible_write_needs() -> None:
    assert possible_write_needs([]) == [Need("create", "namespaces")]
    assert possible_write_needs(["a", "b"]) == [
        Need("create", "namespaces"),
        Need("create", "secrets", "a"),
        Need("patch", "secrets", "a"),
        Need("create", "secrets", "b"),
        Need("patch", "secrets", "b"),
    ]


def _secret(ns: str = "runai") -> Desired:
    return Desired("gpu", "Secret", ns, "runai-ca-cert", "CA bundle", manifest={"kind": "Secret"})


def _change(desired: Desired, action: Action, *, foreign: bool = False) -> Change:
    return Change(desired, action, overwrites_foreign_data=foreign)


NAMESPACE = Desired("gpu", "Namespace", None, "runai", "namespace", manifest={"kind": "Namespace"})
RUNAICONFIG = Desired("gpu", "RunaiConfig", "runai", "runai", "sidecar images")


@pytest.mark.parametrize(
    ("change", "backup", "expected"),
    [
        (_change(NAMESPACE, Action.CREATE), "secret", [Need("create", "namespaces")]),
        (_change(NAMESPACE, Action.UPDATE), "secret", []),
        (_change(NAMESPACE, Action.UNCHANGED), "secret", []),
        (
            _change(_secret(), Action.CREATE),
            "secret",
            [Need("create", "secrets", "runai"), Need("patch", "secrets", "runai")],
        ),
        (_change(_secret(), Action.UPDATE), "secret", [Need("patch", "secrets", "runai")]),
        # Overwriting data airtrust did not write: the backup Secret is created first.
        (
            _change(_secret(), Action.UPDATE, foreign=True),
            "secret",
            [Need("patch", "secrets", "runai"), Need("create", "secrets", "runai")],
        ),
        (
            _change(_secret(), Action.UPDATE, foreign=True),
            "file",
            [Need("patch", "secrets", "runai")],
        ),
        (
            _change(_secret(), Action.UPDATE, foreign=True),
            "none",
            [Need("patch", "secrets", "runai")],
        ),
        (_change(_secret(), Action.UNCHANGED, foreign=True), "secret", []),
        (
            _change(RUNAICONFIG, Action.UPDATE),
            "secret",
            [Need("patch", "runaiconfigs", "runai", "run.ai")],
        ),
        (_change(RUNAICONFIG, Action.CREATE), "secret", []),
        (_change(RUNAICONFIG, Action.UNCHANGED), "secret", []),
    ],
)
def test_write_needs_per_change(change: Change, backup: str, expected: list[Need]) -> None:
    assert write_needs(change, backup, PROFILE) == expected


def test_a_cluster_config_patch_needs_nothing_without_a_profile_entry() -> None:
    bare = PROFILE.model_copy(update={"cluster_config": None})
    assert write_needs(_change(RUNAICONFIG, Action.UPDATE), "secret", bare) == []


def test_denied_is_none_when_nothing_is_missing() -> None:
    assert denied({}) is None
    assert denied({"cp": [], "gpu": ()}) is None


def test_denied_lists_every_context_in_one_error() -> None:
    error = denied(
        {
            "cp": [Need("get", "secrets", "runai-backend")],
            "empty": [],
            "gpu": [Need("create", "namespaces"), Need("patch", "runaiconfigs", "runai", "run.ai")],
        }
    )
    assert isinstance(error, PermissionDenied)
    assert error.message == (
        "missing permissions, nothing was changed: "
        "context 'cp': get secrets in runai-backend | "
        "context 'gpu': create namespaces (cluster-wide); patch runaiconfigs.run.ai in runai"
    )
    assert error.hint == (
        "grant them to the user of each context (a Role/ClusterRole and binding), then rerun"
    )
    assert error.reference == "forbidden"
    assert error.exit_code == EXIT_UNREACHABLE


contexts = st.dictionaries(
    st.from_regex(r"[a-z]{1,6}", fullmatch=True),
    st.lists(
        st.builds(
            Need,
            st.sampled_from(["get", "list", "create", "patch"]),
            st.sampled_from(["secrets", "namespaces", "configmaps"]),
            st.none() | st.sampled_from(["runai", "team-a"]),
        ),
        max_size=3,
    ),
    max_size=4,
)


@given(contexts)
def test_denied_names_each_context_with_a_missing_right_exactly_once(
    missing: dict[str, list[Need]],
) -> None:
    error = denied(missing)
    lacking = [ctx for ctx, needs in missing.items() if needs]
    if not lacking:
        assert error is None
        return
    assert error is not None
    for ctx in missing:
        assert error.message.count(f"context '{ctx}': ") == (1 if ctx in lacking else 0)
    for needs in missing.values():
        for need in needs:
            assert str(need) in error.message
