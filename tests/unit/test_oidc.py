"""plan/oidc.py: what each cluster apiserver and researcher kubeconfig need to trust the
control plane's identity provider, judged from the apiserver's static pod."""

from __future__ import annotations

import base64
import shlex
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airtrust.plan.oidc import (
    Finding,
    apiserver_flags,
    issuer,
    judge_apiserver,
    kubeconfig_user,
)
from airtrust.profiles import ClusterOIDC, load_profile

PROFILE = load_profile()
assert PROFILE.cluster_oidc is not None
OIDC: ClusterOIDC = PROFILE.cluster_oidc
DOMAIN = "runai.example.com"
ISSUER = "https://runai.example.com/auth/realms/runai"
FLAGS = [
    f"--oidc-issuer-url={ISSUER}",
    "--oidc-client-id=runai",
    "--oidc-username-prefix=-",
    "--oidc-ca-file=/etc/kubernetes/pki/runai-ca.pem",
]


def _pod(*containers: dict[str, Any], name: str | None = "kube-apiserver-node1") -> dict[str, Any]:
    pod: dict[str, Any] = {"spec": {"containers": list(containers)}}
    if name is not None:
        pod["metadata"] = {"name": name}
    return pod


def test_issuer_and_flags_from_the_profile() -> None:
    assert issuer(OIDC, DOMAIN) == ISSUER
    assert apiserver_flags(OIDC, DOMAIN) == FLAGS


def test_a_pod_with_the_suggested_flags_is_ok() -> None:
    pod = _pod({"command": ["kube-apiserver", "--secure-port=6443", *FLAGS]})
    verdict = judge_apiserver(pod, OIDC, DOMAIN)
    assert verdict.finding is Finding.OK
    assert verdict.evidence == (
        f"kube-apiserver-node1: --oidc-issuer-url={ISSUER}, "
        "--oidc-ca-file=/etc/kubernetes/pki/runai-ca.pem"
    )
    assert verdict.fix == ""


def test_space_separated_values_args_and_a_trailing_slash_are_accepted() -> None:
    pod = _pod(
        {"name": "sidecar", "command": ["pause"]},
        {
            "command": ["kube-apiserver"],
            "args": [
                "--oidc-issuer-url",
                ISSUER + "/",
                "--oidc-ca-file",
                "/etc/ca.pem",
            ],
        },
    )
    verdict = judge_apiserver(pod, OIDC, DOMAIN)
    assert verdict.finding is Finding.OK
    assert verdict.evidence.endswith("--oidc-ca-file=/etc/ca.pem")


def _fix() -> str:
    return (
        "add to kube-apiserver (static pod manifest) and copy the bundle to "
        "/etc/kubernetes/pki/runai-ca.pem on each control-plane node: " + shlex.join(FLAGS)
    )


def test_no_issuer() -> None:
    verdict = judge_apiserver(_pod({"command": ["kube-apiserver", "--v=2"]}), OIDC, DOMAIN)
    assert verdict.finding is Finding.NO_ISSUER
    assert verdict.evidence == "kube-apiserver-node1 has no --oidc-issuer-url"
    assert verdict.fix == _fix()


def test_another_issuer() -> None:
    other = "https://idp.example.org/realms/x"
    pod = _pod({"command": ["kube-apiserver", f"--oidc-issuer-url={other}", *FLAGS[3:]]})
    verdict = judge_apiserver(pod, OIDC, "runai.example.com")
    assert verdict.finding is Finding.OTHER_ISSUER
    assert verdict.evidence == f"kube-apiserver-node1 trusts issuer {other}, not {ISSUER}"
    assert verdict.fix == _fix()


@pytest.mark.parametrize(
    "argv",
    [
        ["kube-apiserver", f"--oidc-issuer-url={ISSUER}"],
        ["kube-apiserver", f"--oidc-issuer-url={ISSUER}", "--oidc-ca-file="],
        # A flag followed by another flag has no value.
        ["kube-apiserver", f"--oidc-issuer-url={ISSUER}", "--oidc-ca-file", "--v=2"],
    ],
)
def test_the_issuer_without_a_ca_file(argv: list[str]) -> None:
    verdict = judge_apiserver(_pod({"command": argv}), OIDC, DOMAIN)
    assert verdict.finding is Finding.NO_CA_FILE
    assert verdict.evidence == (
        f"kube-apiserver-node1 trusts {ISSUER} but has no --oidc-ca-file: with a local CA "
        "the apiserver cannot verify the issuer"
    )
    assert verdict.fix == _fix()


@pytest.mark.parametrize(
    "pod",
    [{}, {"spec": None}, {"spec": {"containers": None}}, {"spec": {"containers": [{}]}}],
)
def test_an_empty_or_odd_pod_has_no_issuer_and_a_default_name(pod: dict[str, Any]) -> None:
    verdict = judge_apiserver(pod, OIDC, DOMAIN)
    assert verdict.finding is Finding.NO_ISSUER
    assert verdict.evidence == "kube-apiserver has no --oidc-issuer-url"


def test_the_issuer_follows_the_domain() -> None:
    pod = _pod({"command": ["kube-apiserver", *FLAGS]})
    moved = judge_apiserver(pod, OIDC, "runai.other.example")
    assert moved.finding is Finding.OTHER_ISSUER
    assert "not https://runai.other.example/auth/realms/runai" in moved.evidence


def test_kubeconfig_user_trusts_the_bundle() -> None:
    bundle = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    config = kubeconfig_user(OIDC, DOMAIN, bundle)
    assert config == {
        "apiVersion": "v1",
        "kind": "Config",
        "users": [
            {
                "name": "runai-oidc",
                "user": {
                    "auth-provider": {
                        "name": "oidc",
                        "config": {
                            "client-id": "runai",
                            "idp-issuer-url": ISSUER,
                            "idp-certificate-authority-data": base64.b64encode(bundle).decode(),
                        },
                    }
                },
            }
        ],
    }
    # No token or secret is ever written by airtrust.
    provider = config["users"][0]["user"]["auth-provider"]["config"]
    assert set(provider) == {"client-id", "idp-issuer-url", "idp-certificate-authority-data"}


@given(st.binary(max_size=200))
def test_the_ca_data_round_trips(bundle: bytes) -> None:
    config = kubeconfig_user(OIDC, DOMAIN, bundle)
    data = config["users"][0]["user"]["auth-provider"]["config"]["idp-certificate-authority-data"]
    assert base64.b64decode(data, validate=True) == bundle


@given(st.permutations(FLAGS), st.booleans())
def test_flag_order_and_form_do_not_matter(flags: list[str], split: bool) -> None:
    argv = ["kube-apiserver"]
    for flag in flags:
        argv += flag.split("=", 1) if split else [flag]
    assert judge_apiserver(_pod({"command": argv}), OIDC, DOMAIN).finding is Finding.OK
