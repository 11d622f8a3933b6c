"""Researcher authentication with a local CA: what each cluster's kube-apiserver and each
researcher's kubeconfig need (pure).

The apiserver verifies tokens from the control plane's identity provider only when
it trusts that issuer's TLS certificate; with a local CA that means
``--oidc-ca-file`` (the host's roots do not hold it), and kubeconfigs using the
``oidc`` auth provider need ``idp-certificate-authority-data``.
"""

from __future__ import annotations

import base64
import enum
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airtrust.profiles import ClusterOIDC

__all__ = [
    "Finding",
    "OIDCVerdict",
    "apiserver_flags",
    "issuer",
    "judge_apiserver",
    "kubeconfig_user",
]


def issuer(oidc: ClusterOIDC, domain: str) -> str:
    return f"https://{domain}{oidc.issuer_path}"


def apiserver_flags(oidc: ClusterOIDC, domain: str) -> list[str]:
    """The kube-apiserver flags that trust the control plane's identity provider."""
    flags = [f"--oidc-issuer-url={issuer(oidc, domain)}"]
    flags += [f"--{k}={v}" for k, v in sorted(oidc.flags.items())]
    return [*flags, f"--oidc-ca-file={oidc.ca_file}"]


def _flag_values(argv: Sequence[str]) -> dict[str, str]:
    """``--name=value`` and ``--name value`` forms, as kube-apiserver accepts them."""
    out: dict[str, str] = {}
    items = list(argv)
    for index, item in enumerate(items):
        if not item.startswith("--"):
            continue
        name, sep, value = item[2:].partition("=")
        if not sep and index + 1 < len(items) and not items[index + 1].startswith("--"):
            value = items[index + 1]
        out[name] = value
    return out


class Finding(enum.StrEnum):
    OK = "ok"
    NO_ISSUER = "no-issuer"
    OTHER_ISSUER = "other-issuer"
    NO_CA_FILE = "no-ca-file"


@dataclass(frozen=True)
class OIDCVerdict:
    finding: Finding
    evidence: str
    fix: str = ""


def judge_apiserver(pod: Mapping[str, Any], oidc: ClusterOIDC, domain: str) -> OIDCVerdict:
    """Does this kube-apiserver (static pod) trust the control plane's issuer?"""
    containers = (pod.get("spec") or {}).get("containers") or []
    argv: list[str] = []
    for container in containers:
        argv += [*(container.get("command") or []), *(container.get("args") or [])]
    flags = _flag_values(argv)
    want = issuer(oidc, domain)
    fix = "add to kube-apiserver (static pod manifest) and copy the bundle to " + (
        f"{oidc.ca_file} on each control-plane node: {shlex.join(apiserver_flags(oidc, domain))}"
    )
    have = flags.get("oidc-issuer-url")
    name = (pod.get("metadata") or {}).get("name", "kube-apiserver")
    if not have:
        return OIDCVerdict(Finding.NO_ISSUER, f"{name} has no --oidc-issuer-url", fix)
    if have.rstrip("/") != want:
        return OIDCVerdict(Finding.OTHER_ISSUER, f"{name} trusts issuer {have}, not {want}", fix)
    if not flags.get("oidc-ca-file"):
        return OIDCVerdict(
            Finding.NO_CA_FILE,
            f"{name} trusts {want} but has no --oidc-ca-file: with a local CA the "
            "apiserver cannot verify the issuer",
            fix,
        )
    return OIDCVerdict(
        Finding.OK, f"{name}: --oidc-issuer-url={want}, --oidc-ca-file={flags['oidc-ca-file']}"
    )


def kubeconfig_user(oidc: ClusterOIDC, domain: str, bundle_pem: bytes) -> dict[str, Any]:
    """A kubeconfig user entry for researchers (auth-provider oidc) that trusts the CA;
    the tokens come from ``runai login`` / the identity provider, never from airtrust."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "users": [
            {
                "name": "runai-oidc",
                "user": {
                    "auth-provider": {
                        "name": "oidc",
                        "config": {
                            "client-id": oidc.client_id,
                            "idp-issuer-url": issuer(oidc, domain),
                            "idp-certificate-authority-data": base64.b64encode(bundle_pem).decode(),
                        },
                    }
                },
            }
        ],
    }
